"""Latency ratios between two models (results.json `latency_ratios`): the one place a time ratio is computed.

Models compared by latency.compare are timed in rounds (A B A B ...), so a ratio is the median of the per-round
ratios, with their range: a ratio whose range covers 1 is a tie. A cross-model ratio is given only where the
timed profiles preserve the full-size cost ratio (both full size, or one architecture timed twice); the
full-size FLOP ratio and the compute floors on named GPUs (bench/latency/floors.py) stand beside every ratio.
"""

from __future__ import annotations

import statistics
from typing import Any

from bench.latency.floors import FLOOR_GPUS, floor_seconds
from bench.latency.measure import RowInfo, Timing


def preserves_cost_ratio(slower: RowInfo, faster: RowInfo) -> tuple[bool, str]:
    """Whether a time ratio between two timed rows measures the real models' cost ratio, and why (not).

    True when both were timed at full size, or when both are one architecture at one profile (ours and
    diffusers' aMUSEd: same weights, so the ratio compares implementations). A scaled profile divides every
    width by 16, which cuts attention and MLP costs by different factors, so two models' scaled times do not
    keep their full-size ratio; a tiny profile has no relation to full size at all.
    """
    if slower.arch and slower.arch == faster.arch and slower.profile == faster.profile:
        return True, f"one architecture ({slower.arch}) timed twice at profile {slower.profile}"
    if slower.profile == faster.profile == "full":
        return True, "both timed at full size"
    measured = _ratio(slower.flops_per_image.get("total"), faster.flops_per_image.get("total"))
    full = _ratio((slower.full_flops_per_image or {}).get("total"), (faster.full_flops_per_image or {}).get("total"))
    flops = (f": their FLOP ratio is {measured:.3g} at the timed profiles but {full:.3g} at full size"
             if measured and full else "")
    return False, (f"profiles {slower.profile} / {faster.profile} do not preserve the full-size cost ratio"
                   f"{flops}; the scaled profile is for comparing settings of one model (batch size, steps, "
                   "compile), not models")


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a and b else None


def latency_ratio(slower: Timing, faster: Timing) -> dict[str, Any]:
    """The results.json entry comparing two models at one resolution and batch size (greater than 1: `faster`
    is faster). `slower` and `faster` name the pair as latency.compare lists it (the claim's order), not what
    was measured: the verdict says that.

    ratio: the median over rounds of slower's time / faster's time in the same round, with `ratio_range`
    [min, max] over rounds and `verdict` ("faster", "tie" when the range covers 1, "slower"); null where the
    timed profiles do not preserve the full-size cost ratio (`shown` false, `why`). Beside it, always:
    `flop_ratio_full` (FLOPs per image at full size, slower / faster), `flop_ratio_timed` (at the timed
    profiles) and `floor_s` (the compute floor of each model on each of FLOOR_GPUS at this batch size).
    """
    a, b = slower.info, faster.info
    floors_a, floors_b = (floor_seconds((i.full_flops_per_image or {}).get("total"), slower.batch) for i in (a, b))
    entry: dict[str, Any] = {
        "slower": a.model, "faster": b.model, "resolution": a.resolution, "batch_size": slower.batch,
        "compiled": a.compiled, "profiles": [a.profile, b.profile],
        "flop_ratio_full": _ratio((a.full_flops_per_image or {}).get("total"),
                                  (b.full_flops_per_image or {}).get("total")),
        "flop_ratio_timed": _ratio(a.flops_per_image.get("total"), b.flops_per_image.get("total")),
        "floor_s": {gpu: {"slower": floors_a[gpu] if floors_a else None, "faster": floors_b[gpu] if floors_b else None}
                    for gpu in FLOOR_GPUS},
        "ratio": None, "ratio_range": None, "rounds": 0, "verdict": None,
    }
    if slower.status != "ok" or faster.status != "ok":
        return entry | {"shown": False, "why": f"not timed: {a.model} {slower.status}, {b.model} {faster.status}",
                        "protocol": slower.protocol}
    shown, why = preserves_cost_ratio(a, b)
    per_round = [x / y for x, y in zip(slower.totals, faster.totals)]
    entry |= {"shown": shown, "why": why, "rounds": len(per_round),
              "protocol": (f"median over {len(per_round)} rounds of the per-round ratio of end-to-end times "
                           f"({a.model} / {b.model}; each round timed both back to back), range = min and max; "
                           f"profiles {a.profile} / {b.profile}; weights {a.weights} / {b.weights}; "
                           f"{slower.protocol}")}
    if shown:
        low, high = min(per_round), max(per_round)
        entry |= {"ratio": statistics.median(per_round), "ratio_range": [low, high],
                  "verdict": "tie" if low <= 1 <= high else ("faster" if low > 1 else "slower")}
    return entry
