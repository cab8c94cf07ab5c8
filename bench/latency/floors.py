"""Compute floors: the dense bf16 peaks of named GPUs from their datasheets, the time a number of FLOPs needs at
such a peak (a time no implementation beats), and results.json's `compute` entries (full-size FLOPs and floors
of every model and resolution, timed or not)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

# Dense tensor-core peaks in bf16 (= fp16) from the vendors' datasheets: the compute floor, FLOPs / peak, is
# a time no implementation can beat. Matched by device-name fragment, most specific first. Measured large
# matrix products reach about 80% of these (H100: 790-800 TFLOP/s).
GPU_PEAKS = (("H100 PCIe", 756e12), ("H100", 989e12), ("H200", 989e12), ("A100", 312e12))
# The GPUs every floor prediction names: A100 (SXM or PCIe), H100 SXM, H200.
FLOOR_GPUS = {"A100": 312e12, "H100": 989e12, "H200": 989e12}


def peak_flops(device_name: str, dtype: torch.dtype) -> float | None:
    """The dense bf16/fp16 peak FLOP/s of a known GPU, or None where it is not known (CPUs, fp32)."""
    if dtype not in (torch.bfloat16, torch.float16):
        return None
    return next((value for fragment, value in GPU_PEAKS if fragment in device_name), None)


def floor_seconds(flops_per_image: float | None, batch: int = 1) -> dict[str, float] | None:
    """Seconds a batch would take at the dense bf16 peak of each of FLOOR_GPUS: a lower bound, not a forecast
    (real runs reach a fraction of peak, less at small batch, where launches and memory traffic dominate)."""
    if not flops_per_image:
        return None
    return {gpu: flops_per_image * batch / peak for gpu, peak in FLOOR_GPUS.items()}


def compute_row(model: str, resolution: int, steps: int | str, full_flops: Mapping[str, int] | None) -> dict[str, Any]:
    """results.json `compute` entry of one model at one resolution: FLOPs per image by stage at full size and
    the compute floor of one image on each of FLOOR_GPUS. Every resolution the model supports gets one,
    timed or not, since it costs no time."""
    return {"model": model, "resolution": resolution, "steps": steps,
            "flops_full": dict(full_flops) if full_flops else None,
            "floor_s": floor_seconds(full_flops["total"]) if full_flops else None,
            "note": None if full_flops else "test-size model: no full size"}
