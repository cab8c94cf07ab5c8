"""The one training loop every stage of the shapes world runs through.

A stage is its trained modules, a loss of (step, generator, rank slice) and its Stage settings (steps, batch,
learning rate). The loop:
- derives each step's randomness from (seed, stage, step) alone: a `shared` generator, the same in every
  process, draws the step's global batch (so a step sees the same examples whatever the number of processes), and
  a `local` one, seeded from the rank too, draws what each process does to its own share (masks, text dropout).
  A resumed run draws what the uninterrupted run would have drawn, and no generator state needs storing. With
  one process the run is bit-for-bit repeatable; with N, the examples are the same and the masks differ;
- sets the learning rate from the step (linear warm-up, cosine decay), so nothing but weights, optimiser moments
  and the step is state;
- checkpoints atomically every `checkpoint_every` steps and at the end (bench/train/checkpoint.py), resumes from the
  checkpoint it finds, and deletes and retrains from one that is corrupt or was written for other settings;
- under torchrun (torch.distributed initialised, gloo on CPU), wraps the modules in DistributedDataParallel: each
  process takes every world_size-th example of the global batch and gradients are averaged, so one step sees the
  same examples whatever the number of processes; rank 0 alone writes checkpoints;
- shows a progress bar with the loss on rank 0.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from tqdm.auto import tqdm

from bench.core.errors import BenchError
from bench.train.checkpoint import CorruptCheckpoint, load_checkpoint, save_checkpoint
from bench.train.recipe import Stage

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Ranks:
    """This process's place among the training processes."""

    rank: int = 0
    world_size: int = 1

    @classmethod
    def current(cls) -> "Ranks":
        if dist.is_available() and dist.is_initialized():
            return cls(dist.get_rank(), dist.get_world_size())
        return cls()

    def part(self, indices: torch.Tensor) -> torch.Tensor:
        """This process's examples of a global batch: every world_size-th, from its rank."""
        return indices[self.rank :: self.world_size]


def step_generator(seed: int, stage: str, step: int, rank: int | None = None) -> torch.Generator:
    """A generator of one step of one stage (rank None: the one every process shares), seeded from those alone."""
    digest = hashlib.sha256(f"{seed}/{stage}/{step}/{'shared' if rank is None else rank}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & ((1 << 63) - 1))


def learning_rate(stage: Stage, step: int) -> float:
    """Linear warm-up to stage.lr over stage.warmup steps, then cosine decay to zero at stage.steps."""
    if step < stage.warmup:
        return stage.lr * (step + 1) / stage.warmup
    progress = (step - stage.warmup) / max(1, stage.steps - stage.warmup)
    return stage.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


class _Parts(nn.Module):
    """The stage's modules under one parent, so DistributedDataParallel sees every parameter; its forward is the
    loss, which uses those very modules."""

    def __init__(self, modules: dict[str, nn.Module], loss: Callable):
        super().__init__()
        self.parts = nn.ModuleDict(modules)
        self.loss = loss

    def forward(self, step: int, shared: torch.Generator, local: torch.Generator):
        return self.loss(step, shared, local)


@dataclass
class StageResult:
    """What a stage did: the step it resumed from, the logged losses, and its seconds of training."""

    resumed_from: int
    history: list[dict] = field(default_factory=list)
    seconds: float = 0.0


def run_stage(name: str, modules: dict[str, nn.Module], loss: Callable, stage: Stage, *, checkpoint: Path,
              seed: int, meta: dict, checkpoint_every: int = 100, before_step: Callable[[int], None] | None = None,
              log_every: int = 50, progress: bool = True) -> StageResult:
    """Train `modules` for stage.steps steps of `loss(step, shared, local) -> (loss tensor, {name: float})`.

    `loss` draws the global batch with `shared` and computes this rank's share of it (Ranks.current().part),
    drawing anything else with `local` (see the module docstring). `before_step(step)`, if
    given, runs before each step (e.g. a codebook initialisation at one step): it must be a function of the
    step and the weights, since a resumed run calls it again from the checkpoint's step. `meta` identifies the
    settings the checkpoint belongs to; a checkpoint with other meta is treated as corrupt.
    """
    ranks = Ranks.current()
    if stage.batch % ranks.world_size:
        raise BenchError(f"stage {name}: batch {stage.batch} does not split over {ranks.world_size} processes; "
                         "use a number of processes that divides it.")
    params = [p for m in modules.values() for p in m.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=stage.lr, betas=(0.9, 0.99), weight_decay=0.01)
    start = 0
    if checkpoint.exists():
        try:
            start = load_checkpoint(checkpoint, modules, optimizer, meta)
        except CorruptCheckpoint as err:
            # Checked before anything is loaded, so the modules are still as the stage built them.
            log.warning("%s Deleting it and training stage %s from the start.", err, name)
            if ranks.rank == 0:
                checkpoint.unlink(missing_ok=True)
            start = 0
    result = StageResult(resumed_from=start)
    if start >= stage.steps:
        return result
    if start:
        log.info("stage %s: resuming from step %d of %d (%s)", name, start, stage.steps, checkpoint)
    for module in modules.values():
        module.train()
    wrapped: nn.Module = _Parts(modules, loss)
    if ranks.world_size > 1:
        wrapped = nn.parallel.DistributedDataParallel(wrapped, find_unused_parameters=True)
    began = time.perf_counter()
    bar = tqdm(range(start, stage.steps), desc=f"train {name}", initial=start, total=stage.steps,
               disable=not progress or ranks.rank != 0, leave=False)
    for step in bar:
        if before_step is not None:
            before_step(step)
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(stage, step)
        value, parts = wrapped(step, step_generator(seed, name, step), step_generator(seed, name, step, ranks.rank))
        optimizer.zero_grad(set_to_none=True)
        value.backward()
        optimizer.step()
        if step % log_every == 0 or step == stage.steps - 1:
            result.history.append({"step": step, "loss": value.item(), **parts})
            bar.set_postfix(loss=f"{value.item():.4f}")
        done = step + 1
        if done % checkpoint_every == 0 or done == stage.steps:
            if ranks.rank == 0:
                save_checkpoint(checkpoint, modules, optimizer, done, meta)
            if ranks.world_size > 1:
                dist.barrier()
    bar.close()
    for module in modules.values():
        module.eval()
    result.seconds = time.perf_counter() - began
    return result

