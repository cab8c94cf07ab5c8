"""Per-stage latency at full size, for machines that cannot run a paper-size model end to end.

A generation is a known number of forwards of each stage: the text encoder once or twice, the base
transformer once per decoding step (24), the super-res transformer once per step (8), the VQ decoder once per
sample; for Stable Diffusion the text encoder twice, the UNet once per scheduler evaluation (51 for 50 PNDM
steps), the VAE decoder once. The `per_stage` protocol times a few real full-size calls of each of those
parts and adds them up with their counts. Only the modules of one *role* (text encoder, generator, image
decoder) are in memory at a time, for every model of a compared group at once, so Muse-3B (T5-XXL alone is
4.9B parameters) fits in 24 GB in bfloat16 beside Stable Diffusion.

What a round is: within a role, each round calls every part of every model of the group once, models in turn
(A B A B ...), so a slow spell of a shared machine falls on both sides of a comparison. A model's time for
round r is the sum over its parts of count x the part's time in round r; ratios between two models are taken
per round, then their median and spread reported (bench.latency.ratios.latency_ratio).

What is and is not in the sum: the forwards; the sampler's own work per decoding step (Gumbel noise,
categorical draws, log-softmax, re-masking; timed by running muse.sampling.parallel_decode for two steps on
fixed logits of the real shape, so the count is steps / 2); the context computed once per image (text
projection, the super-res low-res encoder). Not timed: element-wise work outside those (diffusion scheduler
arithmetic, classifier-free guidance sums for Stable Diffusion, tokenisation-free bookkeeping), Python
between parts, and anything a real pipeline overlaps. Weights are filled with seeded random values of the
scale a fresh module has, without each library's initialisation (minutes for 8B parameters): timing does not
depend on weight values, but it does depend on their scale on a CPU, where activations that shrink into
float32 denormals run several times slower (see build_for_timing).
"""

from __future__ import annotations

import contextlib
import contextvars
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from bench.latency.timing import timed_run

ROLES = ("text", "generator", "decoder")

# Set by counting_weights(): build_for_timing then allocates nothing and adds up the bytes it would have taken.
_COUNTING: contextvars.ContextVar[list[int] | None] = contextvars.ContextVar("counting_weights", default=None)


@dataclass
class Part:
    """One kind of call a generation makes: `call()` runs it once; `count` calls make one batch's generation.

    `stage` is the latency.csv stage the part's time adds to; `name` says what one call is.
    """

    stage: str
    name: str
    count: float
    call: Callable[[], Any]


# A built role: (resolution, batch) -> its parts at that shape; None where the model does not run there.
PartsAt = Callable[[int, int], "list[Part] | None"]


@dataclass
class StagePlan:
    """How to build each role of one model at timing size: role -> a builder taking the resolutions to be
    timed and the role's `shared` modules, and returning PartsAt.

    Builders allocate the role's modules (full size, the run's dtype and device; only those the resolutions
    need) and are called one role at a time; what they return is dropped before the next role is built.
    `shared` is one dict for every model of a timed group in that role: a builder keeps a module there under
    a key of its exact shape (shared_module), so models with the same text encoder (T5-XXL in Muse-632M,
    Muse-3B and the Imagen proxy) hold one copy, not three.
    """

    roles: dict[str, Callable[[Sequence[int], dict], PartsAt]] = field(default_factory=dict)


def shared_module(shared: dict, key: tuple, make: Callable[[], nn.Module], **build) -> nn.Module:
    """build_for_timing(make, **build), or the module a model of the same group already built under `key`
    (which must say everything that shapes it: class, config, dtype). Timing does not depend on weight
    values, so two models may time one module."""
    key = (*key, str(build.get("dtype")), str(build.get("device")))
    if key not in shared:
        shared[key] = build_for_timing(make, **build)
    return shared[key]


@contextlib.contextmanager
def counting_weights() -> Iterator[list[int]]:
    """Within the block, build_for_timing builds nothing real: it returns its module on the meta device and adds
    the bytes of its parameters and buffers (in the run's dtype) to the yielded list's one item. Calling a role's
    builder in the block says what its weights will take before any memory is allocated (builders only build:
    their parts run later)."""
    tally = [0]
    token = _COUNTING.set(tally)
    try:
        yield tally
    finally:
        _COUNTING.reset(token)


