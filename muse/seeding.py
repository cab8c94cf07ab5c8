"""Seeded construction of random-weight models: the one way this code base (muse and the benchmark harness)
draws initial weights from a seed."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch


@contextlib.contextmanager
def seeded_init(seed: int, device: torch.device | str | None = None) -> Iterator[None]:
    """Build modules inside the block under a private RNG state seeded with `seed`.

    The caller's generators (CPU, and the CUDA device's when `device` is one) are restored on exit, so building
    a model never moves anyone else's random stream. With `device` set, modules are created on it (torch's
    default-device context): building on the target device skips a host copy of paper-size weights, and the
    same seed gives the same weights in every process on the same kind of device; "meta" allocates nothing.
    """
    device = None if device is None else torch.device(device)
    cuda = device is not None and device.type == "cuda"
    # fork_rng always forks the CPU generator; it forks a CUDA one only when listed (and never initialises CUDA
    # otherwise).
    fork = torch.random.fork_rng(devices=[device] if cuda else [], device_type="cuda")
    with fork, (device if device is not None else contextlib.nullcontext()):
        torch.manual_seed(seed)
        yield
