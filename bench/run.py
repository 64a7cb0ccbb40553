"""Benchmark the service against the tutorial Flask app and a bare WSGI app (see bench/README.md).

python -m bench.run [--duration 10] [--warmup 2] [--runs 3] [--workers N] [--quick] [--out DIR] [--store DIR]
"""

import sys
from pathlib import Path

if __package__ in (None, ""):
    # Run as a file (python bench/run.py): make the repository importable, as -m does.
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.runner import main

if __name__ == "__main__":
    sys.exit(main())
