"""Generating a dataset's images with a pipeline and writing them as PNGs with a manifest row each."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from bench.datasets import PromptRecord
from bench.results import atomic_write_bytes

# Keys of a manifest row that bench itself sets; a dataset's metadata must not reuse them.
MANIFEST_KEYS = ("index", "id", "prompt", "seed", "resolution", "file")


def sample_file_name(index: int, resolution: int) -> str:
    """The PNG name of a sample: `00007.png` at 256 (the base model's output), `00007-512.png` otherwise.

    The name depends only on (index, resolution), so runs at several resolutions share one folder.
    """
    return f"{index:05d}.png" if resolution == 256 else f"{index:05d}-{resolution}.png"


def manifest_row(record: PromptRecord, *, seed: int, resolution: int, file: str) -> dict[str, Any]:
    """One manifest.jsonl object: index, id, prompt, seed, resolution, file, then the dataset's metadata."""
    clash = set(record.metadata) & set(MANIFEST_KEYS)
    if clash:
        raise ValueError(f"dataset metadata reuses manifest keys {sorted(clash)}")
    row = {
        "index": record.index,
        "id": record.id,
        "prompt": record.prompt,
        "seed": seed,
        "resolution": resolution,
        "file": file,
    }
    row.update(record.metadata)
    return row


def _png_bytes(image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def generate_samples(
    pipe,
    records: Sequence[PromptRecord],
    *,
    resolution: int,
    seed: int,
    batch_size: int,
    out_dir: str | Path,
    desc: str | None = None,
) -> list[dict[str, Any]]:
    """Generate one image per record in batches and write each as a PNG in `out_dir`.

    Each record's dataset index is passed as its sample index, so an image depends only on
    (seed, index): the same whatever the batch size or subset. Returns the manifest rows, whose
    `file` is the PNG's name relative to `out_dir`.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    out_dir = Path(out_dir)
    batches = [records[start : start + batch_size] for start in range(0, len(records), batch_size)]
    rows: list[dict[str, Any]] = []
    for batch in tqdm(batches, desc=desc or f"{resolution}px", unit="batch"):
        with torch.inference_mode():
            output = pipe(
                [record.prompt for record in batch],
                resolution=resolution,
                seed=seed,
                sample_indices=[record.index for record in batch],
            )
        if len(output.images) != len(batch):
            raise RuntimeError(f"pipeline returned {len(output.images)} images for {len(batch)} prompts")
        for record, image in zip(batch, output.images):
            name = sample_file_name(record.index, resolution)
            atomic_write_bytes(out_dir / name, _png_bytes(image))
            rows.append(manifest_row(record, seed=seed, resolution=resolution, file=name))
    return rows
