"""The shapes world's captions: a small grammar, one form per skill, written from a scene and read back.

    single_object       a circle
    two_objects         a circle and a square
    counting            three triangles
    colors              a red circle                       (an orange circle)
    position            a circle left of a square          (also: right of, above, below)
    color_attribution   a red circle and a blue square

`caption(scene)` writes a scene's caption; `parse(prompt)` reads any caption of the grammar back into what it
asks for (`Request`), which is what the judge checks an image against: the judge needs the prompt only, never
the scene it came from.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from bench.shapes.scenes import PALETTE, RELATIONS, SHAPES, SKILLS, Scene

NUMBERS = {2: "two", 3: "three", 4: "four"}


@dataclass(frozen=True)
class Want:
    """One thing a prompt asks for: a shape, its colour if named, and how many (counting: exactly)."""

    shape: str
    color: str | None = None
    count: int = 1


@dataclass(frozen=True)
class Request:
    """What a prompt asks for: its skill, the objects, and for position the relation of the first to the second."""

    skill: str
    wants: tuple[Want, ...]
    relation: str | None = None


def article(word: str) -> str:
    """The indefinite article before `word` ("an orange", "a red")."""
    return "an" if word[0] in "aeiou" else "a"


def caption(scene: Scene) -> str:
    """The scene's caption in the grammar of its skill."""
    objs = scene.objects
    if scene.skill == "single_object":
        return f"a {objs[0].shape}"
    if scene.skill == "colors":
        return f"{article(objs[0].color)} {objs[0].color} {objs[0].shape}"
    if scene.skill == "two_objects":
        return f"a {objs[0].shape} and a {objs[1].shape}"
    if scene.skill == "color_attribution":
        return (f"{article(objs[0].color)} {objs[0].color} {objs[0].shape} and "
                f"{article(objs[1].color)} {objs[1].color} {objs[1].shape}")
    if scene.skill == "position":
        return f"a {objs[0].shape} {scene.relation} a {objs[1].shape}"
    if scene.skill == "counting":
        return f"{NUMBERS[len(objs)]} {objs[0].shape}s"
    raise ValueError(f"unknown skill {scene.skill!r}: one of {', '.join(SKILLS)}")


_SHAPE = "|".join(SHAPES)
_COLOR = "|".join(PALETTE)
_RELATION = "|".join(RELATIONS)
_FORMS = [
    ("counting", re.compile(rf"^({'|'.join(NUMBERS.values())}) ({_SHAPE})s$")),
    ("color_attribution", re.compile(rf"^an? ({_COLOR}) ({_SHAPE}) and an? ({_COLOR}) ({_SHAPE})$")),
    ("two_objects", re.compile(rf"^a ({_SHAPE}) and a ({_SHAPE})$")),
    ("position", re.compile(rf"^a ({_SHAPE}) ({_RELATION}) a ({_SHAPE})$")),
    ("colors", re.compile(rf"^an? ({_COLOR}) ({_SHAPE})$")),
    ("single_object", re.compile(rf"^a ({_SHAPE})$")),
]


def parse(prompt: str) -> Request:
    """What a caption of the grammar asks for; ValueError for any other text."""
    text = prompt.strip().lower()
    for skill, form in _FORMS:
        m = form.match(text)
        if not m:
            continue
        g = m.groups()
        if skill == "counting":
            count = {v: k for k, v in NUMBERS.items()}[g[0]]
            return Request(skill, (Want(g[1], None, count),))
        if skill == "color_attribution":
            return Request(skill, (Want(g[1], g[0]), Want(g[3], g[2])))
        if skill == "two_objects":
            return Request(skill, (Want(g[0]), Want(g[1])))
        if skill == "position":
            return Request(skill, (Want(g[0]), Want(g[2])), relation=g[1])
        if skill == "colors":
            return Request(skill, (Want(g[1], g[0]),))
        return Request(skill, (Want(g[0]),))
    raise ValueError(f"not a caption of the shapes grammar: {prompt!r} (forms: bench/shapes/captions.py)")
