"""The report's sweep section: a sweep job's model setting (bench/jobs/sweep.py: guidance_scale, steps,
choice_temperature or schedule) against the metrics of each value, and against the generation run's own time per
image (generation_time), so that a step count is seen with what it costs."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from bench.report import figures as figs
from bench.report.markdown import (
    FigureFolder,
    caveat_flag,
    markdown_table,
    metric_cell,
    number,
    protocol_note,
)
from bench.report.protocols import eval_caveats, eval_facets
from bench.report.runs import Run

# The metrics drawn against the swept value and against time: (results key, column name, axis label).
SWEPT_METRICS = (
    ("judge_accuracy", "judge accuracy", "exact judge accuracy (mean of skills), higher is better"),
    ("fid", "FID", "FID, lower is better"),
    ("clip_score", "CLIP (cosine)", "CLIP score (cosine), higher is better"),
)


def _numeric(values: Sequence[Any]) -> bool:
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)


def _seconds(ev: Mapping[str, Any]) -> float | None:
    return (ev.get("generation_time") or {}).get("seconds_per_image")


def _time_text(ev: Mapping[str, Any]) -> str:
    timing = ev.get("generation_time") or {}
    if timing.get("seconds_per_image") is None:
        return "—"
    return f"{number(timing['seconds_per_image'], 3)} ({timing.get('images')} images)"


def _time_protocol(entries: Sequence[Mapping[str, Any]]) -> str:
    """The time protocol of a sweep's values, said once: device, threads, batch size, processes and the clock."""
    timings = [ev.get("generation_time") for ev in entries if (ev.get("generation_time") or {}).get("images")]
    if not timings:
        return "no generation time recorded (every value resumed from samples on disk, or an older run)"
    keys = ("device", "threads", "batch_size", "processes")
    settings = {k: sorted({str(t.get(k)) for t in timings}) for k in keys}
    text = ", ".join(f"{k} {'/'.join(v)}" for k, v in settings.items())
    return f"{text}; {timings[0].get('clock')}"


def sweep_section(runs: list[Run], figures: FigureFolder) -> str | None:
    """"Sweeps": for each sweep job's model and setting, the metrics of every value in a table, judge accuracy,
    FID and CLIP score drawn against the value (bars for named values such as schedules) and, where the
    generation run timed itself, against seconds per image; None when no run holds a sweep."""
    groups: dict[tuple[str, str, str, str, Any], list[tuple[Run, Mapping[str, Any]]]] = {}
    for run in runs:
        for ev in run.evaluations:
            sweep = ev.get("sweep")
            if isinstance(sweep, Mapping) and sweep.get("key"):
                key = (run.label, str(sweep.get("model")), str(sweep["key"]), str(ev.get("dataset")),
                       (ev.get("protocol") or {}).get("resolution"))
                groups.setdefault(key, []).append((run, ev))
    if not groups:
        return None
    text = ["## Sweeps\n\nOne model's decoding setting at several values, everything else the same (weights, "
            "prompts, seed). Seconds per image are the generation run's own wall-clock on the device it ran on "
            "(see Protocol), not the latency job's measurement."]
    many_runs = len({k[0] for k in groups}) > 1
    by_key: dict[str, list[tuple[str, list[tuple[Run, Mapping[str, Any]]]]]] = {}
    for (label, model, key, dataset, res), entries in groups.items():
        name = model + (f" ({label})" if many_runs else "") + (f", {dataset} {res} px" if len(groups) > 1 else "")
        by_key.setdefault(key, []).append((name, entries))
    for key, series in by_key.items():
        text.append(f"### model.{key}")
        values_all = [e["sweep"]["value"] for _, entries in series for _, e in entries]
        numeric = _numeric(values_all)
        rows, notes, links = [], [], []
        for metric, column, label in SWEPT_METRICS:
            against_value: dict[str, list[dict[str, Any]]] = {}
            against_time: dict[str, list[dict[str, Any]]] = {}
            bars: dict[str, tuple[list, list]] = {}
            for name, entries in series:
                ordered = sorted(entries, key=lambda e: float(e[1]["sweep"]["value"])) if numeric else entries
                points = [(ev["sweep"]["value"], (ev.get("metrics") or {}).get(metric) or {}, ev) for _, ev in ordered]
                points = [(v, m, ev) for v, m, ev in points if m.get("value") is not None]
                if not points:
                    continue
                against_value[name] = [{"x": v, "y": m["value"], "yerr": m.get("stderr"), "label": f"{v}"}
                                       for v, m, _ in points]
                timed = [(v, m, _seconds(ev)) for v, m, ev in points if _seconds(ev) is not None]
                if len(timed) >= 2:
                    against_time[name] = [{"x": s, "y": m["value"], "yerr": m.get("stderr"), "label": f"{key}={v}"}
                                          for v, m, s in sorted(timed, key=lambda p: p[2])]
                by_value = {str(v): m for v, m, _ in points}
                bars[name] = ([by_value[str(v)]["value"] if str(v) in by_value else None for v in values_all],
                              [by_value[str(v)].get("stderr") if str(v) in by_value else None for v in values_all])
            if not against_value:
                continue
            title = f"{column} against model.{key}"
            if numeric:
                path = figs.tradeoff_curve(against_value, figures.path(f"sweep-{key}-{metric}"),
                                           xlabel=f"model.{key}", ylabel=label, title=title,
                                           note="Error bars: one standard error.")
            else:
                groups_order = list(dict.fromkeys(str(v) for v in values_all))
                bars = {n: ([b[0][values_all.index(v)] if v in values_all else None for v in groups_order],
                            [b[1][values_all.index(v)] if v in values_all else None for v in groups_order])
                        for n, b in bars.items()}
                path = figs.grouped_bars(groups_order, bars, figures.path(f"sweep-{key}-{metric}"),
                                         xlabel=label, title=title, note="Error bars: one standard error.")
            links.append(figures.link(path, title))
            if against_time:
                title = f"{column} against generation time over model.{key}"
                path = figs.tradeoff_curve(against_time, figures.path(f"sweep-{key}-{metric}-time"),
                                           xlabel="seconds per image (generation run's wall-clock)", ylabel=label,
                                           title=title, note="Error bars: one standard error. Time: see Protocol.")
                links.append(figures.link(path, title))
        for name, entries in series:
            for run, ev in entries:
                metrics = ev.get("metrics") or {}
                rows.append([name, ev["sweep"]["value"]] + [metric_cell(metrics.get(m)) for m, _, _ in SWEPT_METRICS] +
                            [_time_text(ev), (ev.get("n_samples") or {}).get("effective"),
                             caveat_flag(eval_caveats(ev))])
                notes.append((f"{name} {key}={ev['sweep']['value']}",
                              eval_facets(run, ev) | {"generation time": _time_protocol([ev])}))
        header = ["Model", f"model.{key}"] + [column for _, column, _ in SWEPT_METRICS] + \
                 ["Seconds per image", "n", "Note"]
        if links:
            text.append("\n\n".join(links))
        text.append(markdown_table(header, rows) + "\n\n" + protocol_note(notes))
    return "\n\n".join(text)
