"""Command line: ``python -m fastgan info``, ``python -m fastgan bench``, ``python -m fastgan demo``,
``python -m fastgan gpucheck --out DIR`` (one-command validation on a GPU machine)."""
import argparse
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


def main(argv=None):
    from ._inductor_cache import separate_inductor_cache

    separate_inductor_cache()  # torch 2.13 mixes kernels of different ATEN_CPU_CAPABILITY values
    parser = argparse.ArgumentParser(prog="python -m fastgan", description=__doc__)
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("info", help="print versions and available backends").set_defaults(func=info)
    from . import bench

    bench.add_parser(sub)
    from . import demo

    demo.add_parser(sub)
    from . import gpucheck

    gpucheck.add_parser(sub)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
