"""The MaskGIT sampler as a pure function, driven by synthetic logits."""

import math

import numpy as np
import pytest
import torch

from muse.errors import MuseInputError
from muse.sampling import (
    choice_temperature_at,
    guidance_at,
    guide,
    make_generators,
    mask_lengths,
    mask_ratio,
    parallel_decode,
    remask,
    sample_categorical,
    sample_seed,
    to_guidance_scale,
    to_guidance_t,
    top_k_filter,
)

MASK = 50  # codebook 0..49, mask id 50


def random_logits_fn(vocab=MASK, guided=False, calls=None):
    """Logits that depend on each sample's own tokens only (so batching cannot leak between samples)."""
    table = torch.randn(vocab + 1, vocab, generator=torch.Generator().manual_seed(0))

    def fn(tokens):
        if calls is not None:
            calls.append(tokens.shape)
        cond = table[tokens] + 0.1 * table[tokens.roll(1, dims=1)]
        return cond, (cond.flip(-1) if guided else None)

    return fn


def decode(tokens, steps=8, seed=0, **kwargs):
    gens = make_generators(seed, range(tokens.shape[0]), "cpu")
    kwargs.setdefault("guidance_t", 0.0)
    return parallel_decode(random_logits_fn(guided=bool(kwargs["guidance_t"])), tokens, mask_token_id=MASK,
                           generators=gens, steps=steps, return_trajectory=True, **kwargs)


def expected_counts(n, steps, schedule):
    counts, unknown = [], n
    for s in range(steps - 1):
        length = math.floor(n * float(mask_ratio((s + 1) / steps, schedule)))
        unknown = max(1, min(unknown - 1, length)) if unknown else 0
        counts.append(unknown)
    return counts + [0]


@pytest.mark.parametrize("schedule", ["cosine", "linear", "pow2"])
@pytest.mark.parametrize("steps", [1, 2, 8, 24])
def test_trajectory_follows_schedule(schedule, steps):
    tokens = torch.full((3, 64), MASK)
    result = decode(tokens, steps=steps, schedule=schedule)
    counts = (result.trajectory == MASK).sum(-1)
    assert result.trajectory.shape == (3, steps, 64)
    for row in counts.tolist():
        assert row == expected_counts(64, steps, schedule)
    assert not (result.tokens == MASK).any()
    assert result.tokens.max() < MASK


def test_cosine_schedule_values():
    assert mask_ratio(0.0) == 1.0 and float(mask_ratio(1.0)) == pytest.approx(0.0, abs=1e-7)
    values = [float(mask_ratio(r / 10)) for r in range(11)]
    assert all(a >= b for a, b in zip(values, values[1:]))
    assert mask_ratio(0.5, "linear") == 0.5 and mask_ratio(0.5, "pow2") == 0.75
    # float32, as in MaskGIT and aMUSEd: cos(pi/3) lands just below 0.5, so 256 tokens give 127, not 128.
    assert math.floor(256 * float(mask_ratio(2 / 3))) == 127
    with pytest.raises(MuseInputError):
        mask_ratio(0.5, "sqrt")


def test_mask_length_rule_clamps():
    n = torch.tensor([100, 100, 5, 0])
    unknown = torch.tensor([100, 3, 1, 0])
    # 100 * cos(pi/2 * 0.1) = 98.7 -> 98; clamped to unknown - 1 = 2; at least 1; nothing to do -> 0.
    assert mask_lengths(n, unknown, 0.1, "cosine").tolist() == [98, 2, 1, 0]


def test_unmasked_tokens_stay_fixed_and_known_tokens_never_change():
    tokens = torch.randint(0, MASK, (2, 64), generator=torch.Generator().manual_seed(1))
    known = torch.rand(2, 64, generator=torch.Generator().manual_seed(2)) < 0.5
    start = torch.where(known, tokens, torch.full_like(tokens, MASK))
    result = decode(start, steps=6)
    traj = result.trajectory
    for step in range(traj.shape[1]):
        assert torch.equal(traj[:, step][known], start[known])
    # A token, once unmasked, keeps its value to the end.
    for step in range(traj.shape[1] - 1):
        fixed = traj[:, step] != MASK
        assert torch.equal(traj[:, step + 1][fixed], traj[:, step][fixed])
    # N counts only the initially unknown tokens.
    counts = (traj == MASK).sum(-1)
    n = (~known).sum(-1)
    for b in range(2):
        assert counts[b].tolist() == expected_counts(int(n[b]), 6, "cosine")


