"""A training stage's checkpoint: one safetensors file, written atomically, holding the modules' weights, the
optimiser's state and the step reached.

Writing goes to a temporary file in the same folder, flushed to disk, then renamed over the old checkpoint, so a
run killed at any moment leaves either the previous checkpoint or the new one, never half of one. Reading checks
that the file holds what the stage expects; anything else is a CorruptCheckpoint naming the file, which the
caller deletes and retrains from (never uses).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from bench.core.errors import BenchError


class CorruptCheckpoint(BenchError):
    """A checkpoint file that cannot be read, or does not hold the stage it is named for."""


def save_checkpoint(path: Path, modules: dict[str, nn.Module], optimizer: torch.optim.Optimizer, step: int,
                    meta: dict) -> None:
    """Write the stage's state at `step` to `path` atomically."""
    tensors = {}
    for name, module in modules.items():
        for key, value in module.state_dict().items():
            # A copy each: tied weights (T5's shared and encoder embeddings) are one tensor under two names.
            tensors[f"model/{name}/{key}"] = value.detach().cpu().clone()
    for index, state in optimizer.state_dict()["state"].items():
        for key, value in state.items():
            tensors[f"optim/{index}/{key}"] = torch.as_tensor(value).detach().contiguous().cpu()
    metadata = {"step": str(step), "meta": json.dumps(meta, sort_keys=True)}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata=metadata)
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)


def load_checkpoint(path: Path, modules: dict[str, nn.Module], optimizer: torch.optim.Optimizer,
                    meta: dict) -> int:
    """Restore modules and optimiser from `path`; returns the step it was written at.

    CorruptCheckpoint when the file is unreadable, was written for other settings (`meta` differs), or misses or
    adds weights.
    """
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise CorruptCheckpoint(f"checkpoint {path} cannot be read ({err}).") from err
    if metadata.get("meta") != json.dumps(meta, sort_keys=True) or "step" not in metadata:
        raise CorruptCheckpoint(f"checkpoint {path} was written for other settings than this stage's.")
    # Everything is checked before anything is loaded, so a refused file leaves the modules untouched.
    expected = {f"model/{name}/{k}": tuple(v.shape) for name, m in modules.items() for k, v in m.state_dict().items()}
    found = {k: tuple(v.shape) for k, v in tensors.items() if k.startswith("model/")}
    if found != expected:
        wrong = sorted(set(found.items()) ^ set(expected.items()))
        raise CorruptCheckpoint(f"checkpoint {path} does not hold this stage's weights (first difference: "
                                f"{wrong[0][0]}).")
    try:
        for name, module in modules.items():
            prefix = f"model/{name}/"
            module.load_state_dict({k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)})
        state: dict[int, dict] = {}
        for key, value in tensors.items():
            if key.startswith("optim/"):
                _, index, name = key.split("/", 2)
                state.setdefault(int(index), {})[name] = value
        optimizer.load_state_dict({"state": state, "param_groups": optimizer.state_dict()["param_groups"]})
    except (RuntimeError, KeyError, ValueError) as err:
        raise CorruptCheckpoint(f"checkpoint {path} does not hold this stage's weights ({err}).") from err
    return int(metadata["step"])
