"""What moves each number, as the report says it: the "Protocol:" facets of an evaluation or a latency row (data,
samples, guidance, sampler, each metric's recorded choices, device, profile, timing), and the caveats that make a
row "not a paper number".

Caveats are read from fields the results carry: each metric's `comparable_to_published` record
(bench/metrics/published.py), a latency row's `profile` and `device`, the run's `latency.protocol`; a proxy of an
unreleased model is known by the models wing's list of proxy names (bench.models.proxies.PROXY_NAMES), as
results.json has no field for it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from bench.metrics.published import NO_PUBLISHED
from bench.models.proxies import PROXY_NAMES
from bench.report.markdown import METRIC_NAMES, NOT_PAPER, number
from bench.report.runs import Run


def _legacy_t(protocol: Mapping[str, Any]) -> bool:
    """Whether a protocol's `guidance` is Muse's t: runs recorded before guidance became the CFG scale g for
    every family (no guidance_convention) stored t for Muse and aMUSEd, and g for Stable Diffusion (denoiser)."""
    sampler = protocol.get("sampler")
    return "guidance_convention" not in protocol and not (isinstance(sampler, Mapping) and "denoiser" in sampler)


def guidance_scale(ev: Mapping[str, Any]) -> Any:
    """The evaluation's classifier-free guidance scale g (g = 1 + t), whichever convention its run recorded."""
    protocol = ev.get("protocol") or {}
    value = protocol.get("guidance")
    return float(value) + 1.0 if value is not None and _legacy_t(protocol) else value


def _guidance_text(protocol: Mapping[str, Any]) -> str:
    g = guidance_scale({"protocol": protocol})
    if g is None:
        return "none recorded"
    if _legacy_t(protocol):
        return f"g={number(g)} (the run recorded Muse's t={number(protocol.get('guidance'))}; g = 1 + t)"
    t = protocol.get("guidance_t")
    return f"g={number(g)}" + (f", Muse's t={number(t)}" if t is not None else "") + \
        (f" ({protocol['guidance_convention']})" if protocol.get("guidance_convention") else "")


def sampler_text(protocol: Mapping[str, Any]) -> str:
    """The sampler settings of each stage ("base: steps=24, ..."), under the names they meant when recorded."""
    sampler = protocol.get("sampler") or {}
    if not isinstance(sampler, Mapping) or not sampler:
        return f"steps={protocol.get('steps')}, guidance g={number(guidance_scale({'protocol': protocol}))}"
    # An older run's per-stage guidance_scale held t (see _legacy_t): show it under the name it meant.
    rename = {"guidance_scale": "guidance_t"} if _legacy_t(protocol) else {}
    return " / ".join(f"{stage}: " + ", ".join(f"{rename.get(k, k)}={v}" for k, v in (s or {}).items())
                      for stage, s in sampler.items() if isinstance(s, Mapping))


def _metric_facets(name: str, metric: Mapping[str, Any]) -> dict[str, str]:
    """The choices behind one metric that move its number, from its recorded protocol, and what it is compared
    with (its comparable_to_published record)."""
    p = metric.get("protocol") or {}
    title = METRIC_NAMES.get(name, name)
    if metric.get("value") is None and p.get("skipped"):
        return {f"{title}": "skipped (why: under Not computed)"}
    facets = _choice_facets(name, title, p)
    record = p.get("comparable_to_published")
    if record and record.get("published"):
        verdict = "matches" if record.get("value") else "differs: " + "; ".join(record.get("reasons") or [])
        unknown = record.get("unknown") or []
        facets[f"{title} vs published"] = (f"{record['published']}: protocol {verdict}"
                                           + (f" (not stated there: {'; '.join(unknown)})" if unknown else ""))
    return facets


