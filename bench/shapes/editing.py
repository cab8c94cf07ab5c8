"""Editing made measurable on the shapes world: Muse's zero-shot editing (muse/editing.py) scored by the exact judge.

Three kinds of trial, each built from a test scene and a function of its index alone (scenes are drawn in order and
those that do not fit the task are skipped; a trial's choices come from numpy's default_rng([tag, scene index])):

- inpainting: a scene of one object; a 3x3-cell block of empty cells at least a cell away from it is masked and
  the prompt asks for the scene's object plus a new one ("a red circle and a blue square", the grammar's
  color_attribution form). Success: the judge finds the new object inside the block and the old one where it was.
- outpainting: a scene of two objects (two_objects, color_attribution or position: two shapes, two colours); a box
  of one object's cell and a cell around it is kept, everything else is regenerated with the colour-attribution
  caption of both objects. Success: the kept object is read back unchanged (shape, colour, box within a pixel) and
  the other asked object appears wholly outside the kept box.
- mask-free editing (Muse section 2.6): a scene of one object, the prompt naming it with another colour (colour
  edit) or another shape (shape edit). Success: the judge finds the new (shape, colour) at the object's place (box
  within its cell, give or take a pixel) and the old (shape, colour) nowhere.

What stays unchanged is measured against the VQ reconstruction of the original (decoding the original's tokens),
not the original itself: kept tokens can only ever give that back. `outside_change` is the largest difference, in
8-bit levels, over the pixels the edit must leave alone, a token's width away from the edited region's border
(the decoder's convolutions carry a changed token a little way into its neighbours); `outside_changed` the share
of those pixels that differ by more than CHANGE_LEVELS. For inpainting and outpainting the region left alone is
outside the mask; mask-free editing has no mask, and the region left alone is everything a cell or more away from
the edited object. `reconstruction_kept` says whether the judge reads the kept (or, for edits, the old) object from
that reconstruction: the ceiling of what keeping tokens can keep with this VQGAN.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image

from bench.shapes.captions import article
from bench.shapes.judge import detect
from bench.shapes.scenes import LATTICE, PALETTE, SHAPES, Obj, Scene, make_scene, render

# The tasks a run can ask for, and the trial kinds each one runs (mask-free editing reports colour and shape edits
# apart: they test different things, a token's colour against its shape).
TASKS = {"inpaint": ("inpaint",), "outpaint": ("outpaint",), "edit": ("edit_color", "edit_shape")}
KINDS = ("inpaint", "outpaint", "edit_color", "edit_shape")
# A pixel counts as changed when a channel moved by more than this many 8-bit levels (a quarter of the smallest
# distance between two palette colours, so a change of colour always counts and decoder rounding never does).
CHANGE_LEVELS = 20
# The tags of each kind's random choices, so that two kinds drawing from the same scene choose independently.
_TAGS = {"outpaint": 11, "edit_color": 13, "edit_shape": 17}
TWO_OBJECT_SKILLS = ("two_objects", "color_attribution", "position")

Box = tuple[int, int, int, int]


def _two_object_caption(a: Obj, b: Obj) -> str:
    """The grammar's colour-attribution caption of two objects ("a red circle and a blue square")."""
    return f"{article(a.color)} {a.color} {a.shape} and {article(b.color)} {b.color} {b.shape}"


def _inside(obj: Obj, box: Box, slack: int = 1) -> bool:
    return (obj.box[0] >= box[0] - slack and obj.box[1] >= box[1] - slack and obj.box[2] <= box[2] + slack
            and obj.box[3] <= box[3] + slack)


def _disjoint(obj: Obj, box: Box) -> bool:
    return obj.box[2] <= box[0] or box[2] <= obj.box[0] or obj.box[3] <= box[1] or box[3] <= obj.box[1]


def _grow(box: Box, by: int, size: int) -> Box:
    """The box grown by `by` pixels on every side (shrunk for negative `by`), clipped to the image."""
    return (max(0, box[0] - by), max(0, box[1] - by), min(size, box[2] + by), min(size, box[3] + by))


def _box_mask(box: Box, size: int) -> np.ndarray:
    mask = np.zeros((size, size), dtype=bool)
    mask[box[1]:box[3], box[0]:box[2]] = True
    return mask


def _has(found: list[Obj], want: Obj, where: Box | None = None) -> bool:
    """Whether an object of want's shape and colour was found (inside `where`, give or take a pixel, if given)."""
    return any(o.shape == want.shape and o.color == want.color and (where is None or _inside(o, where))
               for o in found)


