"""MaskGIT parallel decoding with classifier-free guidance (Chang et al. 2022, 2023).

One pure function, `parallel_decode`, used for base and super-res decoding, editing and aMUSEd alike. Every
random draw of sample i comes from its own generator, seeded from (seed, sample index), so an image does not
depend on batch size, shard or process count. The loop never reads a tensor back to the host, so on a GPU it
queues steps without synchronising.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch

from .errors import MuseInputError

LogitsFn = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor | None]]


def sample_seed(seed: int, index: int) -> int:
    """A 63-bit seed for sample `index` of a run seeded with `seed` (independent streams via SeedSequence)."""
    return int(np.random.SeedSequence([int(seed), int(index)]).generate_state(1, dtype=np.uint64)[0] >> 1)


def make_generators(seed: int, indices: Sequence[int], device: torch.device | str) -> list[torch.Generator]:
    """One generator per sample, on `device`, seeded by (seed, index)."""
    device = torch.device(device)
    return [torch.Generator(device=device).manual_seed(sample_seed(seed, i)) for i in indices]


def mask_ratio(ratio: float, schedule: str = "cosine") -> torch.Tensor:
    """Fraction of the initially unknown tokens still masked once `ratio` of the steps are done (float32).

    cosine: cos(pi/2 r) (MaskGIT's default); linear: 1 - r; powP (e.g. pow2): 1 - r**P. Evaluated in float32,
    as MaskGIT (JAX) and aMUSEd do, so token counts match theirs exactly where a value lands on an integer
    (256 * cos(pi/3) is 127.99999 in float32, so 127 tokens, not 128).
    """
    r = torch.tensor(ratio, dtype=torch.float32)
    if schedule == "cosine":
        value = torch.cos(r * math.pi / 2)
    elif schedule == "linear":
        value = 1 - r
    elif schedule.startswith("pow"):
        try:
            power = float(schedule[3:] or 2)
        except ValueError:
            raise MuseInputError(f"unknown masking schedule {schedule!r}: use cosine, linear or powP (e.g. pow2)") from None
        value = 1 - r**power
    else:
        raise MuseInputError(f"unknown masking schedule {schedule!r}: use cosine, linear or powP (e.g. pow2)")
    return value.clamp(0.0, 1.0)


def choice_temperature_at(step: int, steps: int, temperature: float, schedule: str = "maskgit", end: float = 0.0) -> float:
    """Gumbel temperature of the re-masking choice at `step` (0-based).

    maskgit: temperature * (1 - (step + 1) / steps), computed afresh every step (never compounded);
    linear: from `temperature` at step 0 to `end` at the last step (aMUSEd's linspace).
    """
    if schedule == "maskgit":
        return temperature * (1.0 - (step + 1) / steps)
    if schedule == "linear":
        return temperature if steps == 1 else temperature + (end - temperature) * step / (steps - 1)
    raise MuseInputError(f"unknown temperature schedule {schedule!r}: use maskgit or linear")


def guidance_at(step: int, steps: int, scale: float, ramp: str = "linear") -> float:
    """Guidance t at `step`: linear ramps from scale/steps up to scale at the last step; constant keeps it."""
    if ramp == "linear":
        return scale * (step + 1) / steps
    if ramp == "constant":
        return scale
    raise MuseInputError(f"unknown guidance ramp {ramp!r}: use linear or constant")


def guide(cond: torch.Tensor, uncond: torch.Tensor, t: float) -> torch.Tensor:
    """Muse's classifier-free guidance: (1 + t) * l_cond - t * l_uncond."""
    return (1.0 + t) * cond - t * uncond


def top_k_filter(logits: torch.Tensor, k: int | None) -> torch.Tensor:
    """Keep the k largest logits of each distribution, set the rest to -inf."""
    if k is None or k >= logits.shape[-1]:
        return logits
    kth = torch.topk(logits, k, dim=-1).values[..., -1:]
    return logits.masked_fill(logits < kth, float("-inf"))


def sample_categorical(logits: torch.Tensor, generators: Sequence[torch.Generator]) -> torch.Tensor:
    """One draw from softmax(logits) per position, sample i drawing from generators[i] (Gumbel-max)."""
    out = torch.empty(logits.shape[:-1], dtype=torch.long, device=logits.device)
    for i, g in enumerate(generators):
        # argmax(l - log E), E ~ Exp(1), is a draw from softmax(l): the exponential-race form of Gumbel-max.
        e = torch.empty(logits.shape[1:], dtype=torch.float32, device=logits.device).exponential_(generator=g)
        out[i] = (logits[i].float() - e.log()).argmax(-1)
    return out


def gumbel(shape_per_sample: tuple[int, ...], generators: Sequence[torch.Generator], device) -> torch.Tensor:
    """Standard Gumbel noise [B, *shape], sample i from generators[i]."""
    u = torch.stack([torch.rand(shape_per_sample, generator=g, device=device) for g in generators])
    return -torch.log((-torch.log(u.clamp_min(1e-20))).clamp_min(1e-20))


def mask_lengths(n_initial: torch.Tensor, n_unknown: torch.Tensor, ratio: float, schedule: str) -> torch.Tensor:
    """MaskGIT's rule: floor(N * mask_ratio), clamped to [1, unknown - 1]; 0 where nothing is unknown."""
    # A Python float holding the float32 value: multiplying keeps float32 and needs no host-to-device copy.
    length = torch.floor(n_initial.float() * float(mask_ratio(ratio, schedule))).long()
    length = torch.clamp(torch.minimum(length, n_unknown - 1), min=1)
    return torch.where(n_unknown > 0, length, torch.zeros_like(length))


def remask(confidence: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """True at the `lengths[i]` lowest-confidence positions of each row (exact counts, no ties)."""
    rank = confidence.argsort(dim=-1).argsort(dim=-1)
    return rank < lengths[:, None]


@dataclass
class DecodeResult:
    tokens: torch.Tensor  # [B, L]
    trajectory: torch.Tensor | None  # [B, steps, L]; still-masked positions hold the mask id


def parallel_decode(
    logits_fn: LogitsFn,
    tokens: torch.Tensor,
    *,
    mask_token_id: int,
    generators: Sequence[torch.Generator],
    steps: int,
    schedule: str = "cosine",
    choice_temperature: float = 4.5,
    temperature_schedule: str = "maskgit",
    temperature_end: float = 0.0,
    guidance_scale: float = 0.0,
    guidance_ramp: str = "linear",
    top_k: int | None = None,
    return_trajectory: bool = False,
) -> DecodeResult:
    """Fill the masked positions of `tokens` [B, L] in `steps` parallel steps (REFERENCE.md section 3).

    logits_fn(tokens) -> (cond_logits, uncond_logits or None), each [B, L, V]; it should compute both in one
    batched forward. Known tokens never change. After step s < steps - 1, floor(N * schedule((s+1)/steps))
    tokens stay masked (N = unknown at the start; at least one is fixed per step); after the last step none.
    """
    if steps < 1:
        raise MuseInputError(f"steps must be at least 1, got {steps}")
    if len(generators) != tokens.shape[0]:
        raise MuseInputError(f"{tokens.shape[0]} samples but {len(generators)} generators")
    n_initial = (tokens == mask_token_id).sum(-1)
    trajectory = []
    for step in range(steps):
        unknown = tokens == mask_token_id
        cond, uncond = logits_fn(tokens)
        if guidance_scale:
            if uncond is None:
                raise ValueError("guidance needs unconditional logits")
            logits = guide(cond.float(), uncond.float(), guidance_at(step, steps, guidance_scale, guidance_ramp))
        else:
            logits = cond.float()
        logits = top_k_filter(logits, top_k)
        sampled = torch.where(unknown, sample_categorical(logits, generators), tokens)
        if step == steps - 1:
            tokens = sampled
        else:
            # The ratio as float32 computes it from integers, like the reference implementations.
            ratio = float(torch.tensor(step + 1, dtype=torch.float32) / steps)
            lengths = mask_lengths(n_initial, unknown.sum(-1), ratio, schedule)
            log_p = torch.log_softmax(logits, dim=-1).gather(-1, sampled[..., None])[..., 0]
            temperature = choice_temperature_at(step, steps, choice_temperature, temperature_schedule, temperature_end)
            confidence = log_p + temperature * gumbel(tuple(tokens.shape[1:]), generators, tokens.device)
            confidence = torch.where(unknown, confidence, torch.full_like(confidence, float("inf")))
            tokens = torch.where(remask(confidence, lengths), torch.full_like(sampled, mask_token_id), sampled)
        if return_trajectory:
            trajectory.append(tokens)
    return DecodeResult(tokens, torch.stack(trajectory, dim=1) if return_trajectory else None)
