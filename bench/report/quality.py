"""The report's quality sections: the table of every evaluation's metrics, FID against CLIP over a guidance
sweep (the Muse paper's Figure 8), PartiPrompts' per-category and per-challenge CLIP scores and win rates, and two
models of the shapes world compared by the exact judge and by CLIP (judge_win_rate)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bench.metrics.judge_win_rate import ENTRIES as JUDGE_WIN_RATE_ENTRIES
from bench.report import figures as figs
from bench.report.markdown import (
    METRIC_NAMES,
    FigureFolder,
    caveat_flag,
    markdown_table,
    metric_cell,
    number,
    percent,
    protocol_note,
    stderr_text,
)
from bench.report.protocols import eval_caveats, eval_facets, guidance_scale
from bench.report.runs import Run

METRIC_ORDER = ("fid", "kid", "precision", "recall", "density", "coverage", "clip_score", "clip_score_x100", "cmmd",
                "win_rate", "loss_rate", "win_ratio")


def quality_section(runs: list[Run]) -> str | None:
    """"Quality metrics": every evaluation's metrics in one table, with its protocol and what was not computed
    (editing rates have their own section, bench/report/editing.py)."""
    entries = [(run, ev) for run in runs for ev in run.evaluations if ev.get("metrics") and not ev.get("editing")]
    if not entries:
        return None
    names = list(dict.fromkeys(n for _, ev in entries for n in ev["metrics"]))
    names = [n for n in METRIC_ORDER if n in names] + [n for n in names if n not in METRIC_ORDER]
    arrows = {}
    for _, ev in entries:
        for n, m in ev["metrics"].items():
            arrows.setdefault(n, " ↑" if m.get("higher_is_better") else " ↓")
    many = len({id(run) for run, _ in entries}) > 1
    header = (["Run"] if many else []) + ["Model", "Dataset", "Resolution", "Guidance g", "n"] + \
             [METRIC_NAMES.get(n, n) + arrows[n] for n in names] + ["Note"]
    rows, notes = [], []
    for run, ev in entries:
        protocol = ev.get("protocol") or {}
        n = ev.get("n_samples") or {}
        sweep = ev.get("sweep") or {}
        # A sweep's values share the model's name: the row says which value it is.
        model = f"{ev.get('model')} ({sweep['key']}={sweep.get('value')})" if sweep.get("key") else ev.get("model")
        rows.append(([run.label] if many else []) + [model, ev.get("dataset"), protocol.get("resolution"),
                    number(guidance_scale(ev)), f"{n.get('effective')} / {n.get('requested')}"] +
                    [metric_cell(ev["metrics"].get(m)) for m in names] + [caveat_flag(eval_caveats(ev))])
        notes.append((f"{model}" + (f" ({run.label})" if many else ""), eval_facets(run, ev)))
    intro = "Values are mean ± standard error where one was computed; n is samples evaluated / requested."
    text = f"## Quality metrics\n\n{markdown_table(header, rows)}\n\n{protocol_note(notes, intro=intro)}"
    # What was not computed and how to get it (missing weights, missing reference images), said once each.
    missing: dict[str, dict[str, list[str]]] = {}  # reason -> metric -> models
    for run, ev in entries:
        for n, m in ev["metrics"].items():
            reason = (m.get("protocol") or {}).get("skipped")
            if m.get("value") is None and reason:
                missing.setdefault(str(reason), {}).setdefault(METRIC_NAMES.get(n, n), []).append(str(ev.get("model")))
    if missing:
        text += "\n\n**Not computed:**\n" + "\n".join(
            "- " + "; ".join(f"{name} ({', '.join(dict.fromkeys(models))})" for name, models in by_metric.items())
            + f": {reason}" for reason, by_metric in missing.items())
    return text


def _clip_metric(metrics: Mapping[str, Any]) -> tuple[str, Mapping[str, Any]] | None:
    """The evaluation's computed CLIP score (cosine, else x100) as (name, entry), or None."""
    for name in ("clip_score", "clip_score_x100"):
        m = metrics.get(name)
        if m and m.get("value") is not None:
            return name, m
    return None


