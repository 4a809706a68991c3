"""BP step time against the GEMM floor and against PyTorch (see :mod:`refimpl.bench`).

    python benchmarks/step_time.py [--repeats N] [--json PATH]      # same as `refimpl bench`
"""

from refimpl.bench import main

if __name__ == "__main__":
    raise SystemExit(main())