def test_nothing_to_fill_is_a_no_op():
    tokens = torch.randint(0, MASK, (2, 16))
    assert torch.equal(decode(tokens, steps=4).tokens, tokens)


def test_choice_temperature_is_fresh_each_step_not_compounded():
    steps, t = 24, 4.5
    for s in range(steps):
        assert choice_temperature_at(s, steps, t) == pytest.approx(t * (1 - (s + 1) / steps))
    # Compounding t *= (1 - ratio) would give 4.5 * 23/24 * 22/24 at step 1; the fresh value is 4.5 * 22/24.
    assert choice_temperature_at(1, steps, t) == pytest.approx(4.125)
    assert choice_temperature_at(0, 12, 2.0, "linear") == 2.0
    assert choice_temperature_at(11, 12, 2.0, "linear") == 0.0
    assert choice_temperature_at(6, 13, 2.0, "linear") == pytest.approx(1.0)


def test_guidance_arithmetic_and_ramp():
    cond, uncond = torch.tensor([2.0, -1.0]), torch.tensor([1.0, 3.0])
    assert torch.allclose(guide(cond, uncond, 0.0), cond)
    assert torch.allclose(guide(cond, uncond, 3.0), 4 * cond - 3 * uncond)
    # aMUSEd's uncond + g (cond - uncond) is Muse's formula with t = g - 1.
    g = 10.0
    assert torch.allclose(guide(cond, uncond, g - 1), uncond + g * (cond - uncond))
    assert [guidance_at(s, 4, 2.0) for s in range(4)] == [0.5, 1.0, 1.5, 2.0]
    assert guidance_at(0, 4, 2.0, "constant") == 2.0


def test_guidance_uses_one_batched_forward_per_step():
    calls = []
    tokens = torch.full((2, 16), MASK)
    gens = make_generators(0, range(2), "cpu")
    parallel_decode(random_logits_fn(guided=True, calls=calls), tokens, mask_token_id=MASK, generators=gens,
                    steps=5, guidance_t=3.0)
    assert len(calls) == 5


def test_guidance_steers_towards_the_conditional():
    # cond prefers token 3 a little, uncond prefers it much more than 7: a large t pushes towards 7.
    def fn(tokens):
        b, n = tokens.shape
        cond = torch.zeros(b, n, MASK)
        uncond = torch.zeros(b, n, MASK)
        cond[..., 3], cond[..., 7] = 1.0, 0.9
        uncond[..., 3], uncond[..., 7] = 5.0, 0.0
        return cond, uncond

    gens = make_generators(0, range(2), "cpu")
    out = parallel_decode(fn, torch.full((2, 32), MASK), mask_token_id=MASK, generators=gens, steps=4,
                          guidance_t=20.0, guidance_ramp="constant", top_k=1)
    assert (out.tokens == 7).all()


def test_top_k_one_is_greedy():
    logits = torch.randn(2, 8, MASK)
    filtered = top_k_filter(logits, 3)
    assert ((filtered > float("-inf")).sum(-1) == 3).all()
    gens = make_generators(0, range(2), "cpu")
    assert torch.equal(sample_categorical(top_k_filter(logits, 1), gens), logits.argmax(-1))


def test_sample_categorical_matches_softmax():
    logits = torch.tensor([0.0, 1.0, 2.0, -1.0])
    many = logits.expand(1, 20000, 4)
    draws = sample_categorical(many, make_generators(0, [0], "cpu"))[0]
    freq = torch.bincount(draws, minlength=4).float() / draws.numel()
    assert torch.allclose(freq, logits.softmax(-1), atol=0.015)


def test_remask_exact_counts():
    conf = torch.tensor([[0.3, 0.1, 0.2, float("inf")], [1.0, 1.0, 1.0, 1.0]])
    mask = remask(conf, torch.tensor([2, 3]))
    assert mask[0].tolist() == [False, True, True, False]
    assert mask.sum(-1).tolist() == [2, 3]


