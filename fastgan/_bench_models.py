"""Critics used by the benchmark command and the benchmark suite (DCGAN, SNGAN-ResNet, MLP)."""
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
