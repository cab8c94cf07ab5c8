"""MaskGIT parallel decoding with classifier-free guidance (Chang et al. 2022, 2023).

One pure function, `parallel_decode`, used for base and super-res decoding, editing and aMUSEd alike. Every
random draw of sample i comes from its own generator, seeded from (seed, sample index, replica), so an image
does not depend on batch size, shard or process count. The loop never reads a tensor back to the host, so on a
GPU it queues steps without synchronising.

Guidance has two spellings. Users set the classifier-free guidance scale g of diffusers, aMUSEd and Meissonic
(l_u + g (l_c - l_u)); the sampler works in Muse's t ((1 + t) l_c - t l_u, the paper's formula), with g = 1 + t.
Every name inside says which one it holds: `guidance_scale` is g, `guidance_t` is t.

Which tokens are kept at each step: by confidence (MaskGIT: the sampled tokens' log-probabilities plus annealed
Gumbel noise), or in a fixed order over the grid given by the 2-D Halton low-discrepancy sequence (Besnier et al.,
ICLR 2025, valeoai/Halton-MaskGIT), optionally rolled by a random offset per sample. How many are kept is the
masking schedule's either way.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch

from .errors import MuseInputError

LogitsFn = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor | None]]


GUIDANCE_CONVENTION = "g = 1 + t: l_u + g (l_c - l_u) = (1 + t) l_c - t l_u; g = 1 is no guidance"
STREAM_DERIVATION = ("one torch.Generator per sample seeded with numpy SeedSequence([seed, index, replica]) "
                     "(replica 0: [seed, index]), 63 bits")


def to_guidance_t(scale: float, setting: str = "guidance_scale") -> float:
    """Muse's t for a classifier-free guidance scale g: t = g - 1. g below 1 (or not finite) is refused.

    `setting` names the argument or config key in the error message.
    """
    if not (math.isfinite(scale) and scale >= 1):
        raise MuseInputError(
            f"{setting}={scale} is not a guidance scale: it is the classifier-free guidance scale g of diffusers "
            f"and aMUSEd (logits l_u + g (l_c - l_u); Muse's t is g - 1), so it must be at least 1. g = 1 turns "
            f"guidance off; larger values follow the prompt more closely (e.g. 5 for Muse's t = 4, 10 for aMUSEd's "
            f"default)."
        )
    return float(scale) - 1.0


def to_guidance_scale(t: float) -> float:
    """The classifier-free guidance scale g for Muse's t: g = 1 + t."""
    return 1.0 + float(t)


def sample_seed(seed: int, index: int, replica: int = 0) -> int:
    """A 63-bit seed for sample `index`, replica `replica`, of a run seeded with `seed`.

    Independent streams via numpy's SeedSequence over [seed, index, replica]; replica 0 keeps [seed, index], so a
    one-image-per-prompt run draws what it always drew. Different seeds share no stream, whatever the replicas.
    """
    entropy = [int(seed), int(index)] + ([int(replica)] if replica else [])
    return int(np.random.SeedSequence(entropy).generate_state(1, dtype=np.uint64)[0] >> 1)


def make_generators(seed: int, indices: Sequence[int], device: torch.device | str, replica: int = 0) -> list[torch.Generator]:
    """One generator per sample, on `device`, seeded by (seed, index, replica) (sample_seed)."""
    device = torch.device(device)
    return [torch.Generator(device=device).manual_seed(sample_seed(seed, i, replica)) for i in indices]


# The masking schedules mask_ratio knows, as an error message lists them: powP is a family (P > 0, e.g. pow2).
MASK_SCHEDULES = ("cosine", "linear", "arccos", "powP")


def schedule_power(schedule: str) -> float | None:
    """The exponent P of a powP schedule ("pow" alone is pow2), None for cosine, linear and arccos; MuseInputError
    for any other name, or a P that is not a finite number above 0 (pow0 would unmask everything at the first
    step)."""
    if schedule in ("cosine", "linear", "arccos"):
        return None
    power = None
    if isinstance(schedule, str) and schedule.startswith("pow"):
        try:
            power = float(schedule[3:] or 2)
        except ValueError:
            power = None
    if power is None or not (math.isfinite(power) and power > 0):
        raise MuseInputError(f"unknown masking schedule {schedule!r}: use cosine, linear, arccos or powP with "
                             "P > 0 (e.g. pow2, pow0.5)")
    return power


