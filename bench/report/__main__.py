"""`python -m bench.report RUN_DIR [RUN_DIR ...] --out DIR` (bench/report/build.py)."""

import sys

from bench.report.build import main

sys.exit(main())
