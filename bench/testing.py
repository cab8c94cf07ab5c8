"""Stand-in networks and cross-check helpers for tests and offline runs; never part of a measured number.

- `RandomConvFeatures`: a tiny convolutional feature network with fixed random weights, injected in place of
  Inception for FID and KID (`eval.fid.feature_extractor={_target_: bench.testing.RandomConvFeatures}`). Its
  name says in every protocol that its numbers are not Inception FIDs.
- `open_clip_to_transformers` and `transformers_clip_for_torchmetrics`: convert an OpenAI-style open_clip CLIP
  (the tiny test CLIP, bench.metrics.clip_model.TINY_CLIP_NAME, or real ViT weights) to a transformers
  CLIPModel folder that torchmetrics' CLIPScore loads: an independent implementation to cross-check CLIP score.

Production code never imports this module; configs name its classes by `_target_`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn


class RandomConvFeatures(nn.Module):
    """A tiny convolutional feature network with fixed random weights, for offline smoke tests and CI.

    Weights are drawn from a generator seeded with `seed`, so the same (seed, dims, width) gives the
    same features in every process. Input: [N, 3, H, W] floats in [0, 255], any H, W >= 1. Output:
    [N, dims]. Numbers computed with it are NOT comparable with Inception FIDs; its `protocol_name`
    says so in every result.
    """

    def __init__(self, seed: int = 0, dims: int = 64, width: int = 16) -> None:
        super().__init__()
        self.seed, self.dims, self.width = int(seed), int(dims), int(width)
        self.conv1 = nn.Conv2d(3, width, 5, stride=4, padding=2)
        self.conv2 = nn.Conv2d(width, 2 * width, 3, stride=2, padding=1)
        self.conv3 = nn.Conv2d(2 * width, dims, 3, stride=2, padding=1)
        generator = torch.Generator().manual_seed(self.seed)
        with torch.no_grad():
            for conv in (self.conv1, self.conv2, self.conv3):
                fan_in = conv.in_channels * conv.kernel_size[0] * conv.kernel_size[1]
                conv.weight.copy_(torch.randn(conv.weight.shape, generator=generator) * (2.0 / fan_in) ** 0.5)
                conv.bias.copy_(torch.randn(conv.bias.shape, generator=generator) * 0.1)
        self.requires_grad_(False)
        self.eval()

    @property
    def protocol_name(self) -> str:
        """Stable id for protocols and cache keys; flags that the numbers are not Inception FIDs."""
        return (
            f"bench.testing.RandomConvFeatures(seed={self.seed},dims={self.dims},width={self.width}) "
            "[random weights: NOT comparable with Inception FID/KID]"
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[N, 3, H, W] in [0, 255] -> [N, dims]: strided convs with tanh, then a global average pool."""
        x = x / 127.5 - 1.0
        x = torch.tanh(self.conv2(torch.tanh(self.conv1(x))))
        return self.conv3(x).mean(dim=(2, 3))


