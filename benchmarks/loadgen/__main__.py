"""``python benchmarks/loadgen SCENARIO --port PORT ...`` (or ``python -m loadgen`` from benchmarks/)."""

import sys
from pathlib import Path

if not __package__:  # run as a directory: its parent (benchmarks/) is where the package is found
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

from loadgen.cli import main  # noqa: E402

sys.exit(main())
