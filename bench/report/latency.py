"""The report's latency sections: time by stage and throughput against batch size, the table of end-to-end rows,
the speed-ups of compared pairs and the compute (FLOPs, floors) at full size.

Every ratio between models is read from results.json's `latency_ratios`, computed once by the latency job
(bench.latency.measure.latency_ratio): a time ratio only where the timed profiles keep the full-size cost ratio,
always beside the full-size FLOP ratio and the compute floors.
"""

from __future__ import annotations

import textwrap
from collections.abc import Mapping
from typing import Any

from bench.report import figures as figs
from bench.report.markdown import (
    NOT_PAPER,
    FigureFolder,
    caveat_flag,
    markdown_table,
    number,
    param_count,
    protocol_note,
)
from bench.report.protocols import latency_caveats, latency_facets
from bench.report.runs import Run

STAGE_ORDER = ("text_encoder", "base", "superres", "decoder", "denoiser", "autoregressive", "pipeline")
OTHER_STAGE = "other (outside the timed stages)"


def _achieved(row: Mapping[str, Any]) -> str:
    """TFLOP/s a latency row reached: FLOPs per image x batch / median time."""
    flops, median, batch = row.get("flops"), row.get("median_s"), row.get("batch_size")
    if not flops or not median or not batch:
        return "—"
    return number(float(flops) * int(batch) / float(median) / 1e12, 3)


def latency_section(runs: list[Run], figures: FigureFolder) -> str | None:
    """"Latency": time by stage and throughput against batch size (figures), every end-to-end row with its
    protocol, then the speed-ups of compared pairs and the compute at full size; None without latency rows."""
    entries = [(run, row) for run in runs for row in run.latency]
    if not entries:
        return None
    many = len({id(run) for run, _ in entries}) > 1
    text = ["## Latency"]

    # Stage breakdown at each (run, model, resolution)'s smallest batch size.
    bars: dict[tuple[int, str, Any], dict[str, Any]] = {}
    for run, row in entries:
        if row.get("status", "ok") != "ok" or row.get("median_s") is None:
            continue
        key = (id(run), str(row.get("model")), row.get("resolution"))
        smallest = bars.get(key, {}).get("batch")
        if smallest is None or row.get("batch_size") < smallest:
            bars[key] = {"batch": row.get("batch_size"), "stages": {}, "total": None, "run": run}
        if row.get("batch_size") == bars[key]["batch"]:
            if row.get("stage") == "total":
                bars[key]["total"] = row["median_s"]
            else:
                bars[key]["stages"][str(row.get("stage"))] = row["median_s"]
    bars = {k: v for k, v in bars.items() if v["total"] is not None or v["stages"]}
    if bars:
        stages = [s for s in STAGE_ORDER if any(s in b["stages"] for b in bars.values())]
        stages += sorted({s for b in bars.values() for s in b["stages"]} - set(stages))
        stacks: dict[str, list[float | None]] = {s: [b["stages"].get(s) for b in bars.values()] for s in stages}
        rest = []
        for b in bars.values():
            gap = (b["total"] or 0.0) - sum(b["stages"].values())
            # Time outside every timed stage (scheduling, Python, copies), shown where it is not negligible.
            rest.append(gap if b["total"] and gap > 0.02 * b["total"] else None)
        if any(r is not None for r in rest):
            stacks[OTHER_STAGE] = rest
        batches = {b["batch"] for b in bars.values()}
        labels = [model + (f"\nbatch {b['batch']}" if len(batches) > 1 else "")
                  + (f"\n{textwrap.shorten(b['run'].label, 24)}" if many else "") for (_, model, _), b in bars.items()]
        panels = [f"{res} px" for (_, _, res) in bars]
        caveats = sorted({c for run, row in entries for c in latency_caveats(run, row)})
        devices = sorted({str(row.get("device")) for _, row in entries})
        note = f"Measured on {', '.join(devices)}." + (f" {NOT_PAPER.capitalize()}: {', '.join(caveats)}." if caveats else "")
        batch_text = f"batch of {batches.pop()}" if len(batches) == 1 else "batch"
        path = figs.stacked_bars(labels, stacks, figures.path("latency-stages"), panels=panels,
                                 ylabel=f"time per {batch_text} (s, median)",
                                 title="End-to-end latency by stage", legend_title="stage",
                                 totals=[b["total"] for b in bars.values()], note=note,
                                 # One colour per stage in every latency figure; untimed time in neutral grey.
                                 colours=dict(zip(STAGE_ORDER, figs.OKABE_ITO)) | {OTHER_STAGE: "#999999"})
        text.append(figures.link(path, "latency by stage"))

    # Throughput against batch size, where a model ran at two batch sizes or more.
    curves: dict[str, tuple[list[float], list[float]]] = {}
    for run, row in entries:
        if row.get("stage") == "total" and row.get("status", "ok") == "ok" and row.get("images_per_s"):
            name = f"{row.get('model')} {row.get('resolution')} px" + (f" ({run.label})" if many else "")
            xs, ys = curves.setdefault(name, ([], []))
            xs.append(row["batch_size"])
            ys.append(row["images_per_s"])
    for name, (xs, ys) in list(curves.items()):
        if len(set(xs)) < 2:
            del curves[name]
        else:
            order = sorted(range(len(xs)), key=xs.__getitem__)
            curves[name] = ([xs[i] for i in order], [ys[i] for i in order])
    if curves:
        xs_all = [x for xs, _ in curves.values() for x in xs]
        ys_all = [y for _, ys in curves.values() for y in ys]
        path = figs.line_chart(curves, figures.path("throughput-batch"), xlabel="batch size (images)",
                               ylabel="throughput (images / s)", title="Throughput against batch size",
                               logx=max(xs_all) / min(xs_all) >= 4, logy=max(ys_all) / min(ys_all) > 30)
        text.append(figures.link(path, "throughput against batch size"))

    header = (["Run"] if many else []) + ["Model", "Resolution", "Batch", "Steps", "Profile", "Weights", "Median (s)",
                                          "p90 (s)", "Images/s", "Params", "Peak memory (GiB)", "TFLOP/s achieved",
                                          "% of compute floor",
                                          "Status", "Note"]
    rows, notes, seen = [], [], set()
    order = {id(run): i for i, run in enumerate(runs)}
    totals = sorted(((run, row) for run, row in entries if row.get("stage") == "total"),
                    key=lambda e: (order[id(e[0])], str(e[1].get("model")), e[1].get("resolution") or 0,
                                   e[1].get("batch_size") or 0))
    for run, row in totals:
        mem = row.get("peak_mem_bytes")
        rows.append(([run.label] if many else []) + [
            row.get("model"), row.get("resolution"), row.get("batch_size"), row.get("steps"), row.get("profile"),
            row.get("weights"), number(row.get("median_s")), number(row.get("p90_s")), number(row.get("images_per_s")),
            param_count(row.get("params")), number(mem / 2**30, 3) if isinstance(mem, (int, float)) else "—",
            _achieved(row), number(row.get("percent_of_floor"), 3), row.get("status", "ok"), caveat_flag(latency_caveats(run, row))])
        key = (id(run), row.get("model"), row.get("resolution"))
        if key not in seen:
            seen.add(key)
            notes.append((f"{row.get('model')} {row.get('resolution')} px" + (f" ({run.label})" if many else ""),
                          latency_facets(run, row)))
    intro = ("End-to-end (stage total) rows; every stage is in each run's latency.csv. TFLOP/s achieved: the timed "
             "profile's FLOPs of the batch over the median time, which says how well a model's kernels use this "
             "device (models with equal FLOPs can differ several-fold). % of compute floor: FLOPs over the device's "
             "dense peak, blank where the peak is not known (CPUs, fp32).")
    text.append(markdown_table(header, rows) + "\n\n" + protocol_note(notes, intro=intro))

    ratios = _ratios(runs)
    if ratios:
        text.append("### Speed-ups\n\n" + ratios)
    compute = _compute_section(runs)
    if compute:
        text.append(compute)
    return "\n\n".join(text)


