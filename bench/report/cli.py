"""The report's command line: `python -m bench.report RUN_DIR [RUN_DIR ...] --out DIR`.

A RUN_DIR is a folder `muse-bench` wrote (it holds results.json), a multirun sweep folder (multirun/<date>/<time>,
whose numbered subfolders are runs), a results.json file, or a glob of any of these. Exit status 0 on success, 2
on a BenchError (nothing usable, several folders without --out), printed as one paragraph.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence

from bench.core.errors import BenchError
from bench.report.document import report_command, write_report
from bench.report.runs import load_runs


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m bench.report RUN_DIR [RUN_DIR ...] --out DIR`: write DIR/report.md; 0 on success, 2 on a
    BenchError (printed as one paragraph)."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.report",
        description="Build report.md and figures/*.png from muse-bench run folders, sweep folders or globs.")
    parser.add_argument("runs", nargs="+", metavar="RUN_DIR",
                        help="a run folder (with results.json), a multirun sweep folder, a results.json or a glob")
    parser.add_argument("--out", metavar="DIR",
                        help="where to write report.md and figures/ (default: the RUN_DIR, when only one is given)")
    args = parser.parse_args(argv)
    try:
        if args.out is None:
            if len(args.runs) != 1 or re.search(r"[*?\[]", args.runs[0]):
                raise BenchError("Several run folders given: say where the report goes with --out DIR.")
            args.out = args.runs[0]
        runs = load_runs(args.runs)
        path = write_report(runs, args.out, command=report_command(args.runs, args.out))
    except BenchError as err:
        message = " ".join(line.strip() for line in str(err).splitlines() if line.strip())
        print(f"bench.report: error: {message}", file=sys.stderr)
        return 2
    failed = sum(not r.ok for r in runs)
    print(f"report: {path}" + (f" ({failed} failed or incomplete run(s) listed in it)" if failed else ""))
    return 0
