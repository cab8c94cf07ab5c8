"""Generating a dataset's images: a plan of samples, resumable, sharded, written as PNGs with a manifest.

A sample is (prompt record, replica k, resolution). Its random stream is derived from (run seed, the record's
index in the full dataset, k) (muse.sampling.sample_seed), so its image depends only on those: never on the
batch it was made in, the subset, the shard or the number of processes, and runs with different seeds share no
image. Replica 0 is the image a one-image-per-prompt run makes.

Every PNG is written atomically (a temporary file moved into place), so a file that exists is complete: a
rerun into the same folder skips the samples whose PNG is there (a killed run loses at most the batch in
flight) and ends with exactly the files of an uninterrupted run. `sampling.json` in the folder records every
choice that moves the images; resuming with different choices is refused rather than mixing two runs.
"""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import groupby
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from tqdm import tqdm

from bench.core.errors import BenchError
from bench.core.results import atomic_write_bytes, read_json, write_json
from bench.data.images import ImageLoadError, load_rgb
from bench.data.prompts import PromptRecord

log = logging.getLogger(__name__)

# Keys of a manifest row that bench itself sets; a dataset's metadata must not reuse them.
MANIFEST_KEYS = ("index", "id", "prompt", "seed", "replica", "resolution", "file")
SAMPLING_FILE = "sampling.json"
# What sampling.json's promises mean. 2: a sample's stream comes from (seed, index, replica) (replica k used
# seed + k before) and guidance is recorded as the CFG scale g beside Muse's t (it was t for Muse). A folder of
# another format is refused, not mixed.
SAMPLING_FORMAT = 2


def sample_file_name(index: int, resolution: int, replica: int = 0) -> str:
    """The PNG name of a sample: `00007.png` at 256 (the base model's output), `00007-512.png` at 512, and
    `00007-k3.png` / `00007-512-k3.png` for replica 3 of the prompt.

    The name depends only on (index, resolution, replica), so runs at several resolutions share one folder.
    """
    name = f"{index:05d}" if resolution == 256 else f"{index:05d}-{resolution}"
    return f"{name}.png" if replica == 0 else f"{name}-k{replica}.png"


def manifest_row(record: PromptRecord, *, seed: int, resolution: int, file: str, replica: int = 0) -> dict[str, Any]:
    """One manifest.jsonl object: index, id, prompt, seed, replica, resolution, file, then the dataset's metadata."""
    clash = set(record.metadata) & set(MANIFEST_KEYS)
    if clash:
        raise ValueError(f"dataset metadata reuses manifest keys {sorted(clash)}")
    row = {
        "index": record.index,
        "id": record.id,
        "prompt": record.prompt,
        "seed": seed,
        "replica": replica,
        "resolution": resolution,
        "file": file,
    }
    row.update(record.metadata)
    return row


@dataclass(frozen=True)
class Sample:
    """One image to make: a prompt record, its replica number and the output resolution."""

    record: PromptRecord
    replica: int
    resolution: int

    @property
    def file(self) -> str:
        return sample_file_name(self.record.index, self.resolution, self.replica)

    @property
    def key(self) -> tuple[int, int, int]:
        """Sort key and identity of the sample: (resolution, dataset index, replica)."""
        return (self.resolution, self.record.index, self.replica)

    def row(self, seed: int) -> dict[str, Any]:
        """Its manifest row: `seed` is the run's seed; (seed, index, replica) fix the image."""
        return manifest_row(self.record, seed=seed, resolution=self.resolution, file=self.file, replica=self.replica)


def plan_samples(records: Sequence[PromptRecord], resolutions: Sequence[int], samples_per_prompt: int = 1) -> list[Sample]:
    """Every sample of a run, in manifest order: by resolution, then dataset index, then replica."""
    if samples_per_prompt < 1:
        raise BenchError(f"eval.samples_per_prompt must be at least 1, got {samples_per_prompt}.")
    return [Sample(record, k, resolution) for resolution in resolutions for record in records
            for k in range(samples_per_prompt)]


def shard(samples: Sequence[Sample], rank: int, world_size: int) -> list[Sample]:
    """The samples process `rank` of `world_size` makes: every world_size-th, so shards are disjoint, cover the
    plan, and stay balanced whatever the order of resolutions and replicas."""
    return list(samples[rank::world_size])


