"""FLOPs per image, counted by torch.utils.flop_counter on the meta device (exact for the counted ops,
with no memory and no time, so paper-size models count as cheaply as tiny ones).

A Muse image costs: the text encoder once (prompt and, with guidance, the negative prompt), every base step
(one batched forward over conditional and unconditional tokens), every super-res step, and the VQ decode.
"""

from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode


def count_flops(fn) -> int:
    """FLOPs of everything `fn()` runs, by torch's FlopCounterMode (matrix products, convolutions, attention)."""
    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def muse_stage_flops(pipe, resolution: int) -> dict[str, int]:
    """FLOPs per image of each stage of a MusePipeline built on the meta device, at `resolution`.

    Steps and guidance come from the pipeline's sampler presets: a guided step is one forward over 2 images.
    """
    if next(pipe.base.parameters()).device.type != "meta":
        raise ValueError("count FLOPs on a pipeline built with device='meta'")
    config = pipe.config
    guided = bool(config.base_sampler.guidance_t)
    batch = 2 if guided else 1
    with torch.device("meta"):
        ids = torch.zeros(batch, config.text.max_length, dtype=torch.long)
    flops = {}
    model = pipe.text_encoder.model
    if pipe.text_encoder.kind == "t5":
        # No attention mask: it does not change the FLOPs, and preparing it reads a value back (impossible on meta).
        flops["text_encoder"] = count_flops(lambda: model(input_ids=ids))
    else:
        flops["text_encoder"] = count_flops(lambda: model(input_ids=ids, output_hidden_states=True))
    with torch.device("meta"):
        from muse.text import TextEmbedding

        width = pipe.text_encoder.dim
        # aMUSEd also conditions on CLIP's projected pooled embedding.
        pooled = torch.zeros(batch, model.config.projection_dim) if config.family == "amused" else None
        text = TextEmbedding(torch.zeros(batch, config.text.max_length, width),
                             torch.ones(batch, config.text.max_length, dtype=torch.bool), pooled)
        base_tokens = torch.zeros(batch, pipe.base.seq_len, dtype=torch.long)

    def base_step():
        pipe.base.logits(base_tokens, pipe.base.context(text))

    # The context (text projection) is computed once per image; a step is the forward.
    context_flops = count_flops(lambda: pipe.base.context(text))
    flops["base"] = context_flops + config.base_sampler.steps * (count_flops(base_step) - context_flops)
    tokens, vq = base_tokens[:1], pipe.vq_base
    if resolution > config.base_resolution:
        sr_batch = 2 if config.superres_sampler.guidance_t else 1
        with torch.device("meta"):
            sr_tokens = torch.zeros(sr_batch, pipe.superres.seq_len, dtype=torch.long)
        sr_text = TextEmbedding(text.hidden[:sr_batch], text.mask[:sr_batch])
        low = base_tokens[:sr_batch]
        sr_context = count_flops(lambda: pipe.superres.context(sr_text, low))
        step = count_flops(lambda: pipe.superres.logits(sr_tokens, pipe.superres.context(sr_text, low))) - sr_context
        flops["superres"] = sr_context + config.superres_sampler.steps * step
        tokens, vq = sr_tokens[:1], pipe.vq_superres
    flops["decoder"] = count_flops(lambda: vq.decode(tokens, resolution // vq.downsample))
    flops["total"] = sum(flops.values())
    return flops