# The paper's speed claims, by the slower model of a measured pair.
CLAIMS = {"sd-v1-4": "about 3x (Muse-3B vs SD v1.4)", "imagen-proxy": "more than 10x (Muse-3B vs Imagen)",
          "parti-3b-proxy": "more than 10x (Muse-3B vs Parti-3B)"}
VERDICTS = {"faster": "the second is faster", "tie": "tie (range covers 1)", "slower": "the second is slower"}
OLD_RATIO = ("recorded by a muse-bench that did not check whether the timed profiles keep the full-size cost ratio; "
             "rerun the latency job")


def _floors(floor: Mapping[str, Any] | None) -> str:
    """'A100 61 / 250 ms, H100 ...' from a ratio's floor_s, or a dash."""
    if not floor:
        return "—"
    cells = []
    for gpu, pair in floor.items():
        if pair.get("slower") is None or pair.get("faster") is None:
            continue
        cells.append(f"{gpu} {number(1e3 * pair['slower'], 3)} / {number(1e3 * pair['faster'], 3)} ms")
    return ", ".join(cells) or "—"


def _ratios(runs: list[Run]) -> str | None:
    """The compared pairs of each run as results.json records them (bench.latency.measure.latency_ratio): a time ratio
    only where the timed profiles keep the full-size cost ratio, always beside the FLOP ratio and floors."""
    rows, notes = [], []
    many = len([r for r in runs if r.latency]) > 1
    for run in runs:
        for pair in (run.results or {}).get("latency_ratios") or []:
            shown = pair.get("shown", False)
            why = pair.get("why") or OLD_RATIO
            if shown and pair.get("ratio") is not None:
                low, high = pair.get("ratio_range") or (None, None)
                ratio = f"{pair['ratio']:.3g}x" + (f" ({low:.3g}–{high:.3g})" if low is not None else "")
                verdict = VERDICTS.get(pair.get("verdict"), "—")
            else:
                ratio, verdict = "not shown (see protocol)", "—"
            flops = pair.get("flop_ratio_full")
            label = (f"{pair['slower']} / {pair['faster']} {pair['resolution']} px batch {pair['batch_size']}"
                     + (" compiled" if pair.get("compiled") else "") + (f" ({run.label})" if many else ""))
            rows.append(([run.label] if many else []) + [
                pair["slower"], pair["faster"], pair["resolution"], pair["batch_size"],
                "yes" if pair.get("compiled") else "no", ratio, verdict,
                f"{flops:.3g}" if flops else "—", _floors(pair.get("floor_s")), CLAIMS.get(pair["slower"], "—")])
            facets = {"time ratio": str(pair.get("protocol"))}
            if not shown:
                facets["not shown because"] = why
            notes.append((label, facets))
    if not rows:
        return None
    header = (["Run"] if many else []) + ["First", "Second", "Resolution", "Batch", "Compiled",
                                          "Time ratio (median, range over rounds)", "Verdict",
                                          "Full-size FLOP ratio", "Compute floor, first / second", "Paper's claim"]
    intro = ("First and second: a pair of latency.compare, listed as the claim puts it (the first is claimed to be "
             "the slower; results.json keeps them as `slower` and `faster`), whatever this machine measures. "
             "Time ratio: the first model's end-to-end time over the second's, per round (both timed back to back), "
             "median and range over rounds; above 1 the second model is faster, a range covering 1 is a tie. Given "
             "only where the timed profiles keep the full-size cost ratio (both full size, or one architecture "
             "timed twice): a scaled or tiny profile changes the models' costs by different factors. Full-size "
             "FLOP ratio: FLOPs per image, first / second (below 1 the first does less work). Compute floor: FLOPs "
             "of the batch at the dense bf16 peak (datasheet) of each GPU, a time no implementation can beat.")
    return markdown_table(header, rows) + "\n\n" + protocol_note(notes, intro=intro)