@dataclass(frozen=True)
class InpaintTrial:
    """One inpainting trial: the scene, the block (x0, y0, x1, y1) in pixels, the prompt and the object asked for."""

    scene_index: int
    block: Box
    prompt: str
    wanted: Obj
    kept: Obj
    size: int = 64
    kind: str = field(default="inpaint", init=False)

    def edited(self) -> np.ndarray:
        """The pixels the edit regenerates (True), at `size`."""
        return _box_mask(self.block, self.size)

    def judged(self, found: list[Obj]) -> dict[str, bool]:
        """What the judge's objects say about this trial: each condition of success, and success."""
        new, kept = _has(found, self.wanted, self.block), _has(found, self.kept, self.kept.box)
        return {"new_object_in_block": new, "old_object_kept": kept, "success": new and kept}


@dataclass(frozen=True)
class OutpaintTrial:
    """One outpainting trial: the scene, the kept box (x0, y0, x1, y1) in pixels, the prompt, the kept object and
    the other object asked for (its box is where the scene had it; it may appear anywhere outside the kept box)."""

    scene_index: int
    keep: Box
    prompt: str
    kept: Obj
    wanted: Obj
    size: int = 64
    kind: str = field(default="outpaint", init=False)

    def edited(self) -> np.ndarray:
        """The pixels the edit regenerates (True), at `size`: everything outside the kept box."""
        return ~_box_mask(self.keep, self.size)

    def judged(self, found: list[Obj]) -> dict[str, bool]:
        """What the judge's objects say about this trial: each condition of success, and success."""
        kept = _has(found, self.kept, self.kept.box)
        new = any(o.shape == self.wanted.shape and o.color == self.wanted.color and _disjoint(o, self.keep)
                  for o in found)
        return {"kept_object_unchanged": kept, "new_object_outside": new, "success": kept and new}


