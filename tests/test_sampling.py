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
    gumbel,
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
    with pytest.raises(MuseInputError, match="unknown masking schedule 'sqrt': use cosine, linear, arccos or powP"):
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


# ---- the loop end to end: scripted logits whose outcome is known, and MaskGIT written out step by step ----


def support_logits_fn(sizes, calls):
    """Logits that do not depend on the tokens: at position j, uniform over sizes[j] codes, -inf elsewhere. Any
    draw there has log-probability -log(sizes[j]), so with no Gumbel noise the confidence order is known."""
    table = torch.full((len(sizes), MASK), float("-inf"))
    for j, size in enumerate(sizes):
        table[j, [(7 * j + c) % MASK for c in range(size)]] = 0.0

    def fn(tokens):
        calls.append(tokens.clone())
        return table.expand(tokens.shape[0], -1, -1).clone(), None

    return fn, table


def test_loop_keeps_the_least_confident_tokens_masked_and_never_touches_known_or_revealed_ones():
    length, steps = 40, 6
    sizes = (torch.randperm(length, generator=torch.Generator().manual_seed(0)) + 1).tolist()  # distinct: no ties
    known = list(range(0, length, 5))
    start = torch.full((2, length), MASK)
    start[0, known], start[1, known] = torch.arange(len(known)), torch.arange(len(known)) + 20
    calls = []
    fn, table = support_logits_fn(sizes, calls)
    out = parallel_decode(fn, start, mask_token_id=MASK, generators=make_generators(0, range(2), "cpu"),
                          steps=steps, choice_temperature=0.0, return_trajectory=True)
    unknown = [j for j in range(length) if j not in known]
    least_confident_first = sorted(unknown, key=lambda j: -sizes[j])
    counts = expected_counts(len(unknown), steps, "cosine")
    assert len(calls) == steps and torch.equal(calls[0], start)
    for step in range(steps):
        tokens = out.trajectory[:, step]
        for b in range(2):
            assert set((tokens[b] == MASK).nonzero().flatten().tolist()) == set(least_confident_first[:counts[step]])
            revealed = [j for j in unknown if tokens[b, j] != MASK]
            assert (table[revealed, tokens[b, revealed]] == 0).all()  # each a draw from its own position
        assert torch.equal(tokens[:, known], start[:, known])
        if step:
            before = out.trajectory[:, step - 1]
            assert torch.equal(tokens[before != MASK], before[before != MASK])  # revealed tokens stay
            assert torch.equal(calls[step], before)  # the model sees the tokens left by the previous step
    assert torch.equal(out.trajectory[:, -1], out.tokens) and not (out.tokens == MASK).any()


def two_token_logits_fn(cond_values, uncond_values):
    """Logits over codes 3, 7, 11 (everything else far below) for every position, fixed per branch."""
    def fn(tokens):
        cond = torch.full((*tokens.shape, MASK), -1e4)
        uncond = torch.full((*tokens.shape, MASK), -1e4)
        cond[..., [3, 7, 11]] = torch.tensor(cond_values)
        uncond[..., [3, 7, 11]] = torch.tensor(uncond_values)
        return cond, uncond

    return fn


def first_revealed(trajectory):
    """Per step, the values of the tokens that step revealed."""
    out, before = [], torch.full_like(trajectory[:, 0], MASK)
    for step in range(trajectory.shape[1]):
        now = trajectory[:, step]
        out.append(now[(before == MASK) & (now != MASK)])
        before = now
    return out


def test_guidance_mixes_cond_and_uncond_with_the_ramped_t_of_each_step():
    # Guided logit of 3 minus that of 7: (1 + t) * 1 - t * 1.4 = 1 - 0.4 t, so greedy draws pick 3 while t < 2.5
    # and 7 after. The linear ramp of t = 4 over 4 steps is 1, 2, 3, 4: steps 0 and 1 reveal 3s, steps 2 and 3 7s.
    fn = two_token_logits_fn([1.0, 0.0, -50.0], [1.4, 0.0, -50.0])
    gens = make_generators(0, range(2), "cpu")
    out = parallel_decode(fn, torch.full((2, 64), MASK), mask_token_id=MASK, generators=gens, steps=4,
                          guidance_t=4.0, guidance_ramp="linear", top_k=1, return_trajectory=True)
    revealed = first_revealed(out.trajectory)
    assert [sorted(set(r.tolist())) for r in revealed] == [[3], [3], [7], [7]]
    for t, expected in ((2.0, 3), (3.0, 7)):  # a constant ramp keeps t at every step
        out = parallel_decode(fn, torch.full((2, 64), MASK), mask_token_id=MASK, generators=gens, steps=4,
                              guidance_t=t, guidance_ramp="constant", top_k=1)
        assert (out.tokens == expected).all()
    unguided = parallel_decode(fn, torch.full((2, 64), MASK), mask_token_id=MASK, generators=gens, steps=4, top_k=1)
    assert (unguided.tokens == 3).all()  # t = 0: the conditional logits alone


