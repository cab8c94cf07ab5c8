"""report.md assembled: the sections in their order, written with its figures into one folder (`write_report`),
and the report of one run folder (`report_run_dir`, which the default job calls).

report.md has a section for each kind of data the runs hold, and only those: the runs (overview.py), the paper's
Tables 1-3 and aMUSEd's figures with the measured rows beside them (published.py), quality metrics, FID against
CLIP over a guidance sweep, PartiPrompts breakdowns and win rates, and the shapes world's exact judge against its
CLIP judge (quality.py), a sweep job's metrics against its setting and against generation time (sweeps.py),
latency by stage, throughput, speed-ups and compute (latency.py), editing success rates with example grids
(editing.py), sample grids and decoding-trajectory strips (images.py). Every table is
followed by a "Protocol:" note with what moves its numbers (protocols.py), and rows that come from random weights,
test-size models or scaled profiles say "not a paper number". Figures come from bench/report/figures.py. The
report holds no time of its own: the same runs give the same report.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from bench.core.errors import BenchError
from bench.core.results import atomic_write_text
from bench.report.editing import editing_section
from bench.report.images import grids_section, trajectory_section
from bench.report.latency import latency_section
from bench.report.markdown import FigureFolder
from bench.report.overview import failed_section, runs_section
from bench.report.published import REFERENCE_CSV, published_section, read_reference
from bench.report.quality import guidance_section, judge_win_rate_section, parti_section, quality_section
from bench.report.sweeps import sweep_section
from bench.report.runs import Run, label_runs, load_runs, nothing_usable

REPORT_FILE = "report.md"


def report_command(sources: Sequence[str], out_dir: str | Path) -> str:
    """The `python -m bench.report` command line that makes a report of `sources` into `out_dir`, as report.md
    quotes it."""
    return "python -m bench.report " + " ".join(sources) + f" --out {out_dir}"


def write_report(runs: Sequence[Run], out_dir: str | Path, *, command: str | None = None,
                 reference_csv: str | Path = REFERENCE_CSV) -> Path:
    """Write out_dir/report.md and out_dir/figures/*.png from `runs` (load_runs); returns report.md's path.

    `command` is the command line recorded in the report (default: the equivalent `python -m bench.report`).
    Raises BenchError when no run is usable.
    """
    runs = list(runs)
    ok = [r for r in runs if r.ok]
    if not ok:
        raise BenchError(nothing_usable(runs))
    if any(not r.label for r in runs):
        label_runs(runs)
    out_dir = Path(out_dir)
    figures = FigureFolder(out_dir)
    reference, no_reference = None, None
    if Path(reference_csv).is_file():
        reference = read_reference(reference_csv)  # a malformed row is an error: it names its line
    else:
        # The measurements still make a report; only the published columns are missing, and it says so.
        no_reference = (f"Published figures not shown: {reference_csv} was not found (it ships with the repository "
                        "as reports/paper_reference.csv; run from a full checkout).")
    failed = [r for r in runs if not r.ok]
    sections = [
        runs_section(runs, command or report_command(list(dict.fromkeys(r.source for r in runs)), out_dir)),
        failed_section(runs),
        no_reference,
        published_section(ok, reference),
        quality_section(ok),
        editing_section(ok, figures),
        guidance_section(ok, figures, failed),
        sweep_section(ok, figures),
        parti_section(ok, figures, reference),
        judge_win_rate_section(ok),
        latency_section(ok, figures),
        grids_section(ok, figures),
        trajectory_section(ok, figures),
        "---\n\nFigures: bench/report/figures.py (Okabe-Ito palette, 150 dpi). Published figures: "
        "reports/paper_reference.csv (each row cites its source). Full protocols: each run's results.json.",
    ]
    figures.remove_stale()
    return atomic_write_text(out_dir / REPORT_FILE, "\n\n".join(s for s in sections if s) + "\n")


def report_run_dir(run_dir: str | Path, out_dir: str | Path | None = None) -> Path:
    """The report of one run folder (or sweep), written into `out_dir` (default: the folder itself)."""
    return write_report(load_runs([run_dir]), out_dir if out_dir is not None else run_dir)
