"""The one seeded-init helper (muse.seeding.seeded_init) behind every random-weight model (Muse, Stable Diffusion,
the Parti and Imagen proxies, random CLIP): exactly torch.manual_seed(seed) in a private RNG state, so the same
seed gives the weights it gave before the builders shared it, and the caller's stream is left alone."""

import torch
from torch import nn

from muse.seeding import seeded_init


def test_seeded_init_is_manual_seed_in_a_private_rng_state():
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    with seeded_init(7):
        built = nn.Linear(8, 8)
    assert torch.equal(torch.rand(3), expected_next)  # the caller's stream goes on as if nothing was built
    torch.manual_seed(7)
    reference = nn.Linear(8, 8)
    assert torch.equal(built.weight, reference.weight) and torch.equal(built.bias, reference.bias)
    with seeded_init(8):
        assert not torch.equal(nn.Linear(8, 8).weight, reference.weight)


def test_seeded_init_builds_on_the_device_it_names_then_restores_the_default():
    with seeded_init(0, "meta"):
        built = nn.Linear(4, 4)
    assert built.weight.device.type == "meta"
    assert torch.empty(1).device.type == "cpu"