def build_for_timing(make: Callable[[], nn.Module], *, device: torch.device | str, dtype: torch.dtype,
                     seed: int = 0) -> nn.Module:
    """A module of `make()`'s shape on `device` in `dtype`, weights filled with seeded random values.

    Built on the meta device, cast there, then given real memory, so nothing is ever held in float32 and no
    library initialisation runs (minutes for T5-XXL's 4.9B parameters). Matrices and convolutions are filled
    from one block of uniform values drawn from `seed`, tiled and scaled to torch.nn.Linear's default range;
    1-D gains are 1 and biases 0. Integer buffers holding position ids are restored; any other buffer has no
    known value here and is refused rather than left as garbage.
    """
    device = torch.device(device)
    with torch.device("meta"):
        module = make()
    # nn.Module.to, not a library override (diffusers warns on every cast of a model it did not load).
    module = nn.Module.to(module, dtype=dtype)
    tally = _COUNTING.get()
    if tally is not None:
        tally[0] += sum(t.numel() * t.element_size() for t in (*module.parameters(), *module.buffers()))
        return module.eval().requires_grad_(False)  # still on the meta device: nothing allocated
    module = module.to_empty(device=device).eval().requires_grad_(False)
    # Values of the scale a fresh module has (weights values do not change timing, but their scale does on
    # a CPU: norm gains of 0.02 shrink activations into float32 denormals, 8x slower): matrices and
    # convolutions U(-1/sqrt(fan_in), 1/sqrt(fan_in)) as torch.nn.Linear's default, 1-D gains 1, biases 0.
    block = torch.empty(1 << 20).uniform_(-1.0, 1.0, generator=torch.Generator().manual_seed(seed))
    block = block.to(device=device, dtype=dtype)
    with torch.no_grad():
        for name, tensor in module.named_parameters():
            if tensor.dim() <= 1:
                tensor.fill_(1.0 if name.endswith("weight") and tensor.dim() == 1 else 0.0)
                continue
            bound = 1.0 / (tensor[0].numel() ** 0.5)
            flat = tensor.view(-1)
            for start in range(0, flat.numel(), block.numel()):
                chunk = flat[start:start + block.numel()]
                chunk.copy_(block[: chunk.numel()]).mul_(bound)
        for name, buffer in module.named_buffers():
            if name.endswith("position_ids") and not buffer.is_floating_point():
                buffer.copy_(torch.arange(buffer.shape[-1], device=device).expand_as(buffer))
            else:
                raise NotImplementedError(f"build_for_timing cannot restore buffer {name!r} of {type(module).__name__}")
    return module


@dataclass
class PartTimes:
    """Per-round seconds of each part of one model at one (resolution, batch)."""

    parts: list[Part]
    seconds: list[list[float]]  # [part][round]
    warm_s: float = 0.0  # time of the warm-up calls (the first call of each part)

    def stage_rounds(self) -> dict[str, list[float]]:
        """Per stage, the time of one generation in each round: sum of count x call time of its parts."""
        rounds = len(self.seconds[0]) if self.seconds else 0
        out: dict[str, list[float]] = {}
        for part, times in zip(self.parts, self.seconds):
            stage = out.setdefault(part.stage, [0.0] * rounds)
            for r, t in enumerate(times):
                stage[r] += part.count * t
        return out


def _time_call(call: Callable[[], Any], device: torch.device) -> float:
    with torch.inference_mode():
        return timed_run(lambda clock: call(), device)[0]


def time_role(parts_by_model: dict[str, list[Part]], *, device: torch.device | str, warmup: int, runs: int,
              deadline: float | None = None) -> dict[str, PartTimes] | None:
    """Time the parts of every model of a group for one role: `warmup` untimed rounds, then `runs` rounds,
    each calling every part of every model once, models in turn. Returns per model its PartTimes, or None
    when `deadline` (a time.monotonic() value) would be passed: checked before each warm-up call (so a slow
    machine overshoots by one call at most), then once from the warm-up round's duration (a timed round costs
    what a warm-up round cost)."""
    device = torch.device(device)
    start = time.monotonic()
    for _ in range(max(warmup, 1)):  # at least one call: first calls allocate and pick kernels
        for parts in parts_by_model.values():
            for part in parts:
                if deadline is not None and time.monotonic() > deadline:
                    return None
                _time_call(part.call, device)
    round_s = (time.monotonic() - start) / max(warmup, 1)
    if deadline is not None and time.monotonic() + runs * round_s > deadline:
        return None
    out = {model: PartTimes(parts, [[] for _ in parts], round_s) for model, parts in parts_by_model.items()}
    for _ in range(runs):
        for model, parts in parts_by_model.items():
            for i, part in enumerate(parts):
                out[model].seconds[i].append(_time_call(part.call, device))
    return out


def random_tokens(batch: int, length: int, vocab: int, device, seed: int = 0) -> torch.Tensor:
    """Token ids for timing inputs (values do not change timing), seeded."""
    return torch.randint(0, vocab, (batch, length), generator=torch.Generator().manual_seed(seed)).to(device)


def repeat_prompts(prompts: Sequence[str], batch: int) -> list[str]:
    """`batch` prompts taken in order from `prompts` (repeated if there are fewer)."""
    return [prompts[i % len(prompts)] for i in range(batch)]
