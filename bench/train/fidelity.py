"""How faithfully a trained world's VQGAN gives its scenes back: the exact judge on VQ reconstructions.

The judge reads rendered scenes exactly (tests/test_shapes.py); a world's tokenizer must give them back well enough
that it still does, or every generated image is judged through a blur. `vq_read_back` encodes validation scenes,
decodes their tokens and reports how often the judge reads back exactly the scene (`matches_scene`: every object's
shape, colour and box within a pixel) and how often it accepts the scene's own caption. It also reports how far
apart the encoder puts the distinct cells of those scenes (nearest-neighbour distance against the latents' spread):
latents crowded together leave the decoder nothing to tell shapes apart by.

    python -m bench.train.fidelity --world shapes [--scenes 600] [--size 64]

trains the world first if the cache has none, and prints the measurement as JSON.
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch

from bench.shapes.captions import caption
from bench.shapes.judge import detect, judge, matches_scene
from bench.shapes.scenes import make_scene, render


@torch.no_grad()
def vq_read_back(tokenizer, scenes: int = 600, size: int = 64, split: str = "validation", batch: int = 100) -> dict:
    """The judge on `tokenizer`'s (a muse.vqgan.VQTokenizer) reconstructions of the first `scenes` scenes of
    `split` at `size` px: exact read-back rate, caption acceptance rate, distinct codes used, and the encoder's
    separation of distinct cells (see the module docstring)."""
    exact = accepted = 0
    codes, latents = set(), []
    for start in range(0, scenes, batch):
        chunk = [make_scene(i, split, size) for i in range(start, min(scenes, start + batch))]
        images = torch.from_numpy(np.stack([np.asarray(render(s)) for s in chunk])).permute(0, 3, 1, 2).float() / 255
        tokens = tokenizer.encode(images)
        latents.append(tokenizer.latents(images * 2 - 1 if tokenizer.value_range == "-1,1" else images)
                       .permute(0, 2, 3, 1).reshape(-1, tokenizer.vq.config.latent_channels))
        codes.update(tokens.unique().tolist())
        decoded = tokenizer.decode(tokens, size // tokenizer.downsample)
        pixels = (decoded * 255).round().byte().permute(0, 2, 3, 1).numpy()
        for scene, image in zip(chunk, pixels):
            exact += matches_scene(detect(image), scene)
            accepted += judge(image, caption(scene))
    distinct = torch.unique(torch.cat(latents), dim=0)
    gaps = torch.cdist(distinct, distinct).fill_diagonal_(float("inf")).min(1).values
    return {"scenes": scenes, "size": size, "split": split, "exact": exact / scenes, "caption_accepted": accepted / scenes,
            "codes_used": len(codes), "distinct_cell_latents": len(distinct),
            "nearest_latent_distance_median": float(gaps.median()), "nearest_latent_distance_min": float(gaps.min()),
            "latent_spread": float(distinct.std(0).mean())}


def main(argv: list[str] | None = None) -> None:
    from bench.train.world import ensure_world
    from muse import MusePipeline

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--world", default="shapes", help="a training recipe (bench/train/recipe.py)")
    parser.add_argument("--scenes", type=int, default=600)
    parser.add_argument("--size", type=int, default=64)
    args = parser.parse_args(argv)
    pipe = MusePipeline.from_pretrained(str(ensure_world(args.world) / "pipeline"))
    print(json.dumps({"world": args.world, **vq_read_back(pipe.vq_superres, args.scenes, args.size)}, indent=2))


if __name__ == "__main__":
    main()
