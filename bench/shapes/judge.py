"""The exact judge of the shapes world: objects read back from pixels, and a prompt's request checked against them.

Reading: every pixel goes to the nearest palette colour or the background (RGB distance); each colour's connected
regions of at least MIN_AREA pixels, near-square boxes that they fill at least MIN_FILL of, and pixels within
MAX_COLOR_DISTANCE of their colour on average are objects (other regions are blobs or noise, which a detector would
not be confident of), and a region's shape is read from how much of its
bounding box it fills (square about 1, circle about pi/4, triangle about 1/2). Checking, per skill as GenEval does it
(djghosh13/geneval): the asked shapes present (two_objects, single_object), exactly the asked count (counting),
with the asked colours bound to the asked shapes (colors, color_attribution), in the asked relation (position,
by bench.shapes.scenes.relation_of). The judge reads the prompt only (bench/shapes/captions.py), never a scene.
"""

from __future__ import annotations

import numpy as np
from PIL import Image
from scipy import ndimage

from bench.shapes.captions import Request, parse
from bench.shapes.scenes import BACKGROUND, PALETTE, Obj, Scene, relation_of

MIN_AREA = 12  # pixels: smaller regions are specks (a decoder's stray pixels), not objects
# What makes a region an object rather than a blob, as a detector's confidence threshold does in GenEval: every
# object of the world has a square box, so a region whose box is far from square is not one (sides may differ by
# MAX_SKEW of the longer, or 2 px); and a triangle fills about half its box, so a region filling less than
# MIN_FILL of it is a fragment or a ring, not a shape. Rendered scenes pass both at every size (tests).
MAX_SKEW = 0.2
MIN_FILL = 0.4
# And an object is flat-coloured: its pixels lie on average within this RGB distance of its palette colour (the
# palette's colours are 80 or more apart). A region that is only nearest to a colour, like the colour noise of
# random weights (about 94 from every palette colour on average), is not an object.
MAX_COLOR_DISTANCE = 40.0
# Fill ratio of the bounding box above which a region is a square, and above which (below that) a circle: rendered
# at 32 px and up, squares fill 1, circles 0.667-0.812 and triangles 0.50-0.58 of their boxes.
SQUARE_FILL, CIRCLE_FILL = 0.9, 0.625

_COLORS = np.array([BACKGROUND, *PALETTE.values()], dtype=np.int32)
_NAMES = list(PALETTE)


def detect(image: Image.Image | np.ndarray) -> list[Obj]:
    """The objects in an image: shape, palette colour and box of each region (see the module docstring)."""
    pixels = np.asarray(image.convert("RGB") if isinstance(image, Image.Image) else image, dtype=np.int32)
    distances = ((pixels[:, :, None, :] - _COLORS[None, None]) ** 2).sum(-1)
    nearest = distances.argmin(-1)
    distance = np.sqrt(distances.min(-1))
    found = []
    for k, name in enumerate(_NAMES, start=1):
        regions, _ = ndimage.label(nearest == k)
        for i, box in enumerate(ndimage.find_objects(regions), start=1):
            area = int((regions[box] == i).sum())
            if area < MIN_AREA:
                continue
            height, width = box[0].stop - box[0].start, box[1].stop - box[1].start
            fill = area / (height * width)
            if abs(height - width) > max(2, MAX_SKEW * max(height, width)) or fill < MIN_FILL:
                continue
            if distance[box][regions[box] == i].mean() > MAX_COLOR_DISTANCE:
                continue
            shape = "square" if fill > SQUARE_FILL else "circle" if fill > CIRCLE_FILL else "triangle"
            found.append(Obj(shape, name, (box[1].start, box[0].start, box[1].stop, box[0].stop)))
    return found


def satisfies(objects: list[Obj], request: Request) -> bool:
    """Whether the objects show what the request asks for (see the module docstring)."""
    def matching(want):
        return [o for o in objects if o.shape == want.shape and (want.color is None or o.color == want.color)]

    if request.skill == "counting":
        return len(matching(request.wants[0])) == request.wants[0].count
    if request.skill == "position":
        a, b = (matching(w) for w in request.wants)
        return any(relation_of(x, y) == request.relation for x in a for y in b)
    return all(matching(w) for w in request.wants)


def judge(image: Image.Image | np.ndarray, prompt: str) -> bool:
    """Whether the image shows what the prompt (a caption of the shapes grammar) asks for."""
    return satisfies(detect(image), parse(prompt))


def matches_scene(objects: list[Obj], scene: Scene) -> bool:
    """Whether detected objects are exactly the scene's: the same (shape, colour) multiset, each box within a
    pixel of the truth (for measuring the judge against ground truth)."""
    truth = sorted((o.shape, o.color, o.box) for o in scene.objects)
    seen = sorted((o.shape, o.color, o.box) for o in objects)
    if [t[:2] for t in truth] != [s[:2] for s in seen]:
        return False
    return all(max(abs(a - b) for a, b in zip(t[2], s[2])) <= 1 for t, s in zip(truth, seen))
