"""Profiles of a Muse preset for timing: "full" (the preset as is), "scaled" (narrower, same work shape) and
"tiny" (the family's test-size preset under the preset's name: for dry runs of paper-size experiments).

The scaled profile divides every width by `divisor` (transformer hidden and MLP sizes, the T5 encoder's
d_model / d_ff / d_kv, VQGAN channels) and keeps what sets the shape of the work: layer counts, head
counts, token grids (16x16 and 64x64), text length, codebook size, multi-axis blocks and step counts. Its
times are those of a model with the paper's structure, not the paper's size: every row says "scaled".
"""

from __future__ import annotations

import dataclasses

from muse.config import PipelineConfig, VQConfig
from muse.presets import preset_config

PROFILES = ("full", "scaled", "tiny")
DIVISOR = 16


def narrow(value: int, divisor: int = DIVISOR, floor: int = 4) -> int:
    """A width of the scaled profile: value / divisor, at least `floor`."""
    return max(floor, value // divisor)


def scaled_t5(model: dict, divisor: int = DIVISOR) -> dict:
    """A T5 encoder config (muse.text's dict) with its widths (d_model, d_ff, d_kv) divided by `divisor`."""
    return {**model, **{key: narrow(model[key], divisor) for key in ("d_model", "d_ff", "d_kv")}}


def scaled_vq(config: VQConfig, divisor: int = DIVISOR) -> VQConfig:
    """A VQGAN config with every channel count divided by `divisor` (at least 8), same levels (same f)."""
    channels = lambda widths: tuple(narrow(c, divisor, 8) for c in widths)  # noqa: E731
    return dataclasses.replace(
        config, block_out_channels=channels(config.block_out_channels),
        decoder_block_out_channels=channels(config.decoder_block_out_channels) if config.decoder_block_out_channels else None,
        latent_channels=narrow(config.latent_channels, divisor), norm_num_groups=8,
    )


def scaled_config(config: PipelineConfig, divisor: int = DIVISOR) -> PipelineConfig:
    """The scaled profile of a Muse (T5-conditioned) pipeline config."""
    if config.family != "muse" or config.text.kind != "t5":
        raise ValueError(f"the scaled profile is defined for Muse presets, not {config.name}")
    text_model = scaled_t5(config.text.model, divisor)
    text_dim = text_model["d_model"]
    base = dataclasses.replace(config.base, hidden=narrow(config.base.hidden, divisor),
                               mlp=narrow(config.base.mlp, divisor), text_dim=text_dim)
    superres = None
    if config.superres is not None:
        sr = config.superres
        superres = dataclasses.replace(
            sr, enc_hidden=narrow(sr.enc_hidden, divisor), enc_mlp=narrow(sr.enc_mlp, divisor),
            hidden=narrow(sr.hidden, divisor), mlp=narrow(sr.mlp, divisor), text_dim=text_dim,
        )
    return dataclasses.replace(
        config, name=f"{config.name}-scaled", text=dataclasses.replace(config.text, model=text_model),
        vq_base=scaled_vq(config.vq_base, divisor), base=base,
        vq_superres=scaled_vq(config.vq_superres, divisor) if config.vq_superres else None, superres=superres,
    )


def tiny_config(config: PipelineConfig) -> PipelineConfig:
    """The tiny profile of a preset: muse-tiny's shape (or amused-tiny's for aMUSEd) under the preset's name,
    with the preset's samplers, so a paper-size experiment can be dry-run in seconds. Never a paper number."""
    tiny = preset_config("amused-tiny" if config.family == "amused" else "muse-tiny")
    if config.superres is None:
        tiny = dataclasses.replace(tiny, vq_superres=None, superres=None)
    return dataclasses.replace(tiny, name=f"{config.name}-tiny", base_sampler=config.base_sampler,
                               superres_sampler=config.superres_sampler)