def check_sampling_record(out_dir: str | Path, record: dict[str, Any]) -> None:
    """Refuse to add samples to a folder made under other choices. Reads only: write_sampling_record writes.

    `record` holds every choice that moves an image (model and weights, sampler settings, dataset, seed); the
    file also says its SAMPLING_FORMAT. A folder that has PNGs but no sampling.json was not made by this runner
    and is refused too, and so is one written under another format.
    """
    out_dir = Path(out_dir)
    path = out_dir / SAMPLING_FILE
    record = {"format": SAMPLING_FORMAT, **record}
    if path.is_file():
        previous = read_json(path)
        if previous.get("format", 1) != SAMPLING_FORMAT:
            raise BenchError(
                f"{out_dir} holds samples made by another muse-bench version ({path} has format "
                f"{previous.get('format', 1)}, this version writes {SAMPLING_FORMAT}: since format 2 the replicas of a "
                "prompt are drawn from (seed, index, replica) instead of seed + replica, and guidance is the CFG "
                "scale g). Its images cannot be mixed with new ones: write to a new run directory (a new "
                "hydra.run.dir), or delete that folder to start again."
            )
        if previous != record:
            keys = sorted(k for k in set(previous) | set(record) if previous.get(k) != record.get(k))
            raise BenchError(
                f"{out_dir} holds samples made with other settings (they differ in: {', '.join(keys)}; see "
                f"{path}). Mixing them would give numbers that belong to neither run: write to a new run directory "
                "(a new hydra.run.dir), or delete that folder to start again."
            )
        return
    if out_dir.is_dir() and any(out_dir.glob("*.png")):
        raise BenchError(
            f"{out_dir} already holds PNG files but no {SAMPLING_FILE}, so nothing says how they were made. Point "
            "hydra.run.dir at a new folder, or move those files away."
        )


def write_sampling_record(out_dir: str | Path, record: dict[str, Any]) -> None:
    """Write sampling.json into a folder that check_sampling_record accepted, unless it is there already."""
    path = Path(out_dir) / SAMPLING_FILE
    if not path.is_file():
        write_json(path, {"format": SAMPLING_FORMAT, **record})


def png_bytes(image) -> bytes:
    """The image encoded as PNG (lossless: reading it back gives the same pixels)."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _finished_pixels(path: Path):
    """The pixels of a finished sample's PNG, or None when it is missing or damaged (then it is made again)."""
    if not path.is_file():
        return None
    try:
        return load_rgb(path)
    except ImageLoadError as err:
        # Files are written atomically, so this one was damaged after the fact: make it again.
        log.warning("%s; generating it again", err)
        return None


def generate_samples(
    generate: Callable[[list[str], int, int, list[int], int], list[Any]],
    samples: Sequence[Sample],
    *,
    seed: int,
    batch_size: int,
    out_dir: str | Path,
    on_images: Callable[[list[Sample], list[Any]], None] | None = None,
    desc: str = "generating",
    progress: bool = True,
) -> dict[str, int]:
    """Make every sample of `samples` whose PNG is not yet in `out_dir`, in batches, and write each as a PNG.

    generate(prompts, resolution, seed, sample_indices, replica) -> PIL images. A batch holds samples of one
    resolution and replica. on_images(samples, images), if given, sees every image of `samples`: new ones as
    they are made, finished ones read back from their PNG (so streamed metrics cover a resumed run whole).
    Returns counts {"generated", "resumed"} and "timed": {resolution: (seconds, images)}, the wall-clock seconds
    (time.perf_counter) spent in `generate` calls for the images made at each resolution (PNG writing and
    on_images not included; resumed images not timed).
    """
    if batch_size < 1:
        raise BenchError(f"batch_size must be at least 1, got {batch_size}.")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    # One pass over the finished PNGs: each is decoded once, both to check it and (in batches, so memory stays
    # flat) to hand it to on_images.
    done, todo, pending = [], [], []
    for s in samples:
        pixels = _finished_pixels(out_dir / s.file)
        if pixels is None:
            todo.append(s)
            continue
        done.append(s)
        if on_images is not None:
            pending.append((s, Image.fromarray(pixels)))
            if len(pending) == batch_size:
                on_images(*map(list, zip(*pending)))
                pending = []
    if pending:
        on_images(*map(list, zip(*pending)))
    if done:
        log.info("%s: %d of %d samples already in %s; generating the other %d", desc, len(done), len(samples),
                 out_dir, len(todo))

    batches = []
    for _, group in groupby(sorted(todo, key=lambda s: (s.resolution, s.replica, s.record.index)),
                            key=lambda s: (s.resolution, s.replica)):
        group = list(group)
        batches += [group[start : start + batch_size] for start in range(0, len(group), batch_size)]
    timed: dict[int, tuple[float, int]] = {}
    with tqdm(total=len(todo), desc=desc, unit="img", disable=not progress or not todo, dynamic_ncols=True) as bar:
        for batch in batches:
            resolution, replica = batch[0].resolution, batch[0].replica
            start = time.perf_counter()
            with torch.inference_mode():
                images = generate([s.record.prompt for s in batch], resolution, seed, [s.record.index for s in batch],
                                  replica)
            # PIL images are on the host, so a GPU's work for them is finished when generate returns.
            seconds, count = timed.get(resolution, (0.0, 0))
            timed[resolution] = (seconds + time.perf_counter() - start, count + len(batch))
            if len(images) != len(batch):
                raise RuntimeError(f"the model returned {len(images)} images for {len(batch)} prompts")
            for sample, image in zip(batch, images):
                atomic_write_bytes(out_dir / sample.file, png_bytes(image))
            if on_images is not None:
                on_images(batch, list(images))
            bar.update(len(batch))
    return {"generated": len(todo), "resumed": len(done), "timed": timed}
