"""`python -m bench.download NAME --root DIR`: the prepare step's command line (bench/data/download.py), under
the name the README and error messages give."""

import sys

from bench.data.download import main

if __name__ == "__main__":
    sys.exit(main())