def test_top_k_keeps_the_k_best_guided_logits_not_the_conditional_ones():
    # cond ranks 3 > 7 > 11; guided with t = 1 (2 cond - uncond) gives 3: 0, 7: 2, 11: 1.5, so top-2 is {7, 11}.
    fn = two_token_logits_fn([2.0, 1.5, 1.0], [4.0, 1.0, 0.5])
    out = parallel_decode(fn, torch.full((4, 64), MASK), mask_token_id=MASK,
                          generators=make_generators(0, range(4), "cpu"), steps=3, guidance_t=1.0,
                          guidance_ramp="constant", top_k=2)
    assert set(out.tokens.unique().tolist()) == {7, 11}


def test_each_step_uses_its_own_choice_temperature():
    # Linear from 0 to 1e4 over 3 steps: step 0 has no noise, so exactly the least confident stay masked; step 1
    # has 5000, so which stay masked is as good as random.
    length = 40
    sizes = (torch.randperm(length, generator=torch.Generator().manual_seed(1)) + 1).tolist()
    fn, _ = support_logits_fn(sizes, [])
    out = parallel_decode(fn, torch.full((1, length), MASK), mask_token_id=MASK,
                          generators=make_generators(0, [0], "cpu"), steps=3, choice_temperature=0.0,
                          temperature_schedule="linear", temperature_end=1e4, return_trajectory=True)
    counts = expected_counts(length, 3, "cosine")
    by_doubt = sorted(range(length), key=lambda j: -sizes[j])
    masked = [set((out.trajectory[0, s] == MASK).nonzero().flatten().tolist()) for s in range(2)]
    assert masked[0] == set(by_doubt[:counts[0]])
    assert masked[1] != set(by_doubt[:counts[1]])


def reference_decode(logits_fn, tokens, generators, steps, *, schedule="cosine", choice_temperature=4.5,
                     temperature_schedule="maskgit", temperature_end=0.0, guidance_t=0.0, guidance_ramp="linear",
                     top_k=None):
    """MaskGIT's parallel decoding (google-research/maskgit libml/parallel_decode.py, with Muse's guidance) written out step by step; each sample
    draws from its own generator in the sampler's order (its categorical draws, then its Gumbel noise)."""
    n_initial = (tokens == MASK).sum(-1)
    trajectory = []
    for step in range(steps):
        unknown = tokens == MASK
        cond, uncond = logits_fn(tokens)
        t = guidance_t * (step + 1) / steps if guidance_ramp == "linear" else guidance_t
        logits = (1 + t) * cond - t * uncond if guidance_t else cond
        if top_k is not None:
            kth = logits.topk(top_k, dim=-1).values[..., -1:]
            logits = torch.where(logits < kth, float("-inf"), logits)
        draws = torch.stack([sample_categorical(logits[i:i + 1], [g])[0] for i, g in enumerate(generators)])
        sampled = torch.where(unknown, draws, tokens)
        if step == steps - 1:
            tokens = sampled
        else:
            ratio = float(torch.tensor(step + 1, dtype=torch.float32) / steps)
            keep = torch.floor(n_initial * float(mask_ratio(ratio, schedule))).long()
            keep = torch.minimum(keep, unknown.sum(-1) - 1).clamp(min=1)
            if temperature_schedule == "maskgit":
                temperature = choice_temperature * (1 - (step + 1) / steps)
            else:
                temperature = choice_temperature + (temperature_end - choice_temperature) * step / (steps - 1)
            noise = torch.cat([gumbel(tuple(tokens.shape[1:]), [g], "cpu") for g in generators])
            log_p = torch.log_softmax(logits, -1).gather(-1, sampled[..., None])[..., 0]
            confidence = torch.where(unknown, log_p + temperature * noise, float("inf"))
            order = confidence.argsort(-1)
            tokens = sampled.clone()
            for i in range(tokens.shape[0]):
                tokens[i, order[i, :keep[i]]] = MASK
        trajectory.append(tokens)
    return torch.stack(trajectory, 1)


