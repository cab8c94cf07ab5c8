"""The training machinery of the shapes world (bench/train/, muse/training.py), on modules small enough to train in
a test: checkpoints, resuming, the cache key, corrupt files, the objectives, the cell-wise tokenizer."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
from torch import nn

from bench.core.errors import BenchError
from bench.train.checkpoint import CorruptCheckpoint, load_checkpoint, save_checkpoint
from bench.train.loop import learning_rate, run_stage, step_generator
from bench.train.recipe import RECIPES, Stage, WorldRecipe, get_recipe
from muse.config import VQConfig
from muse.training import cosine_mask_ratio, drop_text, mask_tokens
from muse.vqgan import VQTokenizer


def _net(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1))


def _loss(net):
    data = torch.randn(256, 4, generator=torch.Generator().manual_seed(1))
    target = data.sum(1, keepdim=True).sin()

    def loss(step, shared, local):
        idx = torch.randint(len(data), (16,), generator=shared)
        noise = torch.randn(16, 1, generator=local) * 0.01
        value = (net(data[idx]) - target[idx] - noise).pow(2).mean()
        return value, {}

    return loss


def _train(net, path, steps, total=12):
    stage = Stage(steps=total, batch=16, lr=1e-2, warmup=2)
    # Stopping after `steps` of `total`: a stage whose steps are cut short, as a killed run leaves it.
    cut = dataclasses.replace(stage, steps=steps)
    return run_stage("toy", {"net": net}, _loss(net), cut if steps < total else stage, checkpoint=path, seed=3,
                     meta={"toy": 1}, checkpoint_every=2, progress=False)


def test_a_resumed_stage_ends_with_the_weights_of_an_uninterrupted_one(tmp_path):
    # Catches: randomness drawn from a generator whose state is not restored, optimiser moments not saved, a
    # learning rate schedule that restarts, a resumed run that re-does or skips a step.
    straight = _net()
    _train(straight, tmp_path / "a.safetensors", 12)
    interrupted = _net()
    stage = Stage(steps=12, batch=16, lr=1e-2, warmup=2)
    net_loss = _loss(interrupted)
    calls = []

    def dying(step, shared, local):
        calls.append(step)
        if step == 7:
            raise KeyboardInterrupt  # killed during step 7: checkpoints at 2, 4, 6 are on disk
        return net_loss(step, shared, local)

    with pytest.raises(KeyboardInterrupt):
        run_stage("toy", {"net": interrupted}, dying, stage, checkpoint=tmp_path / "b.safetensors", seed=3,
                  meta={"toy": 1}, checkpoint_every=2, progress=False)
    resumed = _net(seed=99)  # a fresh process: whatever its init, the checkpoint decides
    result = run_stage("toy", {"net": resumed}, _loss(resumed), stage, checkpoint=tmp_path / "b.safetensors",
                       seed=3, meta={"toy": 1}, checkpoint_every=2, progress=False)
    assert result.resumed_from == 6
    for a, b in zip(straight.parameters(), resumed.parameters()):
        assert torch.equal(a, b)


def test_a_finished_stage_is_not_trained_again(tmp_path):
    net = _net()
    _train(net, tmp_path / "c.safetensors", 12)
    again = _net(seed=5)
    result = _train(again, tmp_path / "c.safetensors", 12)
    assert result.resumed_from == 12 and not result.history
    assert all(torch.equal(a, b) for a, b in zip(net.parameters(), again.parameters()))


def test_a_corrupt_or_foreign_checkpoint_is_refused_before_anything_is_loaded(tmp_path):
    net = _net()
    optimizer = torch.optim.AdamW(net.parameters())
    path = tmp_path / "s.safetensors"
    save_checkpoint(path, {"net": net}, optimizer, 4, {"recipe": "k1"})
    assert not list(tmp_path.glob("*.tmp"))  # written through a temporary file, renamed over
    other = _net(seed=7)
    before = [p.clone() for p in other.parameters()]
    with pytest.raises(CorruptCheckpoint, match="other settings"):
        load_checkpoint(path, {"net": other}, torch.optim.AdamW(other.parameters()), {"recipe": "k2"})
    wider = nn.Sequential(nn.Linear(4, 9), nn.Tanh(), nn.Linear(9, 1))
    with pytest.raises(CorruptCheckpoint, match="does not hold"):
        load_checkpoint(path, {"net": wider}, torch.optim.AdamW(wider.parameters()), {"recipe": "k1"})
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(CorruptCheckpoint, match=str(path)):
        load_checkpoint(path, {"net": other}, torch.optim.AdamW(other.parameters()), {"recipe": "k1"})
    assert all(torch.equal(a, b) for a, b in zip(before, other.parameters()))


def test_a_corrupt_checkpoint_is_deleted_and_the_stage_trained_from_the_start(tmp_path, caplog):
    path = tmp_path / "d.safetensors"
    path.write_bytes(b"not a safetensors file")
    net = _net()
    result = _train(net, path, 12)
    assert result.resumed_from == 0 and "cannot be read" in caplog.text
    clean = _net()
    _train(clean, tmp_path / "e.safetensors", 12)
    assert all(torch.equal(a, b) for a, b in zip(net.parameters(), clean.parameters()))


def test_step_generators_depend_on_seed_stage_step_and_rank_only():
    draw = lambda *a: torch.rand(3, generator=step_generator(*a))  # noqa: E731
    assert torch.equal(draw(0, "base", 5), draw(0, "base", 5))
    assert len({tuple(draw(*a).tolist()) for a in [(0, "base", 5), (1, "base", 5), (0, "vq", 5), (0, "base", 6),
                                                   (0, "base", 5, 0), (0, "base", 5, 1)]}) == 6


def test_learning_rate_warms_up_then_decays_to_zero():
    stage = Stage(steps=100, batch=1, lr=1.0, warmup=10)
    assert learning_rate(stage, 0) == pytest.approx(0.1) and learning_rate(stage, 9) == pytest.approx(1.0)
    assert learning_rate(stage, 55) == pytest.approx(0.5, abs=0.02) and learning_rate(stage, 100) == 0.0


def test_the_recipe_key_moves_with_every_setting_and_unknown_recipes_are_listed():
    base = RECIPES["shapes"]
    keys = {base.key, dataclasses.replace(base, seed=1).key, dataclasses.replace(base, text_dropout=0.2).key,
            dataclasses.replace(base, base=dataclasses.replace(base.base, steps=base.base.steps + 1)).key,
            dataclasses.replace(base, name="other").key}
    assert len(keys) == 5
    assert base.key == WorldRecipe(**{**dataclasses.asdict(base), "vq": base.vq, "base": base.base,
                                      "superres": base.superres, "clip": base.clip,
                                      "clip_shape": base.clip_shape}).key
    with pytest.raises(BenchError, match="train.recipe='nope'.*shapes, shapes-ci"):
        get_recipe("nope")


def test_the_recipe_key_follows_the_architecture_but_not_its_samplers(monkeypatch):
    # Catches: a sampler setting (a new field, a changed default) that retrains every cached world, and an
    # architecture change that does not.
    import bench.train.recipe as recipe_module

    real = recipe_module.preset_config
    base = RECIPES["shapes"].key

    def changed(**edits):
        def preset(name):
            config = real(name)
            for part, values in edits.items():
                setattr(config, part, dataclasses.replace(getattr(config, part), **values))
            return config
        return preset

    monkeypatch.setattr(recipe_module, "preset_config", changed(base_sampler={"steps": 3, "token_order": "halton"},
                                                                 superres_sampler={"choice_temperature": 1.0}))
    assert RECIPES["shapes"].key == base
    monkeypatch.setattr(recipe_module, "preset_config", changed(base={"layers": 5}))
    assert RECIPES["shapes"].key != base


def test_masks_follow_the_cosine_schedule_and_always_hide_a_token():
    tokens = torch.zeros(4000, 64, dtype=torch.long)
    masked, mask = mask_tokens(tokens, 99, torch.Generator().manual_seed(0))
    assert (masked[mask] == 99).all() and (masked[~mask] == 0).all()
    counts = mask.sum(1)
    assert counts.min() >= 1
    # E[cos(pi/2 u)] = 2/pi: the mean masked fraction.
    assert counts.float().mean().item() / 64 == pytest.approx(2 / torch.pi, abs=0.02)
    assert cosine_mask_ratio(torch.tensor([0.0, 1.0])).tolist() == pytest.approx([1.0, 0.0], abs=1e-6)


def test_text_dropout_empties_about_the_asked_fraction():
    dropped = drop_text(["a circle"] * 5000, 0.1, torch.Generator().manual_seed(0))
    assert set(dropped) == {"a circle", ""}
    assert dropped.count("") / 5000 == pytest.approx(0.1, abs=0.02)


def test_a_cell_tokenizer_gives_equal_cells_equal_tokens_whatever_their_neighbours():
    config = VQConfig(block_out_channels=(8, 8, 8), layers_per_block=1, latent_channels=4, codebook_size=32,
                      norm_num_groups=4, encode_cells=True)
    torch.manual_seed(0)
    tokenizer = VQTokenizer.from_config(config).eval()
    images = torch.rand(2, 3, 16, 16)
    images[1, :, :4, :4] = images[0, :, :4, :4]  # same top-left cell, different everything else
    tokens = tokenizer.encode(images)
    assert tokens[0, 0] == tokens[1, 0]
    whole = VQTokenizer.from_config(dataclasses.replace(config, encode_cells=False)).eval()
    whole.load_state_dict(tokenizer.state_dict())
    assert tokenizer.latents(images * 2 - 1).shape == whole.latents(images * 2 - 1).shape == (2, 4, 4, 4)


def test_object_crops_sit_on_the_token_grid_around_an_object():
    # Catches crops off the token grid (a cell split between two tokens), crops that miss every object, and crops
    # that depend on anything but the generator.
    from bench.shapes.scenes import BACKGROUND, make_scene, render
    from bench.train.data import object_crops

    scenes = [make_scene(i, "train", 64) for i in range(24)]
    images = torch.from_numpy(np.stack([np.asarray(render(s)) for s in scenes])).permute(0, 3, 1, 2)
    images[-1] = torch.tensor(BACKGROUND, dtype=torch.uint8).view(3, 1, 1)  # an image with no object
    crops = object_crops(images, 16, torch.Generator().manual_seed(0))
    assert crops.shape == (24, 3, 16, 16)
    assert torch.equal(crops, object_crops(images, 16, torch.Generator().manual_seed(0)))
    background = torch.tensor(BACKGROUND, dtype=torch.uint8).view(3, 1, 1)
    for image, crop in zip(images[:-1], crops[:-1]):
        assert (crop != background).any(), "a crop misses every object of its image"
        places = [(y, x) for y in range(0, 49, 4) for x in range(0, 49, 4)
                  if torch.equal(image[:, y:y + 16, x:x + 16], crop)]
        assert places, "a crop is not on the 4 px token grid"
    assert (crops[-1] == background).all()
    # Over many draws an object's cell lands at every cell of the crop, not always at one corner.
    one = images[:1].expand(400, -1, -1, -1)
    where = [tuple((c != background).any(0).nonzero().min(0).values.tolist()) for c in
             object_crops(one, 16, torch.Generator().manual_seed(1))]
    assert len(set(where)) >= 8
    with pytest.raises(ValueError, match="crop"):
        object_crops(images, 18, torch.Generator())
