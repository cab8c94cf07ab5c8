"""Training a whole world from its recipe, and finding it in the cache.

`train_world(recipe, folder)` trains four stages in order, each resumable (bench/train/loop.py):
1. vq: the f=4 VQGAN (diffusers VQModel, its encoder reading each 4x4 cell on its own) on crops around objects
   of the 64 px and the 32 px images (bench.train.data.object_crops): recipe.vq_autoencoder_steps as a plain
   autoencoder, then the codebook set to
   k-means of the encoder's distinct outputs, then decoder and codebook with quantisation, the encoder fixed
   (muse.training.vq_loss). Both stages of the cascade use this one tokenizer.
2. base: the base transformer and the text encoder together (the T5 encoder is trained, not frozen: a random
   frozen one reads the grammar's words far more slowly), MaskGIT's objective on the 32 px images' 8x8 tokens,
   recipe.text_dropout of the captions replaced by the empty prompt.
3. superres: the super-res transformer on the 64 px images' 16x16 tokens given the 32 px images' tokens, text
   encoder frozen.
4. clip: the world's CLIP (bench/train/clip.py).
Then the pipeline is saved with MusePipeline.save_pretrained into pipeline/, the CLIP into clip/, what was trained
and how long it took into training.json, and last a COMPLETE file with the sha256 of every exported file.

`ensure_world(name, cache_dir)` returns the folder of a trained world, training it first when the cache has none.
A cached world whose files do not match COMPLETE's hashes is corrupt: it is named, deleted and retrained, never
used.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from pathlib import Path

import torch

from bench.core.errors import BenchError
from bench.core.results import file_sha256
from bench.shapes.scenes import BACKGROUND
from bench.train import clip as world_clip
from bench.train.data import ScenePool, object_crops, to_unit
from bench.train.loop import Ranks, run_stage
from bench.train.recipe import WorldRecipe, get_recipe
from muse import MusePipeline
from muse.training import drop_text, masked_token_loss, vq_loss

log = logging.getLogger(__name__)

COMPLETE_FILE = "COMPLETE"
DEFAULT_CACHE = "~/.cache/muse-bench"


def world_folder(recipe: WorldRecipe, cache_dir: str | os.PathLike | None = None) -> Path:
    """Where a recipe's world lives: <cache_dir>/worlds/<name>-<key>/ (cache_dir: MUSE_BENCH_CACHE or
    ~/.cache/muse-bench)."""
    root = Path(cache_dir or os.environ.get("MUSE_BENCH_CACHE") or DEFAULT_CACHE).expanduser()
    return root / "worlds" / recipe.folder_name


def _exported_files(folder: Path) -> list[Path]:
    return sorted(p for sub in ("pipeline", "clip") for p in (folder / sub).rglob("*") if p.is_file())


def check_complete(folder: Path) -> bool:
    """Whether `folder` holds a finished world whose exported files match COMPLETE's hashes. A mismatch raises
    BenchError naming the first file that differs."""
    marker = folder / COMPLETE_FILE
    if not marker.is_file():
        return False
    try:
        recorded = json.loads(marker.read_text(encoding="utf-8"))["sha256"]
    except (ValueError, KeyError) as err:
        raise BenchError(f"{marker} is unreadable ({err}).") from err
    present = {str(p.relative_to(folder)): p for p in _exported_files(folder)}
    for name in sorted(set(recorded) | set(present)):
        if name not in present or name not in recorded or file_sha256(present[name]) != recorded[name]:
            raise BenchError(f"{folder / name} does not match the hash recorded when the world was trained.")
    return True


def ensure_world(name: str, cache_dir: str | os.PathLike | None = None, *, progress: bool = True) -> Path:
    """The folder of the trained world of recipe `name`, training it first (minutes, with progress bars) when the
    cache has none. A corrupt cached world is named in a warning, deleted and retrained."""
    recipe = get_recipe(name, setting="model.world")
    folder = world_folder(recipe, cache_dir)
    try:
        if check_complete(folder):
            return folder
    except BenchError as err:
        log.warning("The cached world is corrupt: %s Deleting %s and training it again.", err, folder)
        if Ranks.current().rank == 0:
            shutil.rmtree(folder)
    log.info("Training the %s world into %s (a few minutes on a CPU; later runs reuse it). Train it ahead with: "
             "muse-bench job=train train.recipe=%s", name, folder, name)
    train_world(recipe, folder, progress=progress)
    return folder


@torch.no_grad()
def _kmeans(points: torch.Tensor, k: int, generator: torch.Generator, iterations: int = 15) -> torch.Tensor:
    """k-means centres of the distinct rows of `points` [N, D] (a cell-wise encoder gives every equal cell the
    same latent, so duplicates would only weigh the background), started from k of them; empty clusters keep
    their centre. With fewer than k distinct rows, the centres repeat them."""
    points = torch.unique(points, dim=0)
    if len(points) <= k:
        return points[torch.arange(k) % len(points)].clone()
    centres = points[torch.randperm(len(points), generator=generator)[:k]].clone()
    for _ in range(iterations):
        assign = torch.cdist(points, centres).argmin(1)
        sums = torch.zeros_like(centres).index_add_(0, assign, points)
        counts = torch.bincount(assign, minlength=k).float()
        filled = counts > 0
        centres[filled] = sums[filled] / counts[filled, None]
    return centres


def foreground_weight(images: torch.Tensor, weight: float, cell: int = 4) -> torch.Tensor:
    """Per-pixel loss weights [B, 1, H, W]: 1 in background cells, 1 + weight in every `cell` x `cell` cell that
    holds some of an object (a few percent of the pixels, whose colours a plain mean learns many times more slowly:
    measured 0.21 against 0.07 mean L1 on object pixels after 600 steps). Whole cells, not object pixels: the
    background corners of a circle's or a triangle's cells are what tells its shape from a square's."""
    background = (torch.tensor(BACKGROUND, dtype=images.dtype) / 255 * 2 - 1).view(1, 3, 1, 1)
    objects = ((images - background).abs().sum(1, keepdim=True) > 0.02).to(images.dtype)
    cells = torch.nn.functional.max_pool2d(objects, cell)
    return 1 + weight * torch.nn.functional.interpolate(cells, scale_factor=cell, mode="nearest")


