"""The shapes world: scenes are a function of (split, index), captions read back to what they ask for, and the
exact judge reads rendered scenes back as their ground truth and refuses what a prompt does not show."""

import dataclasses

import pytest

from bench.shapes.captions import NUMBERS, caption, parse
from bench.shapes.judge import detect, judge, matches_scene
from bench.shapes.scenes import PALETTE, RELATIONS, SKILLS, SPLIT_SEEDS, make_scene, render


def test_a_scene_is_a_function_of_split_and_index_and_six_in_a_row_cover_every_skill():
    assert make_scene(7, "train") == make_scene(7, "train")
    assert render(make_scene(7, "train")).tobytes() == render(make_scene(7, "train")).tobytes()
    assert make_scene(7, "train") != make_scene(7, "test")  # splits share no scene
    assert [make_scene(i).skill for i in range(12, 18)] == list(SKILLS)
    with pytest.raises(ValueError, match="validation"):
        make_scene(0, "dev")
    assert set(SPLIT_SEEDS) == {"train", "validation", "test"}


@pytest.mark.parametrize("size", [64, 128, 256])
def test_the_judge_reads_rendered_scenes_back_as_their_ground_truth(size):
    """GenEval's detector is right on most images; this one must be right on (almost) all of the world's own:
    at least 99% of scenes read back exactly (shape, colour, box within a pixel), and every caption judged true."""
    scenes = [make_scene(i, split, size=size) for split in ("train", "test") for i in range(300)]
    exact = sum(matches_scene(detect(render(s)), s) for s in scenes)
    assert exact >= 0.99 * len(scenes)
    assert all(judge(render(s), caption(s)) for s in scenes)


def test_the_judge_refuses_what_the_image_does_not_show():
    for i in range(60):
        scene = make_scene(i, "validation")
        image, objs = render(scene), scene.objects
        other_color = next(c for c in PALETTE if c not in {o.color for o in objs})
        missing_shape = next((s for s in ("circle", "square", "triangle") if s not in {o.shape for o in objs}), None)
        if scene.skill in ("colors", "color_attribution"):
            wrong = caption(dataclasses.replace(scene, objects=(dataclasses.replace(objs[0], color=other_color),
                                                                *objs[1:])))
        elif scene.skill == "counting":
            wrong = f"{NUMBERS[len(objs) + 1] if len(objs) < 4 else 'two'} {objs[0].shape}s"
        elif scene.skill == "position":
            opposite = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}
            wrong = f"a {objs[0].shape} {opposite[scene.relation]} a {objs[1].shape}"
        else:  # single_object, two_objects: ask for a shape that is not there
            wrong = f"a {missing_shape}" if scene.skill == "single_object" else f"a {objs[0].shape} and a {missing_shape}"
        assert judge(image, caption(scene)) and not judge(image, wrong), (i, scene.skill, wrong)


def test_captions_read_back_and_other_text_is_refused():
    request = parse("a red circle and a blue square")
    assert request.skill == "color_attribution" and [(w.shape, w.color) for w in request.wants] == [
        ("circle", "red"), ("square", "blue")]
    assert parse("Three triangles").wants[0].count == 3
    assert {parse(f"a circle {r} a square").relation for r in RELATIONS} == set(RELATIONS)
    for i in range(30):
        assert parse(caption(make_scene(i))).skill == make_scene(i).skill
    with pytest.raises(ValueError, match="shapes grammar"):
        parse("a photo of a cat")