def _choice_facets(name: str, title: str, p: Mapping[str, Any]) -> dict[str, str]:
    """What moves one metric's number, by kind of metric, from its recorded protocol `p`."""
    ref = p.get("reference") or {}
    ref_text = (f"reference set {ref.get('dataset')} ({ref.get('source')}, {ref.get('reference_set')}, "
                f"{ref.get('count')} images)") if ref else None
    stats = p.get("reference_stats") or {}
    unreachable = (f"{stats['unreachable']} of {stats.get('expected')} reference images unreachable"
                   if stats.get("unreachable") else None)
    below = f"**below the minimum of {p.get('min_samples')} samples: {NOT_PAPER}**" if p.get("below_minimum") else None
    cache = p.get("reference_cache") or {}
    cache_text = (f"reference features {'read from the cache' if cache.get('hit') else 'computed'} (key "
                  f"{str(cache.get('key'))[:12]})") if cache else None
    smaller = p.get("reference_smaller_than_resolution") or {}
    smaller_text = (f"**{smaller['count']} of {smaller.get('of')} references smaller than {smaller.get('resolution')} "
                    "px, upsampled**") if smaller.get("count") else None
    ref_text = ", ".join(x for x in (ref_text, cache_text, smaller_text) if x) or None
    if name in ("fid", "kid"):
        parts = [f"mode {p.get('mode')}", f"extractor {p.get('feature_extractor')}"]
        gen = p.get("generated_resize") or {}
        if gen:
            size = gen.get("size") or ["?", "?"]
            parts.append(f"samples resized {gen.get('library')} {gen.get('filter')} to {size[0]}x{size[-1]}"
                         + (" (quantised)" if gen.get("quantize") else ""))
        ref_resize = p.get("reference_resize") or {}
        if ref_resize:
            size = ref_resize.get("size") or ["?", "?"]
            parts.append(f"references {ref_resize.get('crop')}-cropped, {ref_resize.get('resize')} to {size[0]}x{size[-1]}")
        parts += [ref_text, unreachable]
        if p.get("n_reference") is not None:
            parts.append(f"{p['n_reference']} reference / {p.get('n_generated')} generated")
        if name == "kid":
            parts.append(f"{p.get('num_subsets')} subsets of {p.get('subset_size')}, {p.get('kernel')} kernel, "
                         f"scale {p.get('scale')}")
        parts += [f"stderr {p['stderr']}" if p.get("stderr") else None, below]
        return {title: ", ".join(str(x) for x in parts if x)}
    if name.startswith("clip_score") or name == "cmmd":
        pre = p.get("image_preprocess") or {}
        size = pre.get("size")
        model = ", ".join(x for x in (
            f"{p.get('backend')} {p.get('arch')} ({p.get('pretrained')})",
            f"images {size[0]}x{size[-1]} {pre.get('interpolation')}"
            + (f" ({pre['resize_mode']})" if pre.get("resize_mode") else "") if size else None,
            f"text context {p.get('context_length')}" if p.get("context_length") else None,
            f"{p.get('precision')}" if p.get("precision") else None) if x)
        if name == "cmmd":
            bias = p.get("small_sample_bias") or {}
            bias_text = (f"small-sample bias about {bias['estimate']:.3g}"
                         + ("" if bias.get("negligible") else " (**not negligible against the value**)")
                         if bias.get("estimate") is not None else None)
            parts = [model, f"{p.get('kernel')}, sigma {p.get('sigma')}, scale {p.get('scale')}", p.get("estimator"),
                     bias_text, ref_text, unreachable, below]
            return {title: ", ".join(str(x) for x in parts if x)}
        # clip_score and clip_score_x100 share the CLIP model; only their scale differs.
        parts = [f"{p.get('n_truncated')} prompts truncated" if p.get("n_truncated") else None,
                 f"stderr {p.get('stderr_method')}" if p.get("stderr_method") else None]
        return {"CLIP model": model, f"{title} scale": str(p.get("scale")) + "".join(f", {x}" for x in parts if x)}
    if name in ("win_rate", "loss_rate", "win_ratio"):
        judge = p.get("judge") or {}
        parts = [f"{p.get('model_a')} vs {p.get('model_b')}",
                 f"{p['n_prompts']} prompts" if p.get("n_prompts") is not None else None,
                 f"best of K={p['K']}" + (f" by {p['best_of_k']}" if p.get("best_of_k") else "") if p.get("K") else None,
                 f"judge {judge.get('name')}" + (f" (margin {p['margin']})" if p.get("margin") is not None else "")
                 + (f": {judge['note']}" if judge.get("note") else "")]
        return {"win rate": ", ".join(x for x in parts if x)}
    if name in ("judge_win_rate", "judge_loss_rate", "clip_judge_win_rate", "clip_judge_loss_rate",
                "clip_judge_agreement"):
        # One facet for the five entries (they share their protocol): said once under the table.
        clip = p.get("clip_judge") or {}
        scorer = clip.get("scorer") or {}
        agreement = p.get("agreement") or {}
        parts = [f"{p.get('model_a')} vs {p.get('model_b')}, {p.get('n_pairs')} pairs of {p.get('n_prompts')} prompts",
                 f"exact judge: {(p.get('exact_judge') or {}).get('rule')}",
                 f"CLIP judge: {clip.get('rule')} (margin {clip.get('margin')}, {clip.get('margin_setting')}); CLIP "
                 f"{scorer.get('model') or scorer.get('arch')}",
                 f"agreement over the {agreement.get('n_decided')} pairs the exact judge decides, chance "
                 f"{agreement.get('chance')}",
                 f"stderr {p.get('stderr_method')}"]
        return {"judge win rate": "; ".join(parts)}
    return {title: ", ".join(f"{k}={v}" for k, v in p.items() if not isinstance(v, (dict, list)))}