def guidance_section(runs: list[Run], figures: FigureFolder, failed: list[Run]) -> str | None:
    """FID against CLIP over the guidance scale (the Muse paper's Figure 8): one curve per model that was
    evaluated at two guidance scales or more; None without such a sweep."""
    candidates: dict[tuple[str, str, Any], list[tuple[Run, Mapping[str, Any]]]] = {}
    for run in runs:
        for ev in run.evaluations:
            if guidance_scale(ev) is not None and ev.get("metrics"):
                key = (str(ev.get("model")), str(ev.get("dataset")), (ev.get("protocol") or {}).get("resolution"))
                candidates.setdefault(key, []).append((run, ev))
    sweeps = {k: v for k, v in candidates.items() if len({guidance_scale(ev) for _, ev in v}) >= 2}
    if not sweeps:
        return None
    curves: dict[str, list[dict[str, Any]]] = {}
    judge_curves: dict[str, list[dict[str, Any]]] = {}
    rows, notes, unplotted = [], [], []
    clip_names = set()
    several = len({(k[1], k[2]) for k in sweeps}) > 1
    for (model, dataset, res), entries in sweeps.items():
        name = model + (f" ({dataset}, {res} px)" if several else "")
        points = []
        judged = []
        for run, ev in sorted(entries, key=lambda e: float(guidance_scale(e[1]))):
            metrics = ev.get("metrics") or {}
            fid, clip = metrics.get("fid") or {}, _clip_metric(metrics)
            judge = metrics.get("judge_accuracy") or {}
            if fid.get("value") is not None and judge.get("value") is not None:
                judged.append({"x": judge["value"], "y": fid["value"], "xerr": judge.get("stderr"),
                               "yerr": fid.get("stderr"), "label": f"g={number(guidance_scale(ev))}"})
            if fid.get("value") is None or clip is None:
                why = (fid.get("protocol") or {}).get("skipped") or "FID or CLIP not computed"
                unplotted.append(f"{model} at guidance {guidance_scale(ev)} ({run.label}): {why}")
                continue
            clip_names.add(clip[0])
            points.append({"x": clip[1]["value"], "y": fid["value"], "xerr": clip[1].get("stderr"),
                           "yerr": fid.get("stderr"), "label": f"g={number(guidance_scale(ev))}"})
            rows.append([name, number(guidance_scale(ev)), metric_cell(clip[1]), metric_cell(fid),
                         (ev.get("n_samples") or {}).get("effective"), run.label, caveat_flag(eval_caveats(ev))])
            notes.append((f"{model} g={number(guidance_scale(ev))} ({run.label})", eval_facets(run, ev, {"fid", clip[0]})))
        if len(points) >= 2:
            curves[name] = points
        if len(judged) >= 2:
            judge_curves[name] = judged
    text = ["## FID against CLIP over the guidance scale\n\nAs in the Muse paper's Figure 8: one curve per model "
            "through its runs at each guidance scale (labels g=...), lower FID and higher CLIP being better."]
    if curves:
        clip_label = "CLIP score (cosine)" if clip_names == {"clip_score"} else "CLIP score (x100)" \
            if clip_names == {"clip_score_x100"} else "CLIP score"
        caveats = sorted({c for _, ev in (e for v in sweeps.values() for e in v) for c in eval_caveats(ev)})
        path = figs.tradeoff_curve(curves, figures.path("fid-clip-guidance"), xlabel=f"{clip_label}, higher is better",
                                   ylabel="FID, lower is better", title="FID against CLIP over guidance scale",
                                   note="Error bars: one standard error each way."
                                        + (" " + caveat_flag(caveats).replace("**", "") + "." if caveats else ""))
        text.append(figures.link(path, "FID against CLIP over guidance scale"))
    else:
        text.append("No curve: fewer than two runs of a model have both FID and CLIP.")
    if judge_curves:
        # The shapes world's exact judge measures alignment without a learned model in the way: the same trade-off
        # with GenEval-style accuracy on the x axis.
        path = figs.tradeoff_curve(judge_curves, figures.path("fid-judge-guidance"),
                                   xlabel="exact judge accuracy (mean of skills), higher is better",
                                   ylabel="FID, lower is better", title="FID against judge accuracy over guidance scale",
                                   note="Error bars: one standard error each way.")
        text.append(figures.link(path, "FID against judge accuracy over guidance scale"))
    if rows:
        header = ["Model", "Guidance g", "CLIP", "FID", "n", "Run", "Note"]
        text.append(markdown_table(header, rows) + "\n\n" + protocol_note(notes))
    if unplotted:
        text.append("Not plotted: " + "; ".join(unplotted) + ".")
    if failed:
        text.append(f"{len(failed)} run(s) failed and are not plotted: " + ", ".join(r.label for r in failed)
                    + " (see Failed or incomplete runs).")
    return "\n\n".join(text)


