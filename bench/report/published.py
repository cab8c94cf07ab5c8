"""The published figures and the tables that put the runs' measurements beside them.

Every published figure is a row of reports/paper_reference.csv (columns and table keys: reports/README.md), the
one copy: `read_reference` reads it for the report, `published_rows` one table of it (the latency job's Table 3,
bench/jobs/latency.py). The report's "Measured against published" section holds the Muse paper's Tables 1 and 2
(FID and CLIP), Table 3 (inference time) and aMUSEd's published latency and quality, each measured row with the
caveats its fields record.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from bench.core.errors import BenchError
from bench.core.paths import REPO_ROOT
from bench.report.markdown import (
    METRIC_NAMES,
    caveat_flag,
    markdown_table,
    metric_cell,
    number,
    protocol_note,
)
from bench.report.protocols import (
    eval_caveats,
    eval_facets,
    guidance_scale,
    latency_caveats,
    latency_facets,
    protocol_matches,
)
from bench.report.runs import Run

# reports/ sits at the repository root beside bench/, as conf/ does: muse-bench runs from its checkout.
REFERENCE_CSV = REPO_ROOT / "reports" / "paper_reference.csv"
QUALITY_DATASETS = {"muse-table1": ("cc3m",), "muse-table2": ("coco30k", "coco5k")}


def read_reference(path: str | Path = REFERENCE_CSV) -> list[dict[str, str]]:
    """The published figures of reports/paper_reference.csv, one dict per row (see reports/README.md)."""
    path = Path(path)
    if not path.is_file():
        raise BenchError(f"The published figures are missing: {path} does not exist. It ships with the repository "
                         "(reports/paper_reference.csv): restore it with git checkout, or run from a full checkout.")
    with path.open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    for line, row in enumerate(rows, start=2):
        try:
            float(row["value"])
        except (KeyError, TypeError, ValueError):
            raise BenchError(f"{path}, line {line}: value {row.get('value')!r} is not a number; every row needs a "
                             "numeric value column (see reports/README.md).") from None
    return rows


def published_rows(table: str, path: str | Path = REFERENCE_CSV) -> list[dict[str, str]]:
    """The rows of one published table of reports/paper_reference.csv (its `table` key, e.g. "muse-table3"), in
    file order."""
    return [row for row in read_reference(path) if row["table"] == table]


def _ref_value(row: Mapping[str, str]) -> str:
    """A published figure as printed: its value, or its range low–high."""
    high = row.get("value_high")
    return f"{row['value']}–{high}" if high else row["value"]


def _quality_table(table: str, title: str, reference: list[dict[str, str]], runs: list[Run]) -> str | None:
    """Table 1 or 2 (`table`): the published FID and CLIP rows, then the runs' rows on the same datasets."""
    datasets = QUALITY_DATASETS[table]
    measured = [(run, ev) for run in runs for ev in run.evaluations
                if ev.get("dataset") in datasets and ({"fid", "clip_score"} & set(ev.get("metrics") or {}))]
    if not measured:
        return None
    shown = {table}
    if table == "muse-table2":
        # Context for COCO: the third-party SD v1.4 FID-30K, and MLPerf's accepted window when 5K was measured.
        shown.add("sd-third-party")
        if any(ev.get("dataset") == "coco5k" for _, ev in measured):
            shown.add("mlperf-t2i")
    published: dict[str, dict[str, Any]] = {}
    for row in reference:
        if row["table"] in shown:
            entry = published.setdefault(row["model"], {"params": row["params"], "source": row["source"],
                                                        "notes": row["notes"], "res": row["resolution"]})
            entry[row["metric"]] = _ref_value(row) + (" (x100)" if row["metric"] == "clip_score_x100" else "")
    rows = [[name, e["params"] or "—", e.get("fid", "—"), e.get("clip_score", e.get("clip_score_x100", "—")), "—",
             e["res"] or "—", e["source"], e["notes"]] for name, e in published.items()]
    notes = []
    shown_metrics = ("fid", "clip_score", "clip_score_x100")
    for run, ev in measured:
        metrics = ev.get("metrics") or {}
        n = ev.get("n_samples") or {}
        label = f"**measured**: {ev.get('model')} ({run.label})"
        rows.append([label, "—", metric_cell(metrics.get("fid")), metric_cell(metrics.get("clip_score")),
                     n.get("effective"), (ev.get("protocol") or {}).get("resolution"), f"this report ({ev.get('dataset')})",
                     caveat_flag(eval_caveats(ev, shown_metrics)) or protocol_matches(ev, shown_metrics)])
        notes.append((f"{ev.get('model')} ({run.label})", eval_facets(run, ev, {"fid", "clip_score"})))
    header = ["Model", "Params", "FID", "CLIP (cosine)", "n", "Resolution", "Source", "Note"]
    intro = ("Published rows as printed in their sources (reports/paper_reference.csv); the paper's CLIP backbone "
             "is not stated. A measured row's Note says whether its protocol matches the published one, as its "
             "metrics' comparable_to_published records (`eval=paper` selects the published protocols). Measured rows:")
    return f"### {title}\n\n{markdown_table(header, rows)}\n\n{protocol_note(notes, intro=intro)}"


