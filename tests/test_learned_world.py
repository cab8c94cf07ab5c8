"""Learned behaviour on the shapes world: the test suite's world (recipe shapes-ci, trained once per session by the
`shapes_world` fixture, about 3 minutes) run through the real sampler, editing, judge and CLIP code. These are the
tests a broken sampler fails: a sign error in guidance, a schedule stuck at its first step, an inpainting that
ignores its mask, a CLIP that cannot tell a matching image from another.

Thresholds sit far from the values measured over seeds 0-4 (README "The learned shapes world" lists them), so
a test fails on a real regression, not on a draw. Only seed 0 runs here."""

from __future__ import annotations

import numpy as np
import pytest

from bench.data.prompts import load_dataset
from bench.metrics.judge import judge_agreement
from bench.shapes.editing import inpaint_success, inpaint_trials
from bench.shapes.judge import judge
from muse import MusePipeline

N_PROMPTS = 60  # the first 60 shapes prompts: 10 per skill
SEED = 0


@pytest.fixture(scope="module")
def world(shapes_world):
    return MusePipeline.from_pretrained(str(shapes_world / "pipeline")), shapes_world


@pytest.fixture(scope="module")
def prompts():
    return [r.prompt for r in load_dataset("shapes", limit=N_PROMPTS)]


def images(pipe, prompts, guidance_scale=None):
    out = []
    for start in range(0, len(prompts), 30):
        out += pipe(prompts[start:start + 30], resolution=64, seed=SEED,
                    sample_indices=range(start, start + len(prompts[start:start + 30])),
                    guidance_scale=guidance_scale).images
    return out


def accuracy(pipe, prompts, guidance_scale=None):
    made = images(pipe, prompts, guidance_scale)
    return float(np.mean([judge(image, prompt) for image, prompt in zip(made, prompts)])), made


def test_the_trained_world_beats_random_weights_on_the_judge_by_a_wide_margin(world, prompts):
    # Catches: weights not loaded (a random pipeline), tokens decoded with the wrong tokenizer, text ignored.
    trained, _ = accuracy(world[0], prompts)
    random, _ = accuracy(MusePipeline.from_preset("muse-shapes", seed=SEED), prompts)
    assert trained - random >= TRAINED_MARGIN, (trained, random)


def test_judge_accuracy_rises_from_no_guidance_to_a_moderate_one(world, prompts):
    # Catches: guidance with its sign flipped ((1 + t) * uncond - t * cond), guidance never applied, a ramp stuck at
    # its first step (t / steps all along).
    unguided, _ = accuracy(world[0], prompts, guidance_scale=1.0)
    guided, _ = accuracy(world[0], prompts, guidance_scale=4.0)
    assert guided - unguided >= GUIDANCE_MARGIN, (unguided, guided)


def test_inpainting_puts_the_asked_object_in_the_masked_block_and_keeps_the_rest(world):
    # Catches: an inpainting that regenerates everything (the kept object lost), or ignores the prompt.
    result = inpaint_success(world[0], inpaint_trials(20), seed=SEED)
    assert result["success_rate"] >= INPAINT_FLOOR, result["trials"]


def test_the_exact_judge_and_the_clip_judge_agree_above_chance(world, prompts, monkeypatch):
    # Catches: a CLIP judge that cannot read the images (agreement near 0.5), a comparison with its sides swapped
    # (agreement near 0).
    from bench.train.scorers import world_clip_scorer

    _, trained = accuracy(world[0], prompts)
    _, unguided = accuracy(world[0], prompts, guidance_scale=1.0)
    result = judge_agreement(prompts, trained, unguided, world_clip_scorer("shapes-ci"))
    assert result["n_decided"] >= 10 and result["agreement"] >= AGREEMENT_FLOOR, result