def eval_caveats(ev: Mapping[str, Any], metrics: Iterable[str] | None = None) -> list[str]:
    """Why an evaluation's numbers are not comparable with published ones, as each computed metric's protocol
    records it (comparable_to_published, bench/metrics/published.py): each reason once, with the metrics it concerns.
    Empty when every metric (of `metrics`, default all) matches its published protocol."""
    by_reason: dict[str, list[str]] = {}
    for name, metric in (ev.get("metrics") or {}).items():
        if (metrics is not None and name not in metrics) or metric.get("value") is None:
            continue
        record = (metric.get("protocol") or {}).get("comparable_to_published")
        reasons = ["comparability not recorded (results of an older muse-bench)"] if record is None else \
            ([] if record.get("value") else record.get("reasons") or ["not comparable"])
        # Where nothing is published there is no paper number to mistake this one for: not a caveat by itself.
        for reason in (r for r in reasons if r != NO_PUBLISHED):
            by_reason.setdefault(str(reason), []).append(METRIC_NAMES.get(name, name))
    return [f"{reason} ({', '.join(names)})" for reason, names in by_reason.items()]


def protocol_matches(ev: Mapping[str, Any], metrics: Iterable[str]) -> str:
    """"protocol matches ..." for the metrics of `metrics` whose protocol records a match with a published one."""
    figures = [((ev.get("metrics") or {}).get(n, {}).get("protocol") or {}).get("comparable_to_published") or {}
               for n in metrics]
    shown = list(dict.fromkeys(f["published"] for f in figures if f.get("value") and f.get("published")))
    return ("protocol matches: " + "; ".join(shown)) if shown else ""


def _resized_text(protocol: Mapping[str, Any]) -> str:
    """How samples made at another (the model's native) resolution were brought to the evaluated one; "" if not."""
    made_at, resized = protocol.get("generated_at"), protocol.get("resized_with")
    if not made_at or not isinstance(resized, Mapping):
        return ""
    return f" (made at {made_at}x{made_at}, resized with {resized.get('library')} {resized.get('filter')})"


def eval_facets(run: Run, ev: Mapping[str, Any], metrics: Iterable[str] | None = None) -> dict[str, str]:
    """The Protocol facets of one evaluation of `run`: data, samples, guidance, sampler, weights, each metric of
    `metrics` (default all) and the device."""
    protocol = ev.get("protocol") or {}
    n = ev.get("n_samples") or {}
    limit = (run.config.get("dataset") or {}).get("limit")
    facets = {
        "data": f"{ev.get('dataset')}, {n.get('effective')} samples evaluated of {n.get('requested')} requested"
                + (f" (dataset.limit={limit})" if limit is not None else ""),
        "samples": f"{protocol.get('resolution')}x{protocol.get('resolution')} px{_resized_text(protocol)}, "
                   f"seed {protocol.get('seed')}, {protocol.get('samples_per_prompt', 1)} per prompt",
        "guidance": _guidance_text(protocol),
        "sampler": sampler_text(protocol),
        "weights": ("random (" + NOT_PAPER + ")") if ev.get("weights") == "random" else str(ev.get("weights")),
    }
    for name, metric in (ev.get("metrics") or {}).items():
        if metrics is None or name in metrics:
            facets.update(_metric_facets(name, metric))
    if ev.get("excluded"):
        facets["excluded"] = f"{len(ev['excluded'])} unreadable samples left out"
    prov = run.provenance
    commit = str(prov.get("git_commit") or "?")[:10] + (" (dirty)" if prov.get("git_dirty") else "")
    facets["device"] = f"{run.device()}, torch {prov.get('torch', '?')}, git {commit}"
    return facets


def latency_caveats(run: Run, row: Mapping[str, Any]) -> list[str]:
    """Why a latency row of `run` is not a paper number, read from the row's profile and device and the run's
    latency.protocol; empty for a full-size row measured end to end on an accelerator."""
    out = []
    if row.get("profile") == "scaled":
        out.append("scaled profile (for settings of one model, not for comparing models)")
    elif row.get("profile") == "tiny":
        out.append("tiny profile")
    # results.json has no field that marks a stand-in for an unreleased model: the registry's list of proxies does.
    if row.get("model") in PROXY_NAMES:
        out.append("labelled proxy")
    if (run.config.get("latency") or {}).get("protocol") == "per_stage":
        out.append("sum of per-stage forwards")
    if row.get("device") == "cpu" and row.get("profile") == "full":
        out.append("timed on a CPU")
    return out


PROFILE_TEXT = {
    "full": "full (the published shapes)",
    "scaled": f"scaled: every width / 16, same layers, tokens and steps; compares settings of one model (batch size, "
              f"steps, compile), not models, whose costs it changes by different factors ({NOT_PAPER})",
    "tiny": f"tiny: a test-size model ({NOT_PAPER})",
}


def latency_facets(run: Run, row: Mapping[str, Any]) -> dict[str, str]:
    """The Protocol facets of one latency row of `run`: device, profile, weights, steps, timing protocol, commit."""
    weights = row.get("weights")
    return {
        "device": f"{row.get('device')} ({row.get('dtype')}{', compiled' if row.get('compiled') else ''})",
        "profile": PROFILE_TEXT.get(str(row.get("profile")), str(row.get("profile"))),
        "weights": f"{weights}" + (" (times do not depend on weight values)" if weights == "random" else ""),
        "steps": str(row.get("steps")),
        "timing": str(row.get("protocol")),
        "git": str(run.provenance.get("git_commit") or "?")[:10],
    }
