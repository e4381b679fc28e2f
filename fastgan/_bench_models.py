"""Critics used by the benchmark command and the benchmark suite (DCGAN, SNGAN-ResNet, MLP)."""
import torch
import torch.nn.functional as F
from torch import nn


def dcgan_critic(ch=64, img=32):
    """DCGAN critic on 3 x img x img: three stride-2 4x4 convolutions and a linear head."""
    s = img // 8
    return nn.Sequential(
        nn.Conv2d(3, ch, 4, 2, 1), nn.LeakyReLU(0.2),
        nn.Conv2d(ch, 2 * ch, 4, 2, 1), nn.LeakyReLU(0.2),
        nn.Conv2d(2 * ch, 4 * ch, 4, 2, 1), nn.LeakyReLU(0.2),
        nn.Flatten(), nn.Linear(4 * ch * s * s, 1),
    )


def mlp_critic(d_in, width=512, depth=3):
    layers, d = [], d_in
    for _ in range(depth):
        layers += [nn.Linear(d, width), nn.LeakyReLU(0.2)]
        d = width
    return nn.Sequential(*layers, nn.Linear(d, 1))


class ResBlock(nn.Module):
    def __init__(self, c_in, c_out, down, first=False):
        super().__init__()
        self.c1 = nn.Conv2d(c_in, c_out, 3, 1, 1)
        self.c2 = nn.Conv2d(c_out, c_out, 3, 1, 1)
        self.sc = nn.Conv2d(c_in, c_out, 1) if (down or c_in != c_out) else None
        self.down, self.first = down, first

    def forward(self, x):
        h = x if self.first else F.relu(x)
        h = self.c2(F.relu(self.c1(h)))
        s = x
        if self.first:
            s = self.sc(F.avg_pool2d(s, 2))
        elif self.sc is not None:
            s = self.sc(s)
        if self.down:
            h = F.avg_pool2d(h, 2)
            if not self.first:
                s = F.avg_pool2d(s, 2)
        return h + s


class SNGANResNetCritic(nn.Module):
    """SNGAN-ResNet-style critic on 3x32x32: optimized block + 3 residual blocks + linear (11 layers)."""

    def __init__(self, ch=64):
        super().__init__()
        self.blocks = nn.Sequential(ResBlock(3, ch, True, first=True), ResBlock(ch, ch, True),
                                    ResBlock(ch, ch, False), ResBlock(ch, ch, False))
        self.fc = nn.Linear(ch, 1)

    def forward(self, x):
        return self.fc(F.relu(self.blocks(x)).sum(dim=(2, 3)))


def gelu_mlp_critic(d_in, width=512, depth=3):
    """Smooth MLP critic (GELU): where finite-difference penalties are accurate."""
    layers, d = [], d_in
    for _ in range(depth):
        layers += [nn.Linear(d, width), nn.GELU()]
        d = width
    return nn.Sequential(*layers, nn.Linear(d, 1))


class ViTBlock(nn.Module):
    def __init__(self, width, heads, dropout=0.0):
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.ln1, self.ln2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.qkv, self.proj = nn.Linear(width, 3 * width), nn.Linear(width, width)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width))

    def forward(self, x):
        b, n, c = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        # the fused kernel (flash on CPU) has no double backward: exact penalties need the math kernel
        a = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0)
        x = x + self.proj(a.transpose(1, 2).reshape(b, n, c))
        return x + self.mlp(self.ln2(x))


class ViTCritic(nn.Module):
    """Small ViT critic on 3 x img x img: patch embedding, ``depth`` pre-LN blocks with
    F.scaled_dot_product_attention, mean pooling, linear head. img=64, patch=4: 256 tokens."""

    def __init__(self, img=64, patch=4, width=128, depth=2, heads=4, dropout=0.0):
        super().__init__()
        self.embed = nn.Conv2d(3, width, patch, patch)
        self.pos = nn.Parameter(0.02 * torch.randn(1, (img // patch) ** 2, width))
        self.blocks = nn.Sequential(*[ViTBlock(width, heads, dropout) for _ in range(depth)])
        self.ln, self.head = nn.LayerNorm(width), nn.Linear(width, 1)

    def forward(self, x):
        h = self.embed(x).flatten(2).transpose(1, 2) + self.pos
        return self.head(self.ln(self.blocks(h)).mean(dim=1))