def _compute_section(runs: list[Run]) -> str | None:
    """Full-size FLOPs and compute floors of every model and resolution the runs' latency jobs covered (results.json
    `compute`), and the FLOP ratio of each compared pair at each resolution (`latency_ratios`)."""
    rows, pair_rows = [], []
    for run in runs:
        compute = (run.results or {}).get("compute") or []
        for c in compute:
            flops, floor = c.get("flops_full"), c.get("floor_s") or {}
            rows.append([c["model"], c["resolution"], c.get("steps"),
                         number(flops["total"] / 1e12, 4) if flops else "—",
                         *(number(1e3 * floor[g], 3) if g in floor else "—" for g in ("A100", "H100", "H200")),
                         c.get("note") or ""])
        # Each compared pair's FLOP ratio as the latency job recorded it beside the time ratio, once per resolution
        # (a pair timed at several batch sizes, or eager and compiled, has one entry each).
        flop_ratios: dict[tuple[str, str], dict[int, float]] = {}
        for pair in (run.results or {}).get("latency_ratios") or []:
            if pair.get("flop_ratio_full"):
                flop_ratios.setdefault((pair["slower"], pair["faster"]), {}).setdefault(pair["resolution"],
                                                                                        pair["flop_ratio_full"])
        pair_rows += [[slower, faster, resolution, f"{ratio:.3g}"]
                      for (slower, faster), by_resolution in flop_ratios.items()
                      for resolution, ratio in sorted(by_resolution.items())]
    if not rows:
        return None
    text = ["### Compute at full size",
            markdown_table(["Model", "Resolution", "Steps", "TFLOP per image", "Floor A100 (ms)", "Floor H100 (ms)",
                            "Floor H200 (ms)", "Note"], rows)]
    if pair_rows:
        text.append(markdown_table(["First", "Second", "Resolution", "FLOP ratio (first / second)"], pair_rows))
    text.append("**Protocol:** FLOPs per image of the published shapes, counted exactly on the meta device by "
                "torch's FlopCounterMode (matrix products, convolutions, attention; element-wise work not counted), "
                "at each model's own steps and guidance (a guided step is one forward over 2 images). Floor: one "
                "image at the dense bf16 tensor-core peak of the datasheet (A100 312, H100 989, H200 989 TFLOP/s); "
                "measured large matrix products reach about 80% of it, and batch-1 decoding far less. These are not "
                "times: they say which model does more work, whatever the machine.")
    return "\n\n".join(text)
