"""The report's opening: its title and the command that made it, the "Not paper numbers" banner, the table of
runs, and the runs that failed or are incomplete (not in any table or figure)."""

from __future__ import annotations

from bench.report.markdown import NOT_PAPER, markdown_table
from bench.report.protocols import eval_caveats, latency_caveats
from bench.report.runs import Run


def runs_section(runs: list[Run], command: str) -> str:
    """The report's title, the command that made it, the "Not paper numbers" banner (every caveat of every run,
    once) and the table of usable runs."""
    ok = [r for r in runs if r.ok]
    rows = []
    for run in ok:
        prov = run.provenance
        commit = str(prov.get("git_commit") or "?")[:10] + (" (dirty)" if prov.get("git_dirty") else "")
        overrides = ", ".join(o for o in run.overrides if not o.lstrip("+~").startswith("hydra.")) or "—"
        rows.append([run.label, run.results.get("experiment"), overrides, run.results.get("created"), commit,
                     run.device(), len(run.evaluations), len(run.latency)])
    failed = len(runs) - len(ok)
    head = (f"# muse-bench report\n\n{len(runs)} run(s): {len(ok)} usable"
            + (f", {failed} failed or incomplete (listed below)" if failed else "") + f". Made with `{command}`.")
    table = markdown_table(["Run", "Experiment", "Overrides", "Created", "Git commit", "Device", "Evaluations",
                            "Latency rows"], rows)
    warn = sorted({c for run in ok for ev in run.evaluations for c in eval_caveats(ev)}
                  | {c for run in ok for row in run.latency for c in latency_caveats(run, row)})
    banner = ""
    if warn:
        banner = (f"\n\n> **Not paper numbers.** Some results below come from {', '.join(warn)}. They show the "
                  f"protocol working; they are not comparable with the published figures. Their rows say "
                  f"*{NOT_PAPER}*.")
    return head + banner + "\n\n" + table


def failed_section(runs: list[Run]) -> str | None:
    """"Failed or incomplete runs": each unusable run with the reason; None when every run is usable."""
    failed = [r for r in runs if not r.ok]
    if not failed:
        return None
    rows = [[r.label, str(r.path), r.error] for r in failed]
    return ("## Failed or incomplete runs\n\nNot in any table or figure below.\n\n"
            + markdown_table(["Run", "Folder", "Reason"], rows))