@pytest.mark.parametrize("settings", [
    dict(steps=8),
    dict(steps=5, schedule="linear", choice_temperature=2.0, top_k=5),
    dict(steps=6, guidance_t=3.0, choice_temperature=4.5),
    dict(steps=4, guidance_t=2.0, guidance_ramp="constant", top_k=3, schedule="pow2"),
    dict(steps=7, guidance_t=9.0, guidance_ramp="constant", choice_temperature=2.0, temperature_schedule="linear",
         temperature_end=0.5),
    dict(steps=1, guidance_t=1.5),
])
def test_loop_equals_maskgit_written_out_step_by_step(settings):
    start = torch.full((3, 48), MASK)
    start[1, ::3] = torch.arange(16)  # one sample with known tokens
    guided = bool(settings.get("guidance_t"))
    out = parallel_decode(random_logits_fn(guided=guided), start, mask_token_id=MASK,
                          generators=make_generators(5, [0, 1, 2], "cpu"), return_trajectory=True, **settings)
    expected = reference_decode(random_logits_fn(guided=guided), start, make_generators(5, [0, 1, 2], "cpu"),
                                **settings)
    assert torch.equal(out.trajectory, expected)
    assert torch.equal(out.tokens, expected[:, -1])


def test_helpers_at_their_edges_and_their_errors():
    # aMUSEd's linear temperature: one step keeps the start value; two steps go start -> end.
    assert choice_temperature_at(0, 1, 2.0, "linear", end=0.5) == 2.0
    assert [choice_temperature_at(s, 2, 2.0, "linear", end=0.5) for s in range(2)] == [2.0, 0.5]
    with pytest.raises(MuseInputError, match="unknown temperature schedule 'cubic': use maskgit or linear"):
        choice_temperature_at(0, 4, 1.0, "cubic")
    with pytest.raises(MuseInputError, match="unknown guidance ramp 'cosine': use linear or constant"):
        guidance_at(0, 4, 1.0, "cosine")
    # The message names the setting it was given, guidance_scale by default.
    with pytest.raises(MuseInputError, match=r"^guidance_scale=0\.5 is not a guidance scale"):
        to_guidance_t(0.5)


def test_mask_ratio_is_float32_whatever_the_default_dtype():
    # A caller that made float64 the default must still get MaskGIT's float32 counts (127 of 256, not 128).
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        assert mask_ratio(2 / 3).dtype == torch.float32
        assert math.floor(256 * float(mask_ratio(2 / 3))) == 127
    finally:
        torch.set_default_dtype(before)


def test_mask_ratio_powers_and_clamping():
    assert float(mask_ratio(0.5, "pow3")) == pytest.approx(1 - 0.5**3)
    assert float(mask_ratio(0.5, "pow1.5")) == pytest.approx(1 - 0.5**1.5)
    assert mask_ratio(0.5, "pow") == mask_ratio(0.5, "pow2")  # the power defaults to 2
    with pytest.raises(MuseInputError, match="unknown masking schedule 'powx': use cosine, linear, arccos or powP"):
        mask_ratio(0.5, "powx")
    # Always a fraction in [0, 1]: float32 cos(pi/2) is -4e-8, and ratios outside [0, 1] are clamped.
    assert mask_ratio(1.0) == 0.0 and mask_ratio(1.5, "linear") == 0.0
    assert mask_ratio(-0.5, "linear") == 1.0 and mask_ratio(-2.0, "linear") == 1.0


def test_top_k_filters_the_vocabulary_whatever_the_sequence_length():
    logits = torch.randn(1, 2, MASK, generator=torch.Generator().manual_seed(0))  # 2 positions, k = 3 > 2
    assert ((top_k_filter(logits, 3) > float("-inf")).sum(-1) == 3).all()
    assert torch.equal(top_k_filter(logits, MASK), logits)


def test_gumbel_noise_lands_on_the_requested_device_whatever_the_default_device():
    with torch.device("meta"):
        noise = gumbel((4,), make_generators(0, [0], "cpu"), "cpu")
    assert noise.device.type == "cpu" and torch.isfinite(noise).all()