TOKEN_ORDERS = ("confidence", "halton", "halton-random")


def check_token_order(value: str, setting: str = "token_order") -> str:
    """`value` when it is one of TOKEN_ORDERS; MuseInputError naming `setting` and the choices otherwise."""
    if value not in TOKEN_ORDERS:
        raise MuseInputError(f"{setting}={value!r} is not a token order: use one of {', '.join(TOKEN_ORDERS)} "
                             "(confidence: MaskGIT's; halton: the 2-D Halton sequence over the token grid; "
                             "halton-random: that sequence rolled by a random offset per sample).")
    return value


def _radical_inverse(index: int, base: int) -> float:
    """The van der Corput radical inverse of `index` in `base` (index 1, 2, 3, ... gives 1/b, 2/b, ...)."""
    value, scale = 0.0, 1.0 / base
    while index:
        index, digit = divmod(index, base)
        value += digit * scale
        scale /= base
    return value


@functools.lru_cache(maxsize=16)
def halton_order(side: int) -> tuple[int, ...]:
    """Every position (row * side + column) of a side x side token grid, in the order the 2-D Halton sequence
    (base 2 for the row, base 3 for the column, from index 1) first visits its cell: Halton-MaskGIT's
    build_halton_mask order. Consecutive positions are spread over the whole grid, never clustered."""
    seen: dict[int, None] = {}
    index = 0
    while len(seen) < side * side:
        index += 1
        if index > 64 * side * side:  # the sequence fills any grid long before this; a guard against a bug
            raise RuntimeError(f"the Halton sequence did not cover a {side}x{side} grid")
        row = int(_radical_inverse(index, 2) * side)
        column = int(_radical_inverse(index, 3) * side)
        seen.setdefault(row * side + column, None)
    return tuple(seen)


def reveal_ranks(token_order: str, length: int, generators: Sequence[torch.Generator], device) -> torch.Tensor | None:
    """Each position's place [B, L] in the order tokens are revealed (0 first), or None for "confidence" (the
    order then comes from the model at each step). "halton-random" rolls the order by an offset drawn from each
    sample's own generator, once, before decoding starts."""
    check_token_order(token_order)
    if token_order == "confidence":
        return None
    side = math.isqrt(length)
    if side * side != length:
        raise MuseInputError(f"token_order={token_order!r} needs a square token grid; this one has {length} tokens")
    order = torch.tensor(halton_order(side), device=device)
    ranks = torch.empty_like(order).scatter_(0, order, torch.arange(length, device=device))
    if token_order == "halton-random":
        # Rolling the order by s moves every position s places later (mod L); the offsets stay on the device, so
        # nothing is read back to the host.
        shifts = torch.cat([torch.randint(length, (1,), generator=g, device=device) for g in generators])
        return ((ranks[None, :] + shifts[:, None]) % length).float()
    return ranks[None, :].expand(len(generators), -1).float()