def parti_section(runs: list[Run], figures: FigureFolder, reference: list[dict[str, str]] | None) -> str | None:
    """"PartiPrompts": CLIP score per category and per challenge, and the win rates (beside the paper's human
    evaluation from `reference`); None when no evaluation has a breakdown or a win rate."""
    with_breakdown = [(run, ev) for run in runs for ev in run.evaluations if ev.get("breakdown")]
    with_wins = [(run, ev) for run in runs for ev in run.evaluations if isinstance(ev.get("win_rate"), Mapping)]
    if not with_breakdown and not with_wins:
        return None
    many = len({id(r) for r, _ in with_breakdown + with_wins}) > 1
    text = ["## PartiPrompts"]
    notes = [(f"{ev.get('model')}" + (f" ({run.label})" if many else ""), eval_facets(run, ev, {"clip_score"}))
             for run, ev in with_breakdown]
    for by in ("category", "challenge"):
        entries = [(run, ev, ev["breakdown"].get(by) or []) for run, ev in with_breakdown if ev["breakdown"].get(by)]
        if not entries:
            continue
        groups = sorted({g["group"] for _, _, gs in entries for g in gs})
        series = {}
        table_cols = []
        for run, ev, gs in entries:
            name = str(ev.get("model")) + (f" ({run.label})" if many else "")
            by_group = {g["group"]: g for g in gs}
            series[name] = ([by_group[g]["mean"] if g in by_group else None for g in groups],
                            [by_group[g].get("stderr") if g in by_group else None for g in groups])
            table_cols.append((name, by_group))
        caveats = sorted({c for _, ev, _ in entries for c in eval_caveats(ev)})
        path = figs.grouped_bars(groups, series, figures.path(f"parti-clip-{by}"),
                                 xlabel="CLIP score (cosine), mean ± stderr over prompts",
                                 title=f"CLIP score per PartiPrompts {by}",
                                 note=caveat_flag(caveats).replace("**", "") if caveats else None)
        rows = [[g] + [(number(c[g]["mean"]) + (f" ± {stderr_text(c[g]['stderr'])}" if c[g].get("stderr") is not None else "")
                        + f" ({c[g].get('n')} samples, {c[g].get('n_prompts')} prompts)") if g in c else "—"
                       for _, c in table_cols] for g in groups]
        intro = ("Mean CLIP cosine per group; stderr over prompts (std of the per-prompt means / sqrt(prompts)), "
                 "none for a group of one prompt.")
        text.append(f"### CLIP score per {by}\n\n{figures.link(path, f'CLIP per {by}')}\n\n"
                    f"{markdown_table([by.capitalize(), *[n for n, _ in table_cols]], rows)}\n\n{protocol_note(notes, intro=intro)}")
    if with_wins:
        text.append(_win_rate_part(with_wins, figures, reference, many))
    return "\n\n".join(text)


def _win_rate_part(entries: list[tuple[Run, Mapping[str, Any]]], figures: FigureFolder,
                   reference: list[dict[str, str]] | None, many: bool) -> str:
    """The win-rate table and figures of the PartiPrompts section."""
    rows, notes, links = [], [], []
    for run, ev in entries:
        wr = ev["win_rate"]
        metric = (ev.get("metrics") or {}).get("win_rate") or {}
        p = metric.get("protocol") or {}
        a, b = p.get("model_a", ev.get("model")), p.get("model_b", "the other model")
        overall = wr.get("overall") or {}
        judge = (wr.get("judge") or {}).get("name", "?")
        rows.append(([run.label] if many else []) + [a, b, judge, overall.get("n"), percent(overall.get("a_win_rate")),
                     percent(overall.get("tie_rate")), percent(overall.get("b_win_rate")), number(overall.get("ratio")),
                     caveat_flag(eval_caveats(ev))])
        notes.append((f"{a} vs {b}" + (f" ({run.label})" if many else ""), eval_facets(run, ev, {"win_rate"})))
        for by in ("category", "challenge"):
            groups = wr.get(f"by_{by}") or {}
            if not groups:
                continue
            names = sorted(groups)
            caveats = eval_caveats(ev)
            path = figs.win_rate_bars(
                ["overall", *names], [overall.get("a_win_rate")] + [groups[g].get("a_win_rate") for g in names],
                [overall.get("tie_rate")] + [groups[g].get("tie_rate") for g in names],
                [overall.get("b_win_rate")] + [groups[g].get("b_win_rate") for g in names],
                figures.path(f"win-rate-{a}-vs-{b}-{by}-{run.label}"), names=(str(a), str(b)),
                counts=[overall.get("n")] + [groups[g].get("n") for g in names],
                title=f"{a} against {b} per {by} (judge: {judge})",
                note=caveat_flag(caveats).replace("**", "") if caveats else None)
            links.append(figures.link(path, f"win rate per {by}"))
    header = (["Run"] if many else []) + ["Model A", "Model B", "Judge", "Prompts", "A wins", "Ties", "B wins",
                                          "A / B", "Note"]
    for ref in reference or []:
        if ref["table"] == "muse-human-eval" and ref["metric"] == "muse_preferred":
            wins = float(ref["value"])
            others = {r["metric"]: float(r["value"]) for r in reference if r["table"] == "muse-human-eval"}
            rows.append(([""] if many else []) + ["Muse-3B (published)", "Stable Diffusion v1.4", "5 human raters",
                         "PartiPrompts", f"{wins:.1f}%", f"{others.get('no_consensus', 0):.1f}%",
                         f"{others.get('sd_preferred', 0):.1f}%", number(wins / others["sd_preferred"]) if
                         others.get("sd_preferred") else "—", ref["source"]])
    intro = ("Best of K images per prompt by CLIP score, then one verdict per prompt; the automatic judge stands in "
             "for the paper's human raters and is not a replication of them.")
    return "### Win rate\n\n" + "\n\n".join(links) + ("\n\n" if links else "") + markdown_table(header, rows) + "\n\n" + \
        protocol_note(notes, intro=intro)