def _layer_map(prefix_oc: str, prefix_hf: str, n_layers: int,
               sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """open_clip residual blocks (fused in_proj) -> transformers CLIPEncoderLayer names (separate q, k, v)."""
    out = {}
    for i in range(n_layers):
        oc, hf = f"{prefix_oc}.resblocks.{i}.", f"{prefix_hf}.layers.{i}."
        q, k, v = sd[oc + "attn.in_proj_weight"].chunk(3)
        qb, kb, vb = sd[oc + "attn.in_proj_bias"].chunk(3)
        out.update({
            hf + "self_attn.q_proj.weight": q, hf + "self_attn.k_proj.weight": k, hf + "self_attn.v_proj.weight": v,
            hf + "self_attn.q_proj.bias": qb, hf + "self_attn.k_proj.bias": kb, hf + "self_attn.v_proj.bias": vb,
            hf + "self_attn.out_proj.weight": sd[oc + "attn.out_proj.weight"],
            hf + "self_attn.out_proj.bias": sd[oc + "attn.out_proj.bias"],
            hf + "layer_norm1.weight": sd[oc + "ln_1.weight"], hf + "layer_norm1.bias": sd[oc + "ln_1.bias"],
            hf + "layer_norm2.weight": sd[oc + "ln_2.weight"], hf + "layer_norm2.bias": sd[oc + "ln_2.bias"],
            hf + "mlp.fc1.weight": sd[oc + "mlp.c_fc.weight"], hf + "mlp.fc1.bias": sd[oc + "mlp.c_fc.bias"],
            hf + "mlp.fc2.weight": sd[oc + "mlp.c_proj.weight"], hf + "mlp.fc2.bias": sd[oc + "mlp.c_proj.bias"],
        })
    return out


def _check_convertible(model: Any) -> str:
    """The activation name ("quick_gelu" or "gelu") of an OpenAI-style open_clip CLIP; ValueError otherwise."""
    from open_clip.model import CLIP
    from open_clip.transformer import QuickGELU, VisionTransformer
    from torch import nn

    problems = []
    if not isinstance(model, CLIP) or not isinstance(model.visual, VisionTransformer):
        problems.append("only open_clip.CLIP with a ViT image tower (OpenAI layout) is supported")
    else:
        visual = model.visual
        if getattr(visual, "attn_pool", None) is not None or getattr(visual, "pool_type", "tok") != "tok":
            problems.append("the image tower must pool its class token")
        if getattr(visual, "final_ln_after_pool", False):
            problems.append("final_ln_after_pool is not supported")
        if getattr(model, "text_pool_type", "argmax") != "argmax":
            problems.append("the text tower must pool at the end token (argmax)")
        if not isinstance(model.text_projection, nn.Parameter) or not isinstance(visual.proj, nn.Parameter):
            problems.append("projections must be bias-free matrices")
        blocks = [*model.transformer.resblocks, *visual.transformer.resblocks]
        if any(not isinstance(b.attn, nn.MultiheadAttention) for b in blocks):
            problems.append("attention must be nn.MultiheadAttention")
        if any(not isinstance(b.ls_1, nn.Identity) or not isinstance(b.ls_2, nn.Identity) for b in blocks):
            problems.append("layer scale is not supported")
        act = blocks[0].mlp.gelu
        if not problems and isinstance(act, QuickGELU):
            return "quick_gelu"
        if not problems and isinstance(act, nn.GELU) and act.approximate == "none":
            return "gelu"
        if not problems:
            problems.append(f"activation {type(act).__name__} has no transformers equivalent")
    raise ValueError("cannot convert this open_clip model to transformers CLIPModel: " + "; ".join(problems))


def open_clip_to_transformers(model: Any, out_dir: str | Path, *,
                              preprocess_cfg: Mapping[str, Any] | None = None) -> Path:
    """Save an OpenAI-style open_clip CLIP as a transformers CLIPModel + CLIPProcessor folder; returns it.

    Works for OpenAI's ViT CLIPs (ViT-B/32, B/16, L/14, L/14-336) and TINY_CLIP_CONFIG. The processor uses
    the model's preprocessing (`preprocess_cfg`, default model.visual.preprocess_cfg): shorter side resized
    with PIL bicubic, centre crop, the same mean/std (transformers' PIL backend, CLIPImageProcessorPil, the
    resampler open_clip's transform uses on PIL images), and a CLIPTokenizer over the BPE that open_clip
    ships (muse.text.clip_bpe_tokenizer_dir), so no download is needed.
    """
    from transformers import CLIPConfig, CLIPModel, CLIPProcessor, CLIPTokenizer
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    from muse.text import clip_bpe_tokenizer_dir

    act = _check_convertible(model)
    sd = {k: v.detach().float().cpu() for k, v in model.state_dict().items()}
    visual = model.visual
    text_block, vis_block = model.transformer.resblocks[0], visual.transformer.resblocks[0]
    context_length, text_width = sd["positional_embedding"].shape
    vis_width = sd["visual.class_embedding"].shape[0]
    patch = sd["visual.conv1.weight"].shape[-1]
    image_size = visual.image_size[0] if isinstance(visual.image_size, (tuple, list)) else visual.image_size
    embed_dim = sd["text_projection"].shape[1]
    config = CLIPConfig(
        text_config=dict(
            vocab_size=sd["token_embedding.weight"].shape[0], hidden_size=text_width,
            intermediate_size=text_block.mlp.c_fc.out_features, num_hidden_layers=len(model.transformer.resblocks),
            num_attention_heads=text_block.attn.num_heads, max_position_embeddings=context_length, hidden_act=act,
            layer_norm_eps=text_block.ln_1.eps, projection_dim=embed_dim,
            # CLIP's BPE: <|startoftext|> 49406, <|endoftext|> 49407; transformers pools at the first end token.
            bos_token_id=49406, eos_token_id=49407, pad_token_id=49407,
        ),
        vision_config=dict(
            hidden_size=vis_width, intermediate_size=vis_block.mlp.c_fc.out_features,
            num_hidden_layers=len(visual.transformer.resblocks), num_attention_heads=vis_block.attn.num_heads,
            image_size=image_size, patch_size=patch, hidden_act=act, layer_norm_eps=vis_block.ln_1.eps,
            projection_dim=embed_dim,
        ),
        projection_dim=embed_dim,
    )
    hf_sd = {
        "text_model.embeddings.token_embedding.weight": sd["token_embedding.weight"],
        "text_model.embeddings.position_embedding.weight": sd["positional_embedding"],
        "text_model.final_layer_norm.weight": sd["ln_final.weight"],
        "text_model.final_layer_norm.bias": sd["ln_final.bias"],
        "text_projection.weight": sd["text_projection"].T.contiguous(),
        "vision_model.embeddings.class_embedding": sd["visual.class_embedding"],
        "vision_model.embeddings.patch_embedding.weight": sd["visual.conv1.weight"],
        "vision_model.embeddings.position_embedding.weight": sd["visual.positional_embedding"],
        "vision_model.pre_layrnorm.weight": sd["visual.ln_pre.weight"],  # sic: transformers' spelling
        "vision_model.pre_layrnorm.bias": sd["visual.ln_pre.bias"],
        "vision_model.post_layernorm.weight": sd["visual.ln_post.weight"],
        "vision_model.post_layernorm.bias": sd["visual.ln_post.bias"],
        "visual_projection.weight": sd["visual.proj"].T.contiguous(),
        "logit_scale": sd["logit_scale"].reshape(()),
        **_layer_map("transformer", "text_model.encoder", len(model.transformer.resblocks), sd),
        **_layer_map("visual.transformer", "vision_model.encoder", len(visual.transformer.resblocks), sd),
    }
    hf_model = CLIPModel(config)
    missing, unexpected = hf_model.load_state_dict(hf_sd, strict=False)
    missing = [k for k in missing if not k.endswith("position_ids")]
    if missing or unexpected:
        raise ValueError(f"conversion left parameters unmatched: missing {missing}, unexpected {unexpected}")
    pp = dict(preprocess_cfg or visual.preprocess_cfg)
    if pp.get("resize_mode", "shortest") != "shortest":
        raise ValueError(f"resize_mode {pp['resize_mode']!r}: only 'shortest' has a CLIPImageProcessor equivalent")
    resample = {"bicubic": 3, "bilinear": 2}[pp.get("interpolation", "bicubic")]
    size = pp.get("size", image_size)
    size = size[0] if isinstance(size, (tuple, list)) else size
    image_processor = CLIPImageProcessorPil(
        size={"shortest_edge": size}, crop_size={"height": size, "width": size}, resample=resample,
        image_mean=list(pp.get("mean")), image_std=list(pp.get("std")),
    )
    bpe = clip_bpe_tokenizer_dir()
    tokenizer = CLIPTokenizer(os.path.join(bpe, "vocab.json"), os.path.join(bpe, "merges.txt"),
                              model_max_length=context_length)
    out_dir = Path(out_dir)
    hf_model.save_pretrained(out_dir)
    CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(out_dir)
    return out_dir


class _TensorFeatures(torch.nn.Module):
    """A CLIPModel whose get_*_features return tensors, as torchmetrics 1.9 expects: since transformers 5 they
    return a ModelOutput (projected embedding in .pooler_output), which torchmetrics <= 1.9 cannot use
    (Lightning-AI/torchmetrics#3407)."""

    def __init__(self, model: Any):
        super().__init__()
        self.model = model
        self.config = model.config

    def _tensor(self, out: Any) -> torch.Tensor:
        return out if isinstance(out, torch.Tensor) else out.pooler_output

    def get_image_features(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        return self._tensor(self.model.get_image_features(*args, **kwargs))

    def get_text_features(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        return self._tensor(self.model.get_text_features(*args, **kwargs))


def transformers_clip_for_torchmetrics(folder: str | Path) -> tuple[Any, Any]:
    """(model, processor) from a CLIPModel folder, for torchmetrics:
    `CLIPScore(model_name_or_path=lambda: transformers_clip_for_torchmetrics(folder))`.

    The processor resizes with PIL (CLIPImageProcessorPil), as open_clip's transform does on PIL images;
    transformers 5 otherwise picks its torchvision backend, whose bicubic differs by up to one 8-bit level.
    Known differences that remain on the text side: transformers' fast CLIPTokenizer does not apply ftfy
    (typographic quotes tokenise differently; 12 of the 1632 PartiPrompts), and torchmetrics 1.9 cuts a
    prompt longer than the context by slicing the token ids, which drops the end token the text embedding
    is pooled at: compare on prompts that fit the context.
    """
    from transformers import CLIPModel, CLIPProcessor, CLIPTokenizer
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    model = CLIPModel.from_pretrained(str(folder)).eval()
    processor = CLIPProcessor(image_processor=CLIPImageProcessorPil.from_pretrained(str(folder)),
                              tokenizer=CLIPTokenizer.from_pretrained(str(folder)))
    return _TensorFeatures(model), processor