@torch.no_grad()
def _tokens(pipe: MusePipeline, images: torch.Tensor, batch: int = 256) -> torch.Tensor:
    return torch.cat([pipe.vq_base.encode(to_unit(images[i:i + batch])) for i in range(0, len(images), batch)])


def train_world(recipe: WorldRecipe, folder: Path, *, progress: bool = True) -> dict:
    """Train every stage of `recipe` into `folder` (resuming what is there) and export the world; returns the
    training record (also written to training.json)."""
    ranks = Ranks.current()
    began = time.perf_counter()
    checkpoints = folder / "checkpoints"
    pool = ScenePool(recipe.train_scenes)
    pipe = MusePipeline.from_preset(recipe.preset, seed=recipe.seed)
    if pipe.config.base_resolution * 2 != pool.high.shape[-1]:
        raise BenchError(f"recipe {recipe.name}: preset {recipe.preset} does not make 32 and 64 px images.")
    for module in pipe.modules().values():
        module.requires_grad_(True)
    record: dict = {"recipe": recipe.to_dict(), "key": recipe.key, "world_size": ranks.world_size, "stages": {}}
    common = dict(seed=recipe.seed, checkpoint_every=recipe.checkpoint_every, progress=progress)

    # 1. VQGAN
    vq = pipe.vq_base.vq
    crop = recipe.vq_crop

    def vq_step(step, shared, local):
        # Half the batch is crops of the 64 px images, half crops of the 32 px images: the one tokenizer serves
        # both stages, and a 32 px object (one cell) is a pattern a 64 px image never shows. The global batch's
        # crops are drawn before this process takes its share, so a step sees the same crops whatever the number
        # of processes.
        idx = pool.draw(recipe.vq.batch, shared)
        half = len(idx) // 2
        images = torch.cat([object_crops(pool.high[idx[:half]], crop, shared),
                            object_crops(pool.low[idx[half:]], crop, shared)])
        images = images[ranks.part(torch.arange(len(images)))]
        # After the codebook is set, the encoder stays as it is: training it through the quantiser merged codes
        # within a few hundred steps (74 distinct cells of the pool ended on 12 codes).
        quantize = step >= recipe.vq_autoencoder_steps
        images = to_unit(images) * 2 - 1
        return vq_loss(pipe.vq_base, images, quantize=quantize, train_encoder=not quantize,
                       weight=foreground_weight(images, recipe.vq_foreground_weight))

    def init_codebook(step):
        if step != recipe.vq_autoencoder_steps:
            return
        generator = torch.Generator().manual_seed(recipe.seed)
        with torch.no_grad():
            latents = torch.cat([pipe.vq_base.latents(to_unit(images[:512]) * 2 - 1).permute(0, 2, 3, 1)
                                 .reshape(-1, vq.config.latent_channels) for images in (pool.high, pool.low)])
            vq.quantize.embedding.weight.copy_(_kmeans(latents, vq.config.num_vq_embeddings, generator))

    meta = {"recipe": recipe.key}
    record["stages"]["vq"] = run_stage("vq", {"vq": vq}, vq_step, recipe.vq, checkpoint=checkpoints / "vq.safetensors",
                                       meta=meta, before_step=init_codebook, **common).__dict__
    pipe.vq_superres.vq.load_state_dict(vq.state_dict())
    low_tokens, high_tokens = _tokens(pipe, pool.low), _tokens(pipe, pool.high)

    # 2. base transformer + text encoder
    def base_step(step, shared, local):
        idx = ranks.part(pool.draw(recipe.base.batch, shared))
        prompts = drop_text([pool.captions[i] for i in idx], recipe.text_dropout, local)
        loss = masked_token_loss(pipe.base, low_tokens[idx], pipe.text_encoder.embed(prompts), local)
        return loss, {}

    record["stages"]["base"] = run_stage(
        "base", {"text_encoder": pipe.text_encoder.model, "base": pipe.base}, base_step, recipe.base,
        checkpoint=checkpoints / "base.safetensors", meta=meta, **common).__dict__

    # 3. super-res transformer (text encoder frozen)
    pipe.text_encoder.model.requires_grad_(False).eval()

    def superres_step(step, shared, local):
        idx = ranks.part(pool.draw(recipe.superres.batch, shared))
        prompts = drop_text([pool.captions[i] for i in idx], recipe.text_dropout, local)
        with torch.no_grad():
            text = pipe.text_encoder.embed(prompts)
        loss = masked_token_loss(pipe.superres, high_tokens[idx], text, local, low_tokens=low_tokens[idx])
        return loss, {}

    record["stages"]["superres"] = run_stage(
        "superres", {"superres": pipe.superres}, superres_step, recipe.superres,
        checkpoint=checkpoints / "superres.safetensors", meta=meta, **common).__dict__

    # 4. CLIP
    import open_clip

    clip_folder = folder / "clip"
    torch.manual_seed(recipe.seed)  # open_clip initialises from the global generator
    model = world_clip.build_clip(recipe.clip_shape.open_clip_config(), clip_folder)
    tokenizer = open_clip.get_tokenizer(world_clip.CLIP_NAME)
    clip_loss = open_clip.ClipLoss(rank=ranks.rank, world_size=ranks.world_size)

    def clip_step(step, shared, local):
        idx = ranks.part(pool.draw(recipe.clip.batch, shared))
        images = world_clip.normalise(model, to_unit(pool.high[idx]))
        image_features, text_features, logit_scale = model(images, tokenizer([pool.captions[i] for i in idx]))[:3]
        loss = clip_loss(image_features, text_features, logit_scale)
        return loss, {}

    record["stages"]["clip"] = run_stage("clip", {"clip": model}, clip_step, recipe.clip,
                                         checkpoint=checkpoints / "clip.safetensors", meta=meta, **common).__dict__

    if ranks.rank == 0:
        _export(pipe, model, folder, record, time.perf_counter() - began)
    if ranks.world_size > 1:
        torch.distributed.barrier()
    return record


def _export(pipe: MusePipeline, clip_model, folder: Path, record: dict, seconds: float) -> None:
    from safetensors.torch import save_file

    for module in pipe.modules().values():
        module.requires_grad_(False).eval()
    shutil.rmtree(folder / "pipeline", ignore_errors=True)
    pipe.save_pretrained(str(folder / "pipeline"))
    state = {k: v.detach().contiguous() for k, v in clip_model.state_dict().items()}
    save_file(state, str(folder / "clip" / world_clip.WEIGHTS_FILE))
    record["seconds"] = seconds
    (folder / "training.json").write_text(json.dumps(record, indent=2), encoding="utf-8")
    hashes = {str(p.relative_to(folder)): file_sha256(p) for p in _exported_files(folder)}
    tmp = folder / (COMPLETE_FILE + ".tmp")
    tmp.write_text(json.dumps({"key": record["key"], "sha256": hashes}, indent=2), encoding="utf-8")
    os.replace(tmp, folder / COMPLETE_FILE)
