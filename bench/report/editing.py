"""The report's editing section (runs of the edit job, bench/jobs/edit.py): success rates of inpainting, outpainting
and mask-free colour and shape edits per model, what each rate is made of, what changed where the edit had to leave
the image alone, and example grids (original | mask | what was asked | result) from the images the job kept."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bench.report import figures as figs
from bench.report.markdown import NOT_PAPER, FigureFolder, markdown_table, metric_cell, number, protocol_note
from bench.report.protocols import guidance_scale, sampler_text
from bench.report.runs import Run

KIND_NAMES = {"inpaint": "inpainting", "outpaint": "outpainting", "edit_color": "colour edit (mask-free)",
              "edit_shape": "shape edit (mask-free)"}
NO_MASK = "no mask (white: where the edit belongs)"
MIDDLE = {"inpaint": "mask (white: regenerated)", "outpaint": "mask (white: regenerated)", "edit_color": NO_MASK,
          "edit_shape": NO_MASK}


def editing_entries(runs: list[Run]) -> list[tuple[Run, Mapping[str, Any]]]:
    """The evaluations of edit-job runs (those carrying an `editing` record)."""
    return [(run, ev) for run in runs for ev in run.evaluations if ev.get("editing")]


def _facets(run: Run, ev: Mapping[str, Any]) -> dict[str, str]:
    protocol = ev.get("protocol") or {}
    edit_cfg = (run.config.get("edit") or {})
    prov = run.provenance
    commit = str(prov.get("git_commit") or "?")[:10] + (" (dirty)" if prov.get("git_dirty") else "")
    return {
        "trials": f"the first {protocol.get('trials')} trials of each kind over {protocol.get('split')} scenes "
                  f"(bench/shapes/editing.py), each trial's seed {protocol.get('trial_seeds')} (seed "
                  f"{protocol.get('seed')})",
        "resolution": f"{protocol.get('resolution')} px",
        "guidance": f"g={number(guidance_scale(ev))}",
        "sampler": sampler_text(protocol),
        "mask-free editing": f"{edit_cfg.get('iterations')} iterations resampling {edit_cfg.get('resample_fraction')} "
                             f"of the base tokens, top-k {edit_cfg.get('top_k')}",
        "weights": f"random ({NOT_PAPER})" if ev.get("weights") == "random" else str(ev.get("weights")),
        "device": f"{run.device()}, torch {prov.get('torch', '?')}, git {commit}",
    }


def _grids(run: Run, ev: Mapping[str, Any], figures: FigureFolder, several: bool) -> list[str]:
    parts = []
    for kind, examples in (ev["editing"].get("examples") or {}).items():
        images, captions = [], []
        for example in examples:
            files = example.get("files") or {}
            paths = [run.path / str(files.get(p, "")) for p in ("original", "mask", "asked", "result")]
            if not all(p.is_file() for p in paths):
                continue
            images += paths
            captions += ["original", MIDDLE.get(kind, "mask"), f"asked: {example.get('prompt')}",
                         "result: " + ("success" if example.get("success") else "failure")]
        if not images:
            continue
        title = f"{ev.get('model')}, {KIND_NAMES.get(kind, kind)}"
        note = ("Random weights: the images show the editing pipeline working, not what the model can draw."
                if ev.get("weights") == "random" else None)
        path = figs.image_grid(images, captions, figures.path(f"edit-{ev.get('model')}-{kind}-{run.label}"),
                               ncols=4, title=title, note=note)
        parts.append(f"#### {title}" + (f" ({run.label})" if several else "") + f"\n\n{figures.link(path, title)}")
    return parts


def editing_section(runs: list[Run], figures: FigureFolder) -> str | None:
    """"Editing": per model, the success rate of each kind of trial (with binomial standard errors), the table of
    what each is made of, the protocol, and example grids; None without an edit-job run."""
    entries = editing_entries(runs)
    if not entries:
        return None
    several = len({id(run) for run, _ in entries}) > 1
    kinds = list(dict.fromkeys(k for _, ev in entries for k in ev["editing"].get("kinds") or []))
    header = (["Run"] if several else []) + ["Model", "Weights"] + [f"{KIND_NAMES.get(k, k)} ↑" for k in kinds]
    rows, detail, notes, grids = [], [], [], []
    for run, ev in entries:
        metrics = ev.get("metrics") or {}
        label = [run.label] if several else []
        rows.append(label + [ev.get("model"), ev.get("weights")] +
                    [metric_cell(metrics.get(f"{k}_success")) for k in kinds])
        for kind in ev["editing"].get("kinds") or []:
            conditions = [(n[len(kind) + 1:], m) for n, m in metrics.items()
                          if n.startswith(f"{kind}_") and n[len(kind) + 1:] not in
                          ("success", "reconstruction_kept", "outside_changed", "outside_change")]
            detail.append(label + [ev.get("model"), KIND_NAMES.get(kind, kind),
                                   (metrics.get(f"{kind}_success") or {}).get("protocol", {}).get("n"),
                                   metric_cell(metrics.get(f"{kind}_success")),
                                   "; ".join(f"{name.replace('_', ' ')} {metric_cell(m)}" for name, m in conditions),
                                   metric_cell(metrics.get(f"{kind}_reconstruction_kept")),
                                   metric_cell(metrics.get(f"{kind}_outside_changed")),
                                   metric_cell(metrics.get(f"{kind}_outside_change"))])
        notes.append((f"{ev.get('model')}" + (f" ({run.label})" if several else ""), _facets(run, ev)))
        grids += _grids(run, ev, figures, several)
    detail_header = (["Run"] if several else []) + ["Model", "Task", "n", "success ↑", "conditions ↑",
                                                    "VQ keeps it ↑", "outside changed ↓", "outside max change ↓"]
    intro = ("Success rates, mean ± binomial standard error. Success is the exact judge's (bench/shapes/judge.py): "
             "inpainting, the new object inside the masked block and the old one kept; outpainting, the kept object "
             "unchanged and the other asked object outside the kept box; mask-free edits, the asked colour or shape "
             "at the object's place and the old one gone.")
    text = (f"## Editing\n\n{intro}\n\n{markdown_table(header, rows)}\n\n"
            f"{markdown_table(detail_header, detail)}\n\n"
            "*VQ keeps it*: the share of trials whose original, through the VQGAN alone, the judge reads the kept (or "
            "old) object from: the ceiling of what kept tokens can keep. *Outside changed*: the mean share of the "
            "pixels the edit must leave alone (a token's width from the edited region; for mask-free edits, a cell "
            "or more from the object) that moved from the VQ reconstruction; *outside max change* the largest such "
            "move in 8-bit levels, over all trials.\n\n" + protocol_note(notes))
    if grids:
        text += ("\n\n### Examples\n\nEach row: the original, the mask, what the prompt (under it) asks for "
                 "drawn where the trial expects it (outpainting: anywhere outside the kept box), and the result.\n\n"
                 + "\n\n".join(grids))
    return text