def test_each_sample_depends_only_on_its_seed_and_index():
    tokens = torch.full((4, 32), MASK)
    gens = make_generators(7, [10, 11, 12, 13], "cpu")
    batch = parallel_decode(random_logits_fn(guided=True), tokens, mask_token_id=MASK, generators=gens, steps=6,
                            guidance_t=2.0).tokens
    for i, index in enumerate([10, 11, 12, 13]):
        alone = parallel_decode(random_logits_fn(guided=True), tokens[:1], mask_token_id=MASK,
                                generators=make_generators(7, [index], "cpu"), steps=6, guidance_t=2.0).tokens
        assert torch.equal(alone[0], batch[i])
    other_seed = parallel_decode(random_logits_fn(guided=True), tokens, mask_token_id=MASK,
                                 generators=make_generators(8, [10, 11, 12, 13], "cpu"), steps=6, guidance_t=2.0)
    assert not torch.equal(other_seed.tokens, batch)


def test_steps_below_one_is_refused():
    with pytest.raises(MuseInputError, match="steps"):
        decode(torch.full((1, 8), MASK), steps=0)


def test_gumbel_noise_is_finite_and_standard():
    from muse.sampling import gumbel

    noise = gumbel((20000,), make_generators(0, [0], "cpu"), "cpu")
    assert torch.isfinite(noise).all()
    # Standard Gumbel: mean = Euler-Mascheroni constant, variance = pi^2 / 6.
    assert noise.mean().item() == pytest.approx(0.5772, abs=0.03)
    assert noise.var().item() == pytest.approx(math.pi**2 / 6, rel=0.05)


def test_remasking_prefers_low_confidence_tokens():
    # Two live tokens; the model grows surer of token 0 along the sequence (p0 = sigmoid(a_j)). Without
    # Gumbel noise (temperature 0) the tokens left masked after a step are the least confident ones, so
    # they gather at the start of the sequence.
    a = torch.linspace(0.0, 12.0, 64)

    def fn(tokens):
        logits = torch.full((*tokens.shape, MASK), float("-inf"))
        logits[..., 0], logits[..., 1] = a, 0.0
        return logits, None

    gens = make_generators(0, [0], "cpu")
    out = parallel_decode(fn, torch.full((1, 64), MASK), mask_token_id=MASK, generators=gens, steps=4,
                          choice_temperature=0.0, return_trajectory=True)
    still_masked = (out.trajectory[0, 0] == MASK).nonzero().flatten()
    assert len(still_masked) == math.floor(64 * math.cos(math.pi / 8))
    # 59 of 64 stay masked; the 5 unmasked must be among the most confident (late) positions.
    unmasked = (out.trajectory[0, 0] != MASK).nonzero().flatten()
    assert unmasked.min() >= 40


def test_replica_streams_keep_replica_zero_and_share_nothing_across_seeds():
    def before(seed, index):  # the derivation of every image made before replicas had streams of their own
        return int(np.random.SeedSequence([seed, index]).generate_state(1, dtype=np.uint64)[0] >> 1)

    assert all(sample_seed(s, i) == sample_seed(s, i, 0) == before(s, i) for s in (0, 7) for i in (0, 3, 12345))
    # Replica k of seed s used to be replica 0 of seed s + k: now every (seed, index, replica) has its own stream.
    streams = {sample_seed(s, i, k) for s in range(4) for i in range(50) for k in range(8)}
    assert len(streams) == 4 * 50 * 8
    a, b = make_generators(0, [5], "cpu", replica=1)[0], make_generators(1, [5], "cpu")[0]
    assert not torch.equal(torch.rand(8, generator=a), torch.rand(8, generator=b))


def test_guidance_scale_and_t_convert_and_scales_below_one_are_refused():
    assert to_guidance_t(1.0) == 0.0 and to_guidance_t(5) == 4.0 and to_guidance_t(10.0) == 9.0
    assert to_guidance_scale(4.0) == 5.0 and to_guidance_scale(to_guidance_t(7.5)) == 7.5
    for bad in (0.0, 0.999, -2.0, float("nan"), float("inf")):
        with pytest.raises(MuseInputError, match="model.guidance_scale=.* at least 1"):
            to_guidance_t(bad, "model.guidance_scale")