def test_decode_defaults_and_misuse():
    # Without return_trajectory there is none; a linear temperature ends at 0 by default, so with a start of 0
    # there is no noise at any step and the least confident tokens stay masked after every step.
    length = 40
    sizes = (torch.randperm(length, generator=torch.Generator().manual_seed(2)) + 1).tolist()
    fn, _ = support_logits_fn(sizes, [])
    start = torch.full((1, length), MASK)
    plain = parallel_decode(fn, start, mask_token_id=MASK, generators=make_generators(0, [0], "cpu"), steps=4)
    assert plain.trajectory is None
    out = parallel_decode(fn, start, mask_token_id=MASK, generators=make_generators(0, [0], "cpu"), steps=4,
                          choice_temperature=0.0, temperature_schedule="linear", return_trajectory=True)
    by_doubt = sorted(range(length), key=lambda j: -sizes[j])
    for step, count in enumerate(expected_counts(length, 4, "cosine")[:-1]):
        assert set((out.trajectory[0, step] == MASK).nonzero().flatten().tolist()) == set(by_doubt[:count])
    with pytest.raises(MuseInputError, match="^3 samples but 2 generators$"):
        parallel_decode(fn, torch.full((3, length), MASK), mask_token_id=MASK,
                        generators=make_generators(0, [0, 1], "cpu"), steps=2)
    with pytest.raises(ValueError, match="^guidance needs unconditional logits$"):
        parallel_decode(fn, start, mask_token_id=MASK, generators=make_generators(0, [0], "cpu"), steps=2,
                        guidance_t=1.0)


def test_decoding_ignores_the_default_device():
    # Everything the loop makes lives where the tokens and generators are (or on the host, for the schedule),
    # so a caller's torch.set_default_device cannot move a tensor elsewhere or force a device sync.
    start = torch.full((2, 32), MASK)
    settings = dict(mask_token_id=MASK, steps=5, guidance_t=2.0, top_k=8, return_trajectory=True)
    expected = parallel_decode(random_logits_fn(guided=True), start, generators=make_generators(0, [0, 1], "cpu"),
                               **settings)
    fn = random_logits_fn(guided=True)
    with torch.device("meta"):
        out = parallel_decode(fn, start, generators=make_generators(0, [0, 1], "cpu"), **settings)
    assert out.tokens.device.type == "cpu" and torch.equal(out.trajectory, expected.trajectory)


def test_random_draws_do_not_depend_on_the_default_dtype():
    logits = torch.randn(2, 16, MASK, generator=torch.Generator().manual_seed(3))
    draws = sample_categorical(logits, make_generators(0, [0, 1], "cpu"))
    noise = gumbel((16,), make_generators(0, [0], "cpu"), "cpu")
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        assert torch.equal(sample_categorical(logits, make_generators(0, [0, 1], "cpu")), draws)
        assert torch.equal(gumbel((16,), make_generators(0, [0], "cpu"), "cpu"), noise)
    finally:
        torch.set_default_dtype(before)


def test_generators_are_seeded_per_sample_on_the_device_asked_for():
    before = int(np.random.SeedSequence([7, 3]).generate_state(1, dtype=np.uint64)[0] >> 1)
    assert [g.initial_seed() for g in make_generators(7, [3], "cpu")] == [before]  # replica 0 by default
    assert make_generators(7, [3], "cpu", replica=2)[0].initial_seed() == sample_seed(7, 3, 2) != before
    # A device without generators of its own is an error, not a silent fallback to the CPU's.
    with pytest.raises(RuntimeError, match="meta|META"):
        make_generators(0, [0], "meta")


def test_the_arccos_schedule_is_halton_maskgits():
    # Halton-MaskGIT reveals (1 - arccos(r) / (pi / 2)) N tokens after step r: more than cosine early, fewer late.
    # Catches: arccos without the pi/2 normalisation (ratios above 1), or the schedule reversed.
    for r in (0.0, 0.25, 0.5, 0.75, 1.0):
        assert float(mask_ratio(r, "arccos")) == pytest.approx(math.acos(r) / (math.pi / 2), abs=1e-6)
    assert float(mask_ratio(0.1, "arccos")) < float(mask_ratio(0.1, "cosine"))
    assert float(mask_ratio(0.9, "arccos")) > float(mask_ratio(0.9, "cosine"))
    tokens = torch.full((1, 64), MASK)
    out = decode(tokens, steps=8, schedule="arccos")
    assert [(t == MASK).sum().item() for t in out.trajectory[0]] == expected_counts(64, 8, "arccos")