def _rate(tallied: Mapping[str, Any], rate: str) -> str:
    """A rate of a judge's tally as "45.0% ± 4.5" (stderr in percentage points), a dash when there is none."""
    p, se = tallied.get(rate), tallied.get(f"{rate}_stderr")
    return percent(p) + (f" ± {100 * se:.1f}" if p is not None and se is not None else "")


def _split(tallied: Mapping[str, Any] | None) -> str:
    """A judge's tally as "A / tie / B" percentages."""
    return " / ".join(percent((tallied or {}).get(r)) for r in ("a_win_rate", "tie_rate", "b_win_rate"))


def _agreement(judged: Mapping[str, Any]) -> str:
    """The CLIP judge's agreement with the exact one as a cell: "0.78 ± 0.05 (35 of 45)", a dash without decided pairs."""
    if not judged.get("n_decided"):
        return "— (no decided pair)"
    return (f"{number(judged['agreement'], 3)} ± {stderr_text(judged.get('agreement_stderr'))} "
            f"({judged['n_agree']} of {judged['n_decided']})")


def judge_win_rate_section(runs: list[Run]) -> str | None:
    """"Exact judge against CLIP judge": for each evaluation with a judge_win_rate comparison, each model's win rate
    under the exact judge and under CLIP, the CLIP judge's agreement with the exact one on the pairs the exact one
    decides (overall and per skill), with the protocol; None when no evaluation has one."""
    entries = [(run, ev) for run in runs for ev in run.evaluations if isinstance(ev.get("judge_win_rate"), Mapping)]
    if not entries:
        return None
    many = len({id(run) for run, _ in entries}) > 1
    text = ["## Exact judge against CLIP judge\n\nHow far CLIP-as-judge (the stand-in for the paper's human raters in "
            "the two-model win rate) can be trusted, on the shapes world where the exact judge knows the answer. Each "
            "pair is the two models' images of one prompt (same seed stream). Exact: the image that satisfies its "
            "prompt wins when the other does not; both or neither, a tie. CLIP: the higher image-prompt cosine wins. "
            "Agreement: the share of the pairs the exact judge decides where CLIP picks the same winner (chance 0.5). "
            "Rates are ± one binomial standard error."]
    for run, ev in entries:
        result = ev["judge_win_rate"]
        a, b = result.get("model_a"), result.get("model_b")
        overall = result.get("overall") or {}
        exact, clip = overall.get("exact") or {}, overall.get("clip") or {}
        rows = [[name, tallied.get("n"), _rate(tallied, "a_win_rate"), _rate(tallied, "tie_rate"),
                 _rate(tallied, "b_win_rate")] for name, tallied in (("exact", exact), ("CLIP", clip))]
        table = markdown_table(["Judge", "Pairs", f"{a} wins", "Ties", f"{b} wins"], rows)
        skills = result.get("by_skill") or {}
        skill_rows = [[skill, (j.get("exact") or {}).get("n"), _split(j.get("exact")), _split(j.get("clip")),
                       _agreement(j)] for skill, j in skills.items()]
        skill_table = markdown_table(["Skill", "Pairs", f"exact: {a} / tie / {b}", f"CLIP: {a} / tie / {b}",
                                      "CLIP agrees with exact"], skill_rows)
        ties = overall.get("clip_on_exact_ties") or {}
        label = f"{a} against {b}" + (f" ({run.label})" if many else "")
        text.append(
            f"### {label}\n\n{table}\n\nAgreement of the CLIP judge with the exact one (pairs where it picks the exact "
            f"judge's winner, of those the exact judge decides): {_agreement(overall)}; chance 0.5. On the "
            f"{ties.get('n', 0)} pairs the exact judge calls even, CLIP prefers {a} in "
            f"{percent(ties.get('a_win_rate'))} and {b} in {percent(ties.get('b_win_rate'))}.\n\n"
            f"Per skill:\n\n{skill_table}\n\n"
            + protocol_note([(label, eval_facets(run, ev, set(JUDGE_WIN_RATE_ENTRIES)))]))
    return "\n\n".join(text)