def check_choice_temperature(value: float, setting: str = "choice_temperature") -> float:
    """`value` as a float when it is a Gumbel temperature of the re-masking choice (finite, >= 0: 0 keeps the
    most confident tokens, larger values choose more at random); MuseInputError naming `setting` otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (math.isfinite(value) and value >= 0):
        raise MuseInputError(f"{setting}={value!r} is not a choice temperature: it scales the Gumbel noise added to "
                             "the sampled tokens' log-probabilities when choosing which to keep, so it must be a "
                             "finite number >= 0 (0 = keep the most confident; MaskGIT's default is 4.5).")
    return float(value)


def mask_ratio(ratio: float, schedule: str = "cosine") -> torch.Tensor:
    """Fraction of the initially unknown tokens still masked once `ratio` of the steps are done (float32).

    cosine: cos(pi/2 r) (MaskGIT's default); linear: 1 - r; arccos: arccos(r) / (pi/2) (Halton-MaskGIT's and
    MaskGen's: more revealed than cosine early, fewer late); powP (e.g. pow2): 1 - r**P, P > 0 (schedule_power). Evaluated in float32, as MaskGIT (JAX) and aMUSEd do, so token counts match theirs
    exactly where a value lands on an integer (256 * cos(pi/3) is 127.99999 in float32, so 127 tokens, not 128).
    """
    power = schedule_power(schedule)
    # A host scalar whatever the default device: reading it back must never wait on an accelerator.
    r = torch.tensor(ratio, dtype=torch.float32, device="cpu")
    if schedule == "cosine":
        value = torch.cos(r * math.pi / 2)
    elif schedule == "linear":
        value = 1 - r
    elif schedule == "arccos":
        value = torch.arccos(r) / (math.pi / 2)
    else:
        value = 1 - r**power
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


def guidance_at(step: int, steps: int, t: float, ramp: str = "linear") -> float:
    """Muse's guidance t at `step`: linear ramps from t/steps up to t at the last step; constant keeps it."""
    if ramp == "linear":
        return t * (step + 1) / steps
    if ramp == "constant":
        return t
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
    # float32 whatever the default dtype: the draws (and so the images) must not depend on it.
    u = torch.stack([torch.rand(shape_per_sample, generator=g, device=device, dtype=torch.float32) for g in generators])
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
    guidance_t: float = 0.0,
    guidance_ramp: str = "linear",
    top_k: int | None = None,
    token_order: str = "confidence",
    return_trajectory: bool = False,
) -> DecodeResult:
    """Fill the masked positions of `tokens` [B, L] in `steps` parallel steps (MaskGIT, Chang et al. 2022: google-research/maskgit, libml/parallel_decode.py).

    logits_fn(tokens) -> (cond_logits, uncond_logits or None), each [B, L, V]; it should compute both in one
    batched forward. guidance_t is Muse's t (0 = no guidance: uncond is not used). Known tokens never change.
    After step s < steps - 1, floor(N * schedule((s+1)/steps)) tokens stay masked (N = unknown at the start; at
    least one is fixed per step); after the last step none. token_order says which: the most confident
    (MaskGIT) or the earliest in the Halton order (see the module docstring); choice_temperature is then unused.
    """
    if steps < 1:
        raise MuseInputError(f"steps must be at least 1, got {steps}")
    if len(generators) != tokens.shape[0]:
        raise MuseInputError(f"{tokens.shape[0]} samples but {len(generators)} generators")
    n_initial = (tokens == mask_token_id).sum(-1)
    ranks = reveal_ranks(token_order, tokens.shape[1], generators, tokens.device)
    trajectory = []
    for step in range(steps):
        unknown = tokens == mask_token_id
        cond, uncond = logits_fn(tokens)
        if guidance_t:
            if uncond is None:
                raise ValueError("guidance needs unconditional logits")
            logits = guide(cond.float(), uncond.float(), guidance_at(step, steps, guidance_t, guidance_ramp))
        else:
            logits = cond.float()
        logits = top_k_filter(logits, top_k)
        sampled = torch.where(unknown, sample_categorical(logits, generators), tokens)
        if step == steps - 1:
            tokens = sampled
        else:
            # mask_ratio rounds this to float32, which equals the reference implementations' float32 division
            # (double rounding through float64 is innocuous for a quotient).
            ratio = (step + 1) / steps
            lengths = mask_lengths(n_initial, unknown.sum(-1), ratio, schedule)
            if ranks is None:
                log_p = torch.log_softmax(logits, dim=-1).gather(-1, sampled[..., None])[..., 0]
                temperature = choice_temperature_at(step, steps, choice_temperature, temperature_schedule,
                                                    temperature_end)
                confidence = log_p + temperature * gumbel(tuple(tokens.shape[1:]), generators, tokens.device)
            else:  # a fixed order: the positions earliest in it are kept first
                confidence = -ranks
            confidence = torch.where(unknown, confidence, torch.full_like(confidence, float("inf")))
            tokens = torch.where(remask(confidence, lengths), torch.full_like(sampled, mask_token_id), sampled)
        if return_trajectory:
            trajectory.append(tokens)
    return DecodeResult(tokens, torch.stack(trajectory, dim=1) if return_trajectory else None)
