"""The shapes world's scenes: one to four flat-coloured objects on a plain background, drawn from (split, index).

A scene is its objects' ground truth (shape, colour name, box) and the skill its caption tests. Everything is a
function of (split, index): a scene's randomness comes from numpy's SeedSequence([split seed, index]), so the
dataset is unlimited, needs no storage, and splits never share a scene.

Objects sit on a LATTICE x LATTICE grid of cells: each fills one cell, and any two are at least one empty cell
apart along some axis, so they never touch and the judge can separate them by connected components. The layout is
chosen in cells and only scaled to pixels when drawn, so a scene is the same at every size (a multiple of LATTICE).
The lattice is what makes the world learnable in minutes on a CPU: at the 32 px base size a cell is one 4 px VQ
token, so an object is one token (its shape and colour) rather than a pattern of tokens at any of thousands of
offsets; at 64 px (8 px objects) it is 2x2 tokens, which the super-res stage learns to draw. Objects of several
cells, at any offset, were tried first: a few minutes of training then drew blobs, not shapes. Colours come from a small named palette, far apart in RGB, and shapes differ in how much of
their bounding box they fill (square 1, circle about pi/4, triangle about 1/2), so reading a scene back from
pixels is exact on rendered images.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

# Named colours, far apart in RGB (the judge assigns every pixel to the nearest of these or the background).
PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 160, 50),
    "blue": (30, 70, 220),
    "yellow": (240, 210, 20),
    "purple": (140, 40, 170),
    "orange": (245, 130, 20),
}
BACKGROUND = (245, 245, 245)
SHAPES = ("circle", "square", "triangle")
# GenEval's six skills (djghosh13/geneval), each with its own caption form (bench/shapes/captions.py).
SKILLS = ("single_object", "two_objects", "counting", "colors", "position", "color_attribution")
SPLIT_SEEDS = {"train": 0, "validation": 1, "test": 2}
LATTICE = 8  # cells a side; an object covers OBJECT_CELLS cells a side
OBJECT_CELLS = (1,)
RELATIONS = ("left of", "right of", "above", "below")


@dataclass(frozen=True)
class Obj:
    """One object: its shape, colour name and box (x0, y0, x1, y1), x1 and y1 exclusive."""

    shape: str
    color: str
    box: tuple[int, int, int, int]

    @property
    def center(self) -> tuple[float, float]:
        x0, y0, x1, y1 = self.box
        return (x0 + x1) / 2, (y0 + y1) / 2


@dataclass(frozen=True)
class Scene:
    """A scene's ground truth: the skill its caption tests, its objects, the relation of a position scene (of
    objects[0] to objects[1]) and the canvas size."""

    skill: str
    objects: tuple[Obj, ...]
    size: int
    relation: str | None = None


def relation_of(a: Obj, b: Obj) -> str | None:
    """Where `a` is relative to `b`, when one direction clearly dominates (centres apart by more than a's half
    size along it, and more than along the other axis); None otherwise."""
    (ax, ay), (bx, by) = a.center, b.center
    dx, dy = ax - bx, ay - by
    half = (a.box[2] - a.box[0]) / 2
    if abs(dx) > abs(dy) and abs(dx) > half:
        return "left of" if dx < 0 else "right of"
    if abs(dy) > abs(dx) and abs(dy) > half:
        return "above" if dy < 0 else "below"
    return None


def _place(rng: np.random.Generator, cells: list[int]) -> list[tuple[int, int, int, int]] | None:
    """Boxes in cells, any two separated by at least one empty cell along x or y; None when they do not fit."""
    boxes: list[tuple[int, int, int, int]] = []
    for c in cells:
        for _ in range(200):
            x0, y0 = (int(v) for v in rng.integers(0, LATTICE - c + 1, size=2))
            box = (x0, y0, x0 + c, y0 + c)
            if all(box[2] < b[0] or b[2] < box[0] or box[3] < b[1] or b[3] < box[1] for b in boxes):
                boxes.append(box)
                break
        else:
            return None
    return boxes


def _objects(rng: np.random.Generator, skill: str) -> tuple[list[tuple[str, str]], str | None]:
    colors, shapes = list(PALETTE), list(SHAPES)
    pick = lambda options, k=1: [options[i] for i in rng.choice(len(options), size=k, replace=False)]  # noqa: E731
    if skill in ("single_object", "colors"):
        return [(pick(shapes)[0], pick(colors)[0])], None
    if skill in ("two_objects", "color_attribution", "position"):
        s = pick(shapes, 2)
        c = pick(colors, 2)
        relation = RELATIONS[int(rng.integers(len(RELATIONS)))] if skill == "position" else None
        return [(s[0], c[0]), (s[1], c[1])], relation
    if skill == "counting":
        n = int(rng.integers(2, 5))
        shape = pick(shapes)[0]
        return [(shape, c) for c in (pick(colors)[0] for _ in range(n))], None
    raise ValueError(f"unknown skill {skill!r}: one of {', '.join(SKILLS)}")


def make_scene(index: int, split: str = "train", size: int = 64) -> Scene:
    """Scene `index` of `split` at `size` x `size` pixels (a multiple of LATTICE; the layout does not depend on
    it). Its skill is SKILLS[index % 6], so every six consecutive scenes cover each skill once."""
    if split not in SPLIT_SEEDS:
        raise ValueError(f"unknown split {split!r}: one of {', '.join(SPLIT_SEEDS)}")
    if size < 4 * LATTICE or size % LATTICE:
        raise ValueError(f"scene size {size} must be a multiple of {LATTICE} and at least {4 * LATTICE} px "
                         f"(the judge reads objects from {8 * LATTICE} px on)")
    cell = size // LATTICE
    rng = np.random.default_rng(np.random.SeedSequence([SPLIT_SEEDS[split], int(index)]))
    skill = SKILLS[index % len(SKILLS)]
    # Retry draws until the objects fit (and a position scene shows its relation): a function of the seed still.
    while True:
        specs, relation = _objects(rng, skill)
        boxes = _place(rng, [OBJECT_CELLS[int(rng.integers(len(OBJECT_CELLS)))] for _ in specs])
        if boxes is None:
            continue
        objects = tuple(Obj(shape, color, tuple(v * cell for v in box)) for (shape, color), box in zip(specs, boxes))
        if relation is not None and relation_of(objects[0], objects[1]) != relation:
            continue
        return Scene(skill, objects, size, relation)


def render(scene: Scene) -> Image.Image:
    """The scene's image: flat colours on the background, no antialiasing (edges stay in the palette)."""
    image = Image.new("RGB", (scene.size, scene.size), BACKGROUND)
    draw = ImageDraw.Draw(image)
    for obj in scene.objects:
        x0, y0, x1, y1 = obj.box
        fill = PALETTE[obj.color]
        if obj.shape == "circle":
            draw.ellipse((x0, y0, x1 - 1, y1 - 1), fill=fill)
        elif obj.shape == "square":
            draw.rectangle((x0, y0, x1 - 1, y1 - 1), fill=fill)
        else:  # an upright isosceles triangle filling half its box
            draw.polygon([((x0 + x1 - 1) / 2, y0), (x0, y1 - 1), (x1 - 1, y1 - 1)], fill=fill)
    return image