def _totals(rows: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The end-to-end rows that were timed (stage total, status ok)."""
    return [r for r in rows if r.get("stage") == "total" and r.get("status", "ok") == "ok" and r.get("median_s") is not None]


def _table3(reference: list[dict[str, str]], runs: list[Run]) -> str | None:
    """Table 3: each published time beside the batch-1 end-to-end time of our model at that resolution (the
    run's paper_table3 entries where it has them), measured rows of no published row after them; then aMUSEd's
    published latency."""
    published = [r for r in reference if r["table"] == "muse-table3"]
    measured: dict[tuple[str, int], list[tuple[Run, Mapping[str, Any]]]] = {}
    for run in runs:
        if run.results and run.results.get("paper_table3"):
            for entry in run.results["paper_table3"]:
                if entry.get("measured_s") is not None:
                    row = next((r for r in _totals(run.latency) if r.get("model") == entry.get("ours")
                                and r.get("resolution") == entry.get("resolution") and r.get("batch_size") == 1), None)
                    row = row or {"model": entry.get("ours"), "resolution": entry.get("resolution"), "batch_size": 1,
                                  "median_s": entry["measured_s"], "device": entry.get("measured_on"),
                                  "profile": entry.get("measured_profile"), "weights": entry.get("measured_weights"),
                                  "protocol": entry.get("measured_protocol")}
                    measured.setdefault((str(entry.get("ours")), int(entry["resolution"])), []).append((run, row))
        else:
            for row in _totals(run.latency):
                if row.get("batch_size") == 1:
                    measured.setdefault((str(row.get("model")), int(row.get("resolution"))), []).append((run, row))
    if not measured:
        return None
    rows, notes, matched = [], [], set()
    for ref in published:
        key = (ref["ours"], int(ref["resolution"]))
        hits = measured.get(key, []) if ref["ours"] else []
        matched.add(key)
        if not hits:
            rows.append([ref["model"], ref["resolution"], ref["value"], ref["hardware"], ref["ours"] or "—",
                         "—", "—", "—", ref["notes"]])
        for run, row in hits:
            rows.append([ref["model"], ref["resolution"], ref["value"], ref["hardware"], ref["ours"],
                         number(row.get("median_s")), row.get("device"), run.label,
                         caveat_flag(latency_caveats(run, row)) or ref["notes"]])
    for key, hits in measured.items():
        if key in matched:
            continue
        for run, row in hits:
            rows.append(["— (not in the paper)", key[1], "—", "—", key[0], number(row.get("median_s")), row.get("device"),
                         run.label, caveat_flag(latency_caveats(run, row))])
    for hits in measured.values():
        for run, row in hits:
            notes.append((f"{row.get('model')} {row.get('resolution')} px ({run.label})", latency_facets(run, row)))
    header = ["Paper model", "Resolution", "Published (s)", "Published on", "Ours", "Measured (s)", "Measured on", "Run",
              "Note"]
    intro = ("Published: per-batch inference time, batch size not stated (Muse paper, Table 3). Measured: median "
             "end-to-end time of one batch of 1 image.")
    parts = [f"### Table 3: inference time\n\n{markdown_table(header, rows)}\n\n{protocol_note(notes, intro=intro)}"]
    amused = _amused_latency(reference, runs)
    if amused:
        parts.append(amused)
    return "\n\n".join(parts)


def _amused_latency(reference: list[dict[str, str]], runs: list[Run]) -> str | None:
    """aMUSEd's published latencies beside the runs' rows of the same model, resolution and batch size."""
    rows, notes = [], []
    for ref in (r for r in reference if r["table"] == "amused-latency"):
        for run in runs:
            for row in _totals(run.latency):
                if (row.get("model") == ref["ours"] and row.get("resolution") == int(ref["resolution"])
                        and row.get("batch_size") == int(ref["batch_size"])):
                    rows.append([ref["model"], ref["resolution"], ref["batch_size"], _ref_value(ref), ref["hardware"],
                                 ref["ours"], number(1000 * row["median_s"]), row.get("device"), run.label,
                                 caveat_flag(latency_caveats(run, row))])
                    notes.append((f"{row.get('model')} {row.get('resolution')} px batch {row.get('batch_size')} "
                                  f"({run.label})", latency_facets(run, row)))
    if not rows:
        return None
    header = ["Published model", "Resolution", "Batch", "Published (ms)", "Published on", "Ours", "Measured (ms)",
              "Measured on", "Run", "Note"]
    intro = "Published: aMUSEd paper (arXiv 2401.01808), median, 12 steps, random weights. Measured: median end-to-end."
    return f"### aMUSEd's published latency\n\n{markdown_table(header, rows)}\n\n{protocol_note(notes, intro=intro)}"


def _amused_quality(reference: list[dict[str, str]], runs: list[Run]) -> str | None:
    """aMUSEd's published sweep optima (amused-quality rows) beside measured rows of the same model, resolution
    and metric, and only at the guidance scale g the published figure was taken at; the others are named with why
    they are not beside it."""
    published = [r for r in reference if r["table"] == "amused-quality"]
    rows, notes, apart = [], [], []
    for ref in published:
        wanted = float(ref["guidance"]) if ref.get("guidance") else None
        for run in runs:
            for ev in run.evaluations:
                metric = (ev.get("metrics") or {}).get(ref["metric"]) or {}
                protocol = ev.get("protocol") or {}
                if (ev.get("model") != ref["ours"] or metric.get("value") is None
                        or str(protocol.get("resolution")) != ref["resolution"]):
                    continue
                g = guidance_scale(ev)
                name = f"{ev.get('model')} {METRIC_NAMES.get(ref['metric'], ref['metric'])} ({run.label})"
                if wanted is not None and (g is None or not math.isclose(float(g), wanted)):
                    apart.append(f"{name} was measured at guidance g={number(g)}, the published {ref['value']} at "
                                 f"g={number(wanted)} (model.guidance_scale={number(wanted)} measures it there)")
                    continue
                rows.append([ref["model"], METRIC_NAMES.get(ref["metric"], ref["metric"]), _ref_value(ref),
                             number(wanted) if wanted is not None else "—", metric_cell(metric), number(g),
                             (ev.get("n_samples") or {}).get("effective"), run.label, caveat_flag(eval_caveats(ev))])
                notes.append((name, eval_facets(run, ev, {ref["metric"]})))
    if not rows and not apart:
        return None
    parts = ["### aMUSEd's published quality\n\nThe best FID and CLIP of aMUSEd-256's guidance sweep (arXiv "
             "2401.01808; 10k images, dataset not stated), each taken at its own guidance scale g (aMUSEd's CFG scale, "
             "the one this suite uses); a measured row stands beside one only at the same g."]
    if rows:
        header = ["Published model", "Metric", "Published", "At g", "Measured", "Measured at g", "n", "Run", "Note"]
        parts.append(f"{markdown_table(header, rows)}\n\n{protocol_note(notes)}")
    if apart:
        parts.append("Not beside a published figure, because the guidance differs: " + "; ".join(apart) + ".")
    return "\n\n".join(parts)


def published_section(runs: list[Run], reference: list[dict[str, str]] | None) -> str | None:
    """"Measured against published": the paper's Tables 1-3 and aMUSEd's figures with the runs' rows beside them;
    None when no run measured anything a published table holds (or the reference is missing)."""
    if reference is None:
        return None
    parts = [_quality_table("muse-table1", "Table 1: CC3M (FID and CLIP)", reference, runs),
             _quality_table("muse-table2", "Table 2: zero-shot MS-COCO 256x256 (FID-30K and CLIP)", reference, runs),
             _table3(reference, runs)]
    amused = _amused_quality(reference, runs)
    if not any(parts) and not amused:
        return None
    missing = [name for name, part in zip(("Table 1 (muse-bench experiment=cc3m)", "Table 2 (experiment=coco30k)",
                                           "Table 3 (experiment=paper_table3)"), parts) if part is None]
    lead = ("## Measured against published\n\nThe Muse paper's tables (Chang et al. 2023, arXiv 2301.00704) with the "
            "rows measured by these runs beside them; every published figure and its source is in "
            "reports/paper_reference.csv.")
    if missing:
        lead += " No run here measured " + "; ".join(missing) + "."
    return "\n\n".join([lead, *(p for p in parts + [amused] if p)])