@dataclass(frozen=True)
class EditTrial:
    """One mask-free editing trial: the scene, the kind (edit_color or edit_shape), the prompt, the scene's object
    (old) and the object asked for in its place (wanted, with old's box)."""

    scene_index: int
    kind: str
    prompt: str
    old: Obj
    wanted: Obj
    size: int = 64

    def edited(self) -> np.ndarray:
        """Where the edit is meant to happen (True): the object's cell and one cell around it. Mask-free editing
        may change any token; the rest of the image is what it should leave alone."""
        return _box_mask(_grow(self.old.box, self.size // LATTICE, self.size), self.size)

    def judged(self, found: list[Obj]) -> dict[str, bool]:
        """What the judge's objects say about this trial: each condition of success, and success."""
        new, old = _has(found, self.wanted, self.old.box), _has(found, self.old)
        return {"new_object_in_place": new, "old_object_gone": not old, "success": new and not old}


Trial = InpaintTrial | OutpaintTrial | EditTrial
# Each kind's conditions of success, in the order a report lists them.
CONDITIONS = {
    "inpaint": ("new_object_in_block", "old_object_kept"),
    "outpaint": ("kept_object_unchanged", "new_object_outside"),
    "edit_color": ("new_object_in_place", "old_object_gone"),
    "edit_shape": ("new_object_in_place", "old_object_gone"),
}


def _check_size(size: int) -> None:
    # The judge reads objects from 8 px on (8 px cells at 64 px); smaller scenes would fail every trial silently.
    if size < 8 * LATTICE or size % LATTICE:
        raise ValueError(f"editing trials need a size that is a multiple of {LATTICE} and at least {8 * LATTICE} px "
                         f"(the judge reads objects from 8 px cells on), got {size}")


def _scenes(split: str, size: int, fits):
    """(scene index, scene) of `split` in order, those that `fits` accepts."""
    index = 0
    while True:
        scene = make_scene(index, split, size)
        if fits(scene):
            yield index, scene
        index += 1


def inpaint_trials(n: int, size: int = 64, split: str = "test") -> list[InpaintTrial]:
    """The first `n` trials over one-object scenes of `split`, each a function of its scene index alone."""
    _check_size(size)
    trials = []
    cell = size // LATTICE
    for index, scene in _scenes(split, size, lambda s: len(s.objects) == 1):
        if len(trials) >= n:
            break
        kept = scene.objects[0]
        kx, ky = kept.box[0] // cell, kept.box[1] // cell
        rng = np.random.default_rng([7, index + 1])
        # 3x3 blocks of cells that keep at least one empty cell between them and the kept object.
        blocks = [(x, y) for x in range(LATTICE - 2) for y in range(LATTICE - 2)
                  if not (x - 1 <= kx <= x + 3 and y - 1 <= ky <= y + 3)]
        bx, by = blocks[int(rng.integers(len(blocks)))]
        shape = SHAPES[int(rng.integers(len(SHAPES)))]
        color = [c for c in PALETTE if c != kept.color][int(rng.integers(len(PALETTE) - 1))]
        block = (bx * cell, by * cell, (bx + 3) * cell, (by + 3) * cell)
        prompt = _two_object_caption(kept, Obj(shape, color, block))
        trials.append(InpaintTrial(index, block, prompt, Obj(shape, color, block), kept, size))
    return trials


def outpaint_trials(n: int, size: int = 64, split: str = "test") -> list[OutpaintTrial]:
    """The first `n` outpainting trials over the two-object scenes of `split` (see the module docstring), each a
    function of its scene index alone. The kept box is one object's cell and a cell around it, so the other object
    (at least a cell away along some axis) is always outside it."""
    _check_size(size)
    trials = []
    cell = size // LATTICE
    for index, scene in _scenes(split, size, lambda s: s.skill in TWO_OBJECT_SKILLS):
        if len(trials) >= n:
            break
        k = int(np.random.default_rng([_TAGS["outpaint"], index]).integers(2))
        kept, other = scene.objects[k], scene.objects[1 - k]
        prompt = _two_object_caption(*scene.objects)
        trials.append(OutpaintTrial(index, _grow(kept.box, cell, size), prompt, kept, other, size))
    return trials


def edit_trials(n: int, kind: str, size: int = 64, split: str = "test") -> list[EditTrial]:
    """The first `n` mask-free editing trials of `kind` (edit_color: another colour, same shape; edit_shape:
    another shape, same colour) over the one-object scenes of `split`, each a function of its scene index alone."""
    if kind not in ("edit_color", "edit_shape"):
        raise ValueError(f"unknown edit kind {kind!r}: edit_color or edit_shape")
    _check_size(size)
    trials = []
    for index, scene in _scenes(split, size, lambda s: len(s.objects) == 1):
        if len(trials) >= n:
            break
        old = scene.objects[0]
        rng = np.random.default_rng([_TAGS[kind], index])
        if kind == "edit_color":
            others = [c for c in PALETTE if c != old.color]
            wanted = Obj(old.shape, others[int(rng.integers(len(others)))], old.box)
        else:
            others = [s for s in SHAPES if s != old.shape]
            wanted = Obj(others[int(rng.integers(len(others)))], old.color, old.box)
        prompt = f"{article(wanted.color)} {wanted.color} {wanted.shape}"
        trials.append(EditTrial(index, kind, prompt, old, wanted, size))
    return trials


def make_trials(kind: str, n: int, size: int = 64, split: str = "test") -> list[Trial]:
    """The first `n` trials of one of KINDS."""
    if kind == "inpaint":
        return inpaint_trials(n, size, split)
    if kind == "outpaint":
        return outpaint_trials(n, size, split)
    if kind in ("edit_color", "edit_shape"):
        return edit_trials(n, kind, size, split)
    raise ValueError(f"unknown editing trial kind {kind!r}: one of {', '.join(KINDS)}")


@dataclass
class EditSettings:
    """How trials are run: resolution, the CFG scale g of every stage (None = the model's own), and the mask-free
    editor's iterations, resampled share of base tokens per iteration and top-k (muse.editing.edit)."""

    resolution: int = 64
    guidance_scale: float | None = None
    iterations: int = 30
    resample_fraction: float = 0.08
    top_k: int | None = 3

    def protocol(self, kind: str) -> dict[str, Any]:
        """The settings that move a kind's results, as results.json records them."""
        out: dict[str, Any] = {"resolution": self.resolution, "guidance": self.guidance_scale}
        if kind.startswith("edit_"):
            out |= {"iterations": self.iterations, "resample_fraction": self.resample_fraction, "top_k": self.top_k}
        return out


@dataclass
class TrialResult:
    """One trial run: its results.json row (scene, prompt, conditions, success, unchanged-region measures) and
    the images (original, edited-region mask as an image, result)."""

    row: dict[str, Any]
    original: Image.Image
    mask: Image.Image
    result: Image.Image


def _reconstruction(pipe, image: Image.Image, resolution: int) -> np.ndarray:
    """The original through the VQGAN of the stage that makes `resolution`: what keeping its tokens gives back."""
    import torch

    vq = pipe.vq_superres if resolution > pipe.config.base_resolution else pipe.vq_base
    pixels = torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0).permute(2, 0, 1)[None]
    with torch.no_grad():
        tokens = vq.encode(pixels.to(pipe.device))
        pixels = pipe.decode_tokens(tokens, resolution, threads=1)[0]
    return np.asarray((pixels.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).cpu())


def token_pixels(pipe, resolution: int) -> int:
    """The width in pixels of one token of the stage that makes `resolution` (the border left out of
    `outside_change`)."""
    vq = pipe.vq_superres if resolution > pipe.config.base_resolution else pipe.vq_base
    return vq.downsample


def _left_alone(edited: np.ndarray, border: int) -> np.ndarray:
    """The pixels at least `border` pixels (Chebyshev) away from every edited pixel."""
    from scipy import ndimage

    near = ndimage.binary_dilation(edited, structure=np.ones((2 * border + 1, 2 * border + 1), dtype=bool))
    return ~near


def run_trial(pipe, trial: Trial, settings: EditSettings, *, seed: int = 0, split: str = "test") -> TrialResult:
    """Run one trial through muse.editing (seed + scene index is its sampling seed) and judge it."""
    from muse.editing import edit, inpaint, outpaint

    resolution = settings.resolution
    if trial.size != resolution:
        raise ValueError(f"trial made at {trial.size} px run at {resolution} px: make the trials at the resolution")
    original = render(make_scene(trial.scene_index, split, resolution))
    edited = trial.edited()
    trial_seed = seed + trial.scene_index
    common = dict(resolution=resolution, seed=trial_seed, guidance_scale=settings.guidance_scale)
    if isinstance(trial, InpaintTrial):
        out = inpaint(pipe, original, Image.fromarray(edited), trial.prompt, **common)
    elif isinstance(trial, OutpaintTrial):
        out = outpaint(pipe, original, trial.keep, trial.prompt, **common)
    else:
        out = edit(pipe, original, trial.prompt, iterations=settings.iterations,
                   resample_fraction=settings.resample_fraction, top_k=settings.top_k, **common)
    result = out.images[0]
    found = detect(result)
    reconstruction = _reconstruction(pipe, original, resolution)
    left = _left_alone(edited, token_pixels(pipe, resolution))
    change = np.abs(np.asarray(result.convert("RGB"), dtype=np.int16) - reconstruction.astype(np.int16)).max(-1)[left]
    reference = trial.old if isinstance(trial, EditTrial) else trial.kept
    row = {"kind": trial.kind, "scene": trial.scene_index, "seed": trial_seed, "prompt": trial.prompt,
           **trial.judged(found),
           "reconstruction_kept": _has(detect(reconstruction), reference, reference.box),
           "outside_change": int(change.max()) if change.size else 0,
           "outside_changed": float((change > CHANGE_LEVELS).mean()) if change.size else 0.0,
           "found": [[o.shape, o.color, list(o.box)] for o in found]}
    return TrialResult(row, original, Image.fromarray(np.where(edited, 255, 0).astype(np.uint8)), result)


def target_image(trial: Trial) -> Image.Image:
    """What a trial asks for, drawn: the scene with the edit made (the kept or old object replaced or joined by
    the wanted one at the place the trial names); for outpainting the wanted object at the scene's place, which
    is only one of the places where it may appear."""
    if isinstance(trial, EditTrial):
        objects: tuple[Obj, ...] = (trial.wanted,)
    else:
        wanted = trial.wanted
        if isinstance(trial, InpaintTrial):  # the block's middle cell
            cell = trial.size // LATTICE
            x, y = trial.block[0] + cell, trial.block[1] + cell
            wanted = Obj(wanted.shape, wanted.color, (x, y, x + cell, y + cell))
        objects = (trial.kept, wanted)
    return render(Scene("color_attribution", objects, trial.size))


def rate(values: list[bool]) -> tuple[float | None, float | None]:
    """A success rate and its binomial standard error sqrt(p (1 - p) / n); (None, None) for no trials."""
    if not values:
        return None, None
    p = float(np.mean(values))
    return p, float(np.sqrt(p * (1 - p) / len(values)))


def inpaint_success(pipe, trials: list[InpaintTrial], *, resolution: int = 64, seed: int = 0,
                    guidance_scale: float | None = None, split: str = "test") -> dict:
    """Run each trial through muse.editing.inpaint; the success rate, and per trial what the judge found."""
    settings = EditSettings(resolution=resolution, guidance_scale=guidance_scale)
    rows = [run_trial(pipe, trial, settings, seed=seed, split=split).row for trial in trials]
    return {"success_rate": rate([r["success"] for r in rows])[0], "n": len(rows), "trials": rows}
