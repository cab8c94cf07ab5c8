"""The order in which decoding keeps tokens (muse.sampling token_order): MaskGIT's confidence, or the 2-D Halton
sequence over the grid (Besnier et al., ICLR 2025; valeoai/Halton-MaskGIT), optionally rolled per sample; how it
reaches every stage, editing and the run's record, and how bad values are refused."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from bench.core.config import ModelConfig
from bench.core.errors import BenchError
from bench.jobs.checks import check_decoding_settings
from muse import MusePipeline
from muse.errors import MuseInputError
from muse.sampling import TOKEN_ORDERS, halton_order, make_generators, parallel_decode, reveal_ranks

MASK = 50


def logits_fn(tokens):
    # Logits that depend on each sample's own tokens: a confidence order would follow them, a fixed one must not.
    table = torch.randn(MASK + 1, MASK, generator=torch.Generator().manual_seed(0))
    return table[tokens] + 0.1 * table[tokens.roll(1, dims=1)], None


def decode(tokens, order, steps=6, seed=0, indices=None):
    generators = make_generators(seed, indices or range(tokens.shape[0]), "cpu")
    return parallel_decode(logits_fn, tokens, mask_token_id=MASK, generators=generators, steps=steps,
                           token_order=order, return_trajectory=True)


def test_the_halton_order_is_halton_maskgits_and_covers_the_grid():
    # Catches: bases swapped (rows from base 3), an index starting at 0 (the corner first), duplicates or a
    # missing cell. Halton-MaskGIT's first points: (1/2, 1/3), (1/4, 2/3), (3/4, 1/9), (1/8, 4/9) of the grid.
    order = halton_order(8)
    assert sorted(order) == list(range(64))
    assert order[:4] == (4 * 8 + 2, 2 * 8 + 5, 6 * 8 + 0, 1 * 8 + 3)
    for side in (2, 5, 16, 64):
        assert sorted(halton_order(side)) == list(range(side * side))
    # Low discrepancy: the first eight positions of a 16x16 grid fall in eight different 4x4 blocks, two or more
    # cells apart (a raster order puts them side by side).
    first = [(p // 16, p % 16) for p in halton_order(16)[:8]]
    assert len({(r // 4, c // 4) for r, c in first}) == 8
    assert min(max(abs(a[0] - b[0]), abs(a[1] - b[1])) for i, a in enumerate(first) for b in first[i + 1:]) >= 2


def test_a_halton_decode_reveals_positions_in_halton_order_whatever_the_logits():
    # Catches: the order ignored (confidence used), the order reversed (latest kept first), a rank taken as a
    # position.
    tokens = torch.full((2, 64), MASK)
    out = decode(tokens, "halton", steps=6)
    order = torch.tensor(halton_order(8))
    for sample in out.trajectory:
        revealed_before = 0
        for step_tokens in sample:
            revealed = (step_tokens != MASK).sum().item()
            assert (step_tokens[order[:revealed]] != MASK).all() and (step_tokens[order[revealed:]] == MASK).all()
            assert revealed > revealed_before
            revealed_before = revealed
    # Both samples revealed the same positions at every step; the confidence order does not.
    assert torch.equal(out.trajectory[0] == MASK, out.trajectory[1] == MASK)
    confidence = decode(tokens, "confidence", steps=6).trajectory
    assert not torch.equal(confidence[0] == MASK, confidence[1] == MASK)


def test_a_random_roll_is_per_sample_and_a_function_of_its_seed_and_index():
    # Catches: one roll for the whole batch (samples then depend on their batch), a roll from the global RNG.
    tokens = torch.full((3, 64), MASK)
    generators = make_generators(5, [7, 8, 9], "cpu")
    ranks = reveal_ranks("halton-random", 64, generators, "cpu")
    assert all(sorted(r.long().tolist()) == list(range(64)) for r in ranks)
    assert len({tuple(r.tolist()) for r in ranks}) == 3
    batch = decode(tokens, "halton-random", seed=5, indices=[7, 8, 9]).tokens
    for i, index in enumerate([7, 8, 9]):
        assert torch.equal(decode(tokens[:1], "halton-random", seed=5, indices=[index]).tokens[0], batch[i])


def test_known_tokens_never_change_and_masked_ones_are_filled_in_halton_order():
    # Editing's case: the order ranks the unknown positions only; known tokens stay what they were.
    tokens = torch.full((1, 64), MASK)
    known = torch.arange(0, 64, 3)
    tokens[0, known] = 7
    out = decode(tokens, "halton", steps=4)
    assert all((step[known] == 7).all() for step in out.trajectory[0]) and (out.tokens != MASK).all()
    unknown_order = [p for p in halton_order(8) if p % 3]
    first = out.trajectory[0, 0]
    revealed = int(((first != MASK).sum() - len(known)).item())
    assert (first[unknown_order[:revealed]] != MASK).all() and (first[unknown_order[revealed:]] == MASK).all()


def test_bad_orders_are_refused_naming_the_setting():
    with pytest.raises(MuseInputError, match="token_order='spiral'"):
        decode(torch.full((1, 64), MASK), "spiral")
    with pytest.raises(MuseInputError, match="square token grid"):
        decode(torch.full((1, 60), MASK), "halton")
    for order in TOKEN_ORDERS:
        check_decoding_settings(OmegaConf.merge(OmegaConf.structured(ModelConfig), {"token_order": order}))
    with pytest.raises(BenchError, match="model.token_order='spiral'.*confidence, halton, halton-random"):
        check_decoding_settings(OmegaConf.merge(OmegaConf.structured(ModelConfig), {"token_order": "spiral"}))
    with pytest.raises(BenchError, match="model.token_order='halton' is a setting of Muse's MaskGIT sampler"):
        check_decoding_settings(OmegaConf.merge(OmegaConf.structured(ModelConfig),
                                                {"token_order": "halton", "family": "stable-diffusion"}))


def test_the_order_reaches_every_stage_editing_and_the_record():
    # Catches: an order applied to the base stage only, dropped by editing, or missing from sampling.json's record.
    torch.manual_seed(0)
    pipe = MusePipeline.from_preset("muse-tiny")
    samplers = pipe.stage_samplers(512, token_order="halton")
    assert {s.token_order for s in samplers.values()} == {"halton"}
    assert {s["token_order"] for s in pipe.sampler_settings(512, token_order="halton").values()} == {"halton"}
    assert pipe.sampler_settings(256)["base"]["token_order"] == "confidence"
    a = pipe(["a cat"], resolution=256, seed=1, steps=4, token_order="halton", output_type="pt")
    b = pipe(["a cat"], resolution=256, seed=1, steps=4, output_type="pt")
    assert not torch.equal(a.tokens, b.tokens)
    image = a.images[0].permute(1, 2, 0).mul(255).byte().numpy()
    mask = torch.zeros(256, 256, dtype=torch.bool)
    mask[:128] = True
    halton = pipe.inpaint(image, mask.numpy(), "a dog", resolution=256, steps=4, token_order="halton")
    plain = pipe.inpaint(image, mask.numpy(), "a dog", resolution=256, steps=4)
    assert not torch.equal(halton.tokens, plain.tokens)
    kept = ~halton.edit_mask[0]
    assert torch.equal(halton.tokens[0][kept], plain.tokens[0][kept])


def test_the_sampler_comparison_is_one_multirun_and_one_figure_per_metric(tmp_path, shapes_world):
    # Catches: an experiment whose multirun does not vary the token order, runs the report cannot tell apart, or a
    # figure per run instead of one with a line per token order.
    import json

    from conftest import muse_bench

    from bench.report.document import write_report
    from bench.report.runs import load_runs

    sweep_dir = tmp_path / "samplers"
    done = muse_bench("-m", "experiment=shapes_samplers", "world=shapes-ci", "dataset.limit=6", "sweep.points=[1,2]",
                      "eval.metrics=[judge]", f"hydra.sweep.dir={sweep_dir}", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    orders = {}
    for results in sorted(sweep_dir.glob("*/results.json")):
        evaluations = json.loads(results.read_text())["evaluations"]
        recorded = {ev["protocol"]["sampler"]["base"]["token_order"] for ev in evaluations}
        assert len(recorded) == 1 and [ev["sweep"]["value"] for ev in evaluations] == [1, 2]
        orders[recorded.pop()] = evaluations
    assert set(orders) == {"confidence", "halton", "halton-random"}
    text = write_report(load_runs([sweep_dir]), tmp_path / "report").read_text()
    assert text.count("![judge accuracy against model.steps]") == 1
    for order in orders:
        assert f"model.token_order={order}" in text
