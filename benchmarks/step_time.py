"""Every rule's step time against BP, its own floor and a torch eager BP step (see :mod:`refimpl.bench`).

    python benchmarks/step_time.py [--rule all|NAME ...] [--dtype ...] [--repeats N] [--json PATH]
    # same as `refimpl bench`
"""

from refimpl.bench import main

if __name__ == "__main__":
    raise SystemExit(main())
