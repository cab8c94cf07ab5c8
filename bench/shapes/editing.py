"""Editing made measurable on the shapes world: zero-shot inpainting (muse/editing.py) scored by the exact judge.

An inpainting trial takes a test scene of one object, picks a 3x3-cell block of empty cells away from it, masks
that block and asks for the scene's object plus a new one ("a red circle and a blue square", the grammar's
color_attribution form). It succeeds when the judge finds the new object inside the block and the old object
where it was. Outside the block the tokens are kept by construction (muse.editing.inpaint regenerates only the
masked tokens); `outside_change` measures what reaches the pixels there through the VQ decoder: the largest
difference, in 8-bit levels, from the VQ reconstruction of the original, away from the block's border token.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bench.shapes.captions import article
from bench.shapes.judge import detect
from bench.shapes.scenes import LATTICE, PALETTE, SHAPES, Obj, make_scene, render


@dataclass(frozen=True)
class InpaintTrial:
    """One inpainting trial: the scene, the block (x0, y0, x1, y1) in pixels, the prompt and the object asked for."""

    scene_index: int
    block: tuple[int, int, int, int]
    prompt: str
    wanted: Obj
    kept: Obj


def inpaint_trials(n: int, size: int = 64, split: str = "test") -> list[InpaintTrial]:
    """The first `n` trials over one-object scenes of `split`, each a function of its scene index alone."""
    trials, index = [], 0
    cell = size // LATTICE
    while len(trials) < n:
        scene = make_scene(index, split, size)
        index += 1
        if len(scene.objects) != 1:
            continue
        kept = scene.objects[0]
        kx, ky = kept.box[0] // cell, kept.box[1] // cell
        rng = np.random.default_rng([7, index])
        # 3x3 blocks of cells that keep at least one empty cell between them and the kept object.
        blocks = [(x, y) for x in range(LATTICE - 2) for y in range(LATTICE - 2)
                  if not (x - 1 <= kx <= x + 3 and y - 1 <= ky <= y + 3)]
        bx, by = blocks[int(rng.integers(len(blocks)))]
        shape = SHAPES[int(rng.integers(len(SHAPES)))]
        color = [c for c in PALETTE if c != kept.color][int(rng.integers(len(PALETTE) - 1))]
        block = (bx * cell, by * cell, (bx + 3) * cell, (by + 3) * cell)
        prompt = f"{article(kept.color)} {kept.color} {kept.shape} and {article(color)} {color} {shape}"
        trials.append(InpaintTrial(index - 1, block, prompt, Obj(shape, color, block), kept))
    return trials


def _inside(obj: Obj, box: tuple[int, int, int, int], slack: int = 1) -> bool:
    return (obj.box[0] >= box[0] - slack and obj.box[1] >= box[1] - slack and obj.box[2] <= box[2] + slack
            and obj.box[3] <= box[3] + slack)


def inpaint_success(pipe, trials: list[InpaintTrial], *, resolution: int = 64, seed: int = 0,
                    guidance_scale: float | None = None, split: str = "test") -> dict:
    """Run each trial through muse.editing.inpaint; the success rate, and per trial what the judge found."""
    from PIL import Image

    from muse.editing import inpaint

    rows = []
    for trial in trials:
        original = render(make_scene(trial.scene_index, split, resolution))
        mask = np.zeros((resolution, resolution), dtype=bool)
        x0, y0, x1, y1 = trial.block
        mask[y0:y1, x0:x1] = True
        out = inpaint(pipe, original, Image.fromarray(mask), trial.prompt, resolution=resolution,
                      seed=seed + trial.scene_index, guidance_scale=guidance_scale)
        found = detect(out.images[0])
        new = any(o.shape == trial.wanted.shape and o.color == trial.wanted.color and _inside(o, trial.block)
                  for o in found)
        kept = any(o.shape == trial.kept.shape and o.color == trial.kept.color and _inside(o, trial.kept.box)
                   for o in found)
        rows.append({"scene": trial.scene_index, "prompt": trial.prompt, "new_object_in_block": new,
                     "old_object_kept": kept, "success": new and kept})
    rate = float(np.mean([r["success"] for r in rows])) if rows else None
    return {"success_rate": rate, "n": len(rows), "trials": rows}
