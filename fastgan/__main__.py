"""Command line: ``python -m fastgan info`` and ``python -m fastgan demo``."""
import argparse
import os
import platform
import sys


def info(_args):
    import torch

    import fastgan

    print(f"fastgan {fastgan.__version__}")
    print(f"python {platform.python_version()}  torch {torch.__version__}  "
          f"cuda {torch.version.cuda or 'none'}  threads {torch.get_num_threads()}")
    try:
        import triton

        print(f"triton {triton.__version__}")
    except ImportError:
        print("triton not installed")
    print(f"device: {torch.cuda.get_device_name() if torch.cuda.is_available() else platform.processor() or 'cpu'}")
    print("backends:")
    for name, st in fastgan.backends().items():
        print(f"  {name:<10} {'yes' if st['available'] else 'no ':<4} {st['reason']}")
    return 0


def _positive_int(text):
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {v}")
    return v


def demo(args):
    import torch

    from . import demo as d

    if os.path.exists(args.out) and not os.path.isdir(args.out):
        print(f"python -m fastgan demo: error: --out {args.out!r} exists and is not a directory", file=sys.stderr)
        return 2
    methods = list(dict.fromkeys(args.method or d.METHODS))
    torch.set_num_threads(args.threads)
    print(f"fastgan demo: {args.dataset}, methods {', '.join(methods)}, {args.steps} generator steps, "
          f"batch {args.batch_size}, seed {args.seed} -> {args.out}")
    _, table = d.run(args.dataset, methods, steps=args.steps, batch_size=args.batch_size, seed=args.seed,
                     out=args.out, progress=not args.quiet)
    print()
    print(table)
    print(f"figures, JSON and summary.md in {args.out}")
    return 0


def _add_demo(sub):
    from .demo import DATASETS, DEFAULT_STEPS, METHODS

    p = sub.add_parser("demo", help="train small GANs on CPU with every regularizer; figures, metrics, table",
                       description="Train small GANs on CPU with each method and compare them: per-run PNGs "
                                   "(samples over the data and the critic's value surface, loss curves), "
                                   "JSON metrics, overview.png and a summary table (summary.md).")
    p.add_argument("--dataset", choices=DATASETS, default="8gaussians")
    p.add_argument("--method", nargs="+", choices=list(METHODS), metavar="NAME",
                   help=f"one or more of: {', '.join(METHODS)} (default: all)")
    p.add_argument("--steps", type=_positive_int, default=None,
                   help="generator steps per run (default: " +
                        ", ".join(f"{k} {v}" for k, v in DEFAULT_STEPS.items()) + ")")
    p.add_argument("--batch-size", type=_positive_int, default=256)
    p.add_argument("--out", help="output folder (default: demo-results/DATASET)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=_positive_int, default=1,
                   help="torch CPU threads (default 1: the networks are tiny, more threads only add overhead)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=demo)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m fastgan", description=__doc__)
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("info", help="print versions and available backends").set_defaults(func=info)
    _add_demo(sub)
    args = parser.parse_args(argv)
    if args.cmd == "demo" and args.steps is None:
        from .demo import DEFAULT_STEPS

        args.steps = DEFAULT_STEPS[args.dataset]
    if args.cmd == "demo" and args.out is None:
        args.out = os.path.join("demo-results", args.dataset)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
