"""`python -m bench.report RUN_DIR [RUN_DIR ...] --out DIR` (bench/report/cli.py)."""

import sys

from bench.report.cli import main

sys.exit(main())
