"""Latency PROXIES for the rows of the paper's Table 3 that have no public weights: Parti-3B and Imagen.

Neither model was released, so neither can be reproduced. What is built here is the same *shape of work*
(layer counts, widths, token counts, step counts, guidance as one batched forward of 2B) with random
weights, for timing only. Every row these produce is named "parti-3b-proxy" or "imagen-proxy": it is never
the real model, and its images are noise. Shape choices below are ours where the papers are silent or where
we could not check them offline; each is stated.

Parti-3B proxy (Yu et al. 2022), `parti_config`
- Encoder-decoder Transformer, ~3B parameters. Shape (the paper's Table 1 as we recall it; NOT verified
  offline): encoder 12 layers, decoder 36 layers, hidden 2048, MLP 8192 (plain, not gated), 32 heads of 64.
  Full profile: text encoder 0.637B + decoder 2.452B = 3.089B (+3% over "3B").
- Text encoder: a T5-shaped encoder (transformers' T5EncoderModel, via muse.text), vocabulary 16,000 (Parti's
  SentencePiece size as we recall it; it only changes embedding parameters), 128 text tokens, byte tokenizer.
- Decoder: decoder-only over the 32x32 = 1024 image tokens (codebook 8192, plus a BOS id), learned
  positions, each layer causal self-attention + cross-attention to the text + MLP (muse.layers.Block's
  modules), pre-LayerNorm. Decoding is autoregressive: 1024 sequential steps, each ONE forward of 2B rows
  (conditional and empty-prompt unconditional), with a pre-allocated KV cache [2B, heads, 1024, head_dim]
  per layer and scaled_dot_product_attention over the filled prefix. The text's cross-attention keys and
  values are computed once per image. Guidance l_u + s (l_c - l_u), s = 3.0; temperature 1.0; top-k 256
  (all three UNKNOWN for Parti; they do not change the cost). Per-sample generators (muse.sampling).
- Image decode: a STAND-IN for Parti's ViT-VQGAN (not public): Muse's convolutional f=8 VQGAN
  (muse.presets.VQ_F8, its wide decoder), 32x32 tokens -> 256x256, 0.233B parameters with its encoder (counted,
  as in Muse's rows; total 3.32B). Its decode costs 2.6 TFLOP per image; by our rough estimate a
  ViT-Large-sized transformer decoder over 1024 tokens costs about half that, so this stage is, if
  anything, pessimistic.
  Only resolution 256 is supported.
- steps: None decodes all 1024 tokens from position 0. steps=k decodes k tokens in the MIDDLE of the
  sequence (positions (1024 - k) // 2 onward), attending to a cache whose earlier entries are left as zeros
  (never computed: the cost of attention does not depend on the values). This is for the extrapolated
  protocol (fixed + 1024 x per-step, fitted from k = 1 and 2): with a KV cache token p attends to p + 1
  keys, so a token's cost grows linearly with p and the mean over the sequence is the cost at the middle.
  Timing the first tokens instead would underestimate: counted with FlopCounterMode, a token step (2 rows)
  costs 8.599 GFLOP at position 0, 8.900 at the middle and 9.202 at the last position (full profile), so the
  self-attention over the prefix is ~0%, 3.4% and 6.6% of a token's FLOPs, and extrapolating from the first
  tokens would undercount the loop by 3.4%. In the scaled profile (width 128) attention matters far more,
  since it scales with the width and the projections with its square: 42.0, 60.8 and 79.7 MFLOP, i.e. 0%,
  31% and 47% (a 31% undercount from the first tokens). Wall-clock attention cost need not be exactly
  linear in the prefix (kernels, memory bandwidth); the middle window matches it in FLOPs exactly. The
  images of a steps=k run are not meaningful (timing only).
- FLOPs (`parti_stage_flops`): a token step is counted on the meta device at the first and at the last
  position; FlopCounterMode's attention count is linear in the number of keys, so the exact sum over all
  positions is n x (first + last) / 2 (checked against a brute-force sum in the tests). Full profile, per
  image: text encoder 0.31 TFLOP, autoregressive 9.27 TFLOP (the text memory once, then 1024 steps of
  8.6 to 9.2 GFLOP), image decode 2.60 TFLOP; total 12.18 TFLOP.

Imagen proxy (Saharia et al. 2022), `imagen_config`
- Text encoder: frozen T5-XXL encoder (muse.presets.T5_XXL), 128 tokens, byte tokenizer: 4.76B parameters.
- Cascade of three pixel-space UNets (diffusers' UNet2DConditionModel), each with cross-attention to the T5
  tokens and an attention-pooled text embedding added to the time embedding (addition_embed_type="text",
  as Imagen pools the text into its conditioning); heads of 64 channels. Parameter targets from the paper,
  what we chose (full profile) and what it counts:
    base 64x64 (~2B): channels (512, 1024, 1536, 1792), 2 resnets per level, cross+self attention at
      32, 16 and 8 (not at 64) and in the mid block: 2.079B (+3.9%).
    super-res 64 -> 256 (~600M): channels (128, 256, 512, 1024), resnets (2, 4, 4, 3), attention only at
      the lowest level (32x32) and cross-attention only (no self-attention anywhere; the mid block is two
      plain resnets): 0.587B (-2.1%).
    super-res 256 -> 1024 (~400M): channels (128, 256, 512, 768), resnets (2, 2, 3, 3), cross-attention
      only, at 128x128: 0.394B (-1.5%).
  Total with T5-XXL: 7.82B.
  A super-res UNet sees the noisy image concatenated with the low-res image upsampled (bilinear) to its
  size, 6 input channels, as Imagen does; Imagen's noise-conditioning augmentation of that input is not
  modelled (a few element-wise ops). The paper's UNets ("Efficient U-Net") differ in block internals;
  diffusers' transformer blocks are heavier, so our counts come from fewer resnets per level.
- Sampling: DDIM (diffusers' DDIMScheduler, eta 0, cosine "squaredcos_cap_v2" betas over 1000 training
  steps, Imagen's dynamic thresholding at the 99.5th percentile, uncapped). Step counts are UNKNOWN (the
  paper does not say what its timing used): defaults 256 (base), 128 (64 -> 256), 64 (256 -> 1024), settable
  with `imagen_config(steps=...)` or `imagen_runner(..., steps=...)`. Guidance scales 7.0 / 4.0 / 4.0
  (UNKNOWN; no effect on cost), each step one UNet forward of 2B. A feasibility check on these defaults:
  per image they need 1.26 PFLOP at 256 and 4.34 PFLOP at 1024, the 256 -> 1024 stage alone 3.08 PFLOP
  (24 TFLOP per UNet forward of one 1024x1024 image). Table 3's 13.3 - 9.1 = 4.2 s for that stage is at
  most 1.16 PFLOP on one TPUv4 chip at its 275 TFLOP/s bf16 peak, so the paper's timing must have used
  fewer steps there (about 24 or fewer at this UNet's cost), a cheaper UNet, or several chips: read the
  proxy's 1024 row as an upper estimate, and sweep `steps` when comparing.
- Resolutions 256 (base + first super-res) and 1024 (all three), as Table 3's Imagen rows (9.1 s, 13.3 s).
- FLOPs (`imagen_stage_flops`): one UNet forward of 2 images (guided) counted on the meta device, times the
  step count, per stage; element-wise work (scheduler, thresholding, upsampling) is not counted. Full
  profile, per image at the default steps: text encoder 2.38 TFLOP, base 700.7 (2.74 per step),
  superres_256 555.8 (4.34 per step), superres_1024 3076.9 (48.1 per step); total 1258.8 TFLOP at 256 and
  4335.7 TFLOP at 1024.

Profiles: "full" (the shapes above), "scaled" (every width / 16, with the same layers, heads, token and pixel
counts and steps; UNet and VQGAN norm groups 8), "tiny" (for tests: a few hundred thousand parameters, the same
token grid and resolutions).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from bench.models.flops import count_flops
from bench.models.runner import Runner
from muse.config import TextConfig, VQConfig
from muse.errors import MuseInputError
from muse.layers import Block
from muse.presets import T5_TINY, T5_XXL, VQ_F8
from muse.sampling import make_generators, sample_categorical, top_k_filter
from muse.text import TextEncoder, build_text_model, load_tokenizer
from muse.vqgan import VQTokenizer

PARTI_NAME = "parti-3b-proxy"
IMAGEN_NAME = "imagen-proxy"
PROFILES = ("full", "scaled", "tiny")
DIVISOR = 16  # the scaled profile's width divisor, as bench/models/profiles.py


def _check_profile(profile: str) -> None:
    if profile not in PROFILES:
        raise MuseInputError(f"unknown proxy profile {profile!r}: use one of {', '.join(PROFILES)}")


def _narrow(value: int, floor: int = 4) -> int:
    return max(floor, value // DIVISOR)


def _narrow_t5(model: dict) -> dict:
    return {**model, **{key: _narrow(model[key]) for key in ("d_model", "d_ff", "d_kv")}}


def _stage(stage_timer):
    return stage_timer or (lambda name: contextlib.nullcontext())


@contextlib.contextmanager
def _seeded_build(device: torch.device, seed: int):
    """Build under a private RNG state seeded with `seed`, on `device` (the caller's generator is untouched)."""
    rng_devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=rng_devices, device_type=device.type if rng_devices else "cuda"), device:
        torch.manual_seed(seed)
        yield


def _cast(modules: dict[str, nn.Module], dtype: torch.dtype) -> None:
    # Through a ModuleDict (nn.Module.to): diffusers' own ModelMixin.to warns about fp32 modules on every cast.
    nn.ModuleDict(modules).to(dtype=dtype)


def _params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _with_unconditional(prompts: Sequence[str]) -> list[str]:
    # Conditional rows first, then one empty prompt per sample: one batched text forward of 2B.
    return [*prompts, *[""] * len(prompts)]


def _indices(prompts, sample_indices) -> list[int]:
    indices = list(range(len(prompts))) if sample_indices is None else [int(i) for i in sample_indices]
    if len(indices) != len(prompts):
        raise MuseInputError(f"{len(indices)} sample indices for {len(prompts)} prompts")
    return indices


# ---- Parti-3B proxy ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PartiConfig:
    """Shape of the Parti proxy for one profile (see the module docstring)."""

    profile: str
    text: TextConfig
    hidden: int = 2048
    layers: int = 36
    heads: int = 32
    mlp: int = 8192
    codebook_size: int = 8192
    grid: int = 32  # 256 / 8: 1024 image tokens
    vq: VQConfig = field(default_factory=lambda: dataclasses.replace(VQ_F8))
    guidance_scale: float = 3.0
    temperature: float = 1.0
    top_k: int | None = 256

    @property
    def seq_len(self) -> int:
        return self.grid * self.grid


_PARTI_T5 = dict(
    vocab_size=16000, d_model=2048, d_kv=64, d_ff=8192, num_layers=12, num_heads=32, feed_forward_proj="gelu",
    dropout_rate=0.0, layer_norm_epsilon=1e-6, tie_word_embeddings=False,
)


def parti_config(profile: str = "full") -> PartiConfig:
    """The Parti proxy's shape: "full" (Parti-3B-sized), "scaled" (widths / 16) or "tiny" (tests)."""
    _check_profile(profile)
    text = TextConfig(kind="t5", model=dict(_PARTI_T5), tokenizer="byt5", max_length=128)
    if profile == "full":
        return PartiConfig(profile, text)
    if profile == "scaled":
        from bench.models.profiles import (
            scaled_vq as narrow_vq,  # the Muse scaled profile's VQGAN narrowing
        )

        return PartiConfig(profile, dataclasses.replace(text, model=_narrow_t5(text.model)), hidden=_narrow(2048),
                           mlp=_narrow(8192), vq=narrow_vq(VQ_F8, DIVISOR))
    tiny_vq = VQConfig(block_out_channels=(8, 8, 8, 8), layers_per_block=1, latent_channels=8, codebook_size=64,
                       norm_num_groups=4)
    return PartiConfig(profile, TextConfig(kind="t5", model=dict(T5_TINY), tokenizer="byt5", max_length=64),
                       hidden=32, layers=2, heads=4, mlp=64, codebook_size=64, vq=tiny_vq)


class KVCache:
    """Pre-allocated self-attention keys and values of every decoder layer, [layers, B, heads, max_len,
    head_dim] each; a step writes its position and attends to the filled prefix."""

    def __init__(self, layers: int, batch: int, heads: int, max_len: int, head_dim: int, device, dtype):
        self.k = torch.zeros(layers, batch, heads, max_len, head_dim, device=device, dtype=dtype)
        self.v = torch.zeros_like(self.k)


class ARDecoder(nn.Module):
    """Decoder-only Transformer over image tokens with cross-attention to the text (Parti's decoder shape).

    The input at position p is the token at p - 1 (a BOS id at p = 0); the output predicts the token at p.
    `forward` is the teacher-forced causal pass over a whole prefix (no cache); `step` is one cached step.
    """

    def __init__(self, codebook_size: int, seq_len: int, hidden: int, layers: int, heads: int, mlp: int,
                 context_dim: int):
        super().__init__()
        self.bos_id = codebook_size
        self.seq_len, self.heads, self.head_dim = seq_len, heads, hidden // heads
        self.embed = nn.Embedding(codebook_size + 1, hidden)
        self.pos = nn.Parameter(torch.zeros(1, seq_len, hidden))
        nn.init.normal_(self.pos, std=0.02)
        self.blocks = nn.ModuleList(Block(hidden, heads, mlp, context_dim) for _ in range(layers))
        self.norm = nn.LayerNorm(hidden)
        self.head = nn.Linear(hidden, codebook_size, bias=False)

    def new_cache(self, batch: int) -> KVCache:
        """An empty KV cache for `batch` rows, on the decoder's device and dtype."""
        param = self.pos
        return KVCache(len(self.blocks), batch, self.heads, self.seq_len, self.head_dim, param.device, param.dtype)

    def memory(self, text: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Cross-attention keys and values of every layer, [B, heads, S, head_dim]: computed once per image."""
        b, s, _ = text.shape
        out = []
        for block in self.blocks:
            cross = block.cross
            k, v = cross.kv(text).view(b, s, 2, cross.kv_heads, cross.head_dim).unbind(2)
            out.append((k.transpose(1, 2), v.transpose(1, 2)))
        return out

    @staticmethod
    def _cross(block: Block, h: torch.Tensor, kv, mask: torch.Tensor) -> torch.Tensor:
        b, n, _ = h.shape
        cross = block.cross
        q = cross.q(h).view(b, n, cross.heads, cross.head_dim).transpose(1, 2)
        y = F.scaled_dot_product_attention(q, *kv, attn_mask=mask[:, None, None, :])
        return cross.out(y.transpose(1, 2).reshape(b, n, -1))

    def step(self, token: torch.Tensor, position: int, cache: KVCache, memory, mask: torch.Tensor) -> torch.Tensor:
        """Logits [B, codebook] at `position` from its input token [B], writing its keys and values into
        `cache` and attending to positions 0..position (the filled prefix)."""
        b = token.shape[0]
        x = self.embed(token)[:, None] + self.pos[:, position : position + 1]
        for i, block in enumerate(self.blocks):
            q, k, v = block.attn.project(block.norm1(x))  # [B, heads, 1, head_dim]
            cache.k[i, :, :, position] = k[:, :, 0]
            cache.v[i, :, :, position] = v[:, :, 0]
            y = F.scaled_dot_product_attention(q, cache.k[i, :, :, : position + 1], cache.v[i, :, :, : position + 1])
            x = x + block.attn.out(y.transpose(1, 2).reshape(b, 1, -1))
            x = x + self._cross(block, block.norm2(x), memory[i], mask)
            x = x + block.mlp(block.norm3(x))
        return self.head(self.norm(x))[:, 0]

    def forward(self, inputs: torch.Tensor, text: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Teacher-forced logits [B, n, codebook] for inputs [B, n] (BOS first), causal, without a cache."""
        b, n = inputs.shape
        x = self.embed(inputs) + self.pos[:, :n]
        for block in self.blocks:
            q, k, v = block.attn.project(block.norm1(x))
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            x = x + block.attn.out(y.transpose(1, 2).reshape(b, n, -1))
            x = x + block.cross(block.norm2(x), text, mask)
            x = x + block.mlp(block.norm3(x))
        return self.head(self.norm(x))


class PartiProxy:
    """Text encoder -> autoregressive decoder over 1024 image tokens -> VQ decode, with random weights."""

    resolutions = (256,)

    def __init__(self, config: PartiConfig, text_encoder: TextEncoder, decoder: ARDecoder, vq: VQTokenizer):
        self.config = config
        self.text_encoder = text_encoder
        self.decoder = decoder.eval().requires_grad_(False)
        self.vq = vq.eval().requires_grad_(False)

    @classmethod
    def from_config(cls, config: PartiConfig, device="cpu", dtype: torch.dtype | None = None,
                    seed: int = 0) -> "PartiProxy":
        """Random weights drawn from `seed`; device="meta" allocates nothing (parameter and FLOP counts)."""
        device = torch.device(device)
        with _seeded_build(device, seed):
            text_model = build_text_model(config.text)
            decoder = ARDecoder(config.codebook_size, config.seq_len, config.hidden, config.layers, config.heads,
                                config.mlp, text_model.config.d_model)
            vq = VQTokenizer.from_config(config.vq)
        if vq.downsample * config.grid != 256 or vq.codebook_size != config.codebook_size:
            raise ValueError("the VQ decoder must map the token grid to 256x256 over the same codebook")
        text = TextEncoder(text_model, load_tokenizer(config.text), "t5", config.text.max_length)
        proxy = cls(config, text, decoder, vq)
        if device.type != "meta" and dtype not in (None, torch.float32):
            _cast(proxy.modules(), dtype)
        return proxy

    def modules(self) -> dict[str, nn.Module]:
        return {"text_encoder": self.text_encoder.model, "decoder": self.decoder, "vq": self.vq}

    def parameter_counts(self) -> dict[str, int]:
        """Parameters per component and in total (the whole VQGAN is counted, as for Muse's rows)."""
        counts = {name: _params(m) for name, m in self.modules().items()}
        counts["total"] = sum(counts.values())
        return counts

    @torch.no_grad()
    def generate(self, prompts: Sequence[str], *, resolution: int = 256, seed: int = 0,
                 sample_indices: Sequence[int] | None = None, steps: int | None = None,
                 stage_timer: Callable[[str], contextlib.AbstractContextManager] | None = None,
                 output_type: str = "pt") -> torch.Tensor:
        """Images [B, 3, 256, 256] in [0, 1] (output_type "pt") or tokens [B, 1024] ("tokens").

        Stages "text_encoder", "autoregressive" and "decoder" (image decode) go to `stage_timer`. steps=None
        decodes every token; steps=k decodes k tokens in the middle of the sequence (module docstring).
        Sample i draws only from its generator, seeded by (seed, sample_indices[i]).
        """
        if resolution not in self.resolutions:
            raise MuseInputError(f"{PARTI_NAME} supports resolution 256 only, got {resolution}")
        stage = _stage(stage_timer)
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        indices = _indices(prompts, sample_indices)
        config, decoder = self.config, self.decoder
        length = config.seq_len
        if steps is None:
            positions = range(length)
        elif 1 <= steps <= length:
            start = (length - steps) // 2
            positions = range(start, start + steps)
        else:
            raise MuseInputError(f"steps must be between 1 and {length} tokens, got {steps}")
        b = len(prompts)
        with stage("text_encoder"):
            text = self.text_encoder(_with_unconditional(prompts))
        with stage("autoregressive"):
            device = decoder.pos.device
            memory = decoder.memory(text.hidden)
            cache = decoder.new_cache(2 * b)
            generators = make_generators(seed, indices, device)
            tokens = torch.zeros(b, length, dtype=torch.long, device=device)
            previous = tokens[:, positions[0] - 1] if positions[0] else torch.full_like(tokens[:, 0], decoder.bos_id)
            for position in positions:
                cond, uncond = decoder.step(torch.cat([previous, previous]), position, cache, memory,
                                            text.mask).float().chunk(2)
                logits = uncond + config.guidance_scale * (cond - uncond)
                logits = top_k_filter(logits / config.temperature, config.top_k)
                previous = sample_categorical(logits, generators)
                tokens[:, position] = previous
        if output_type == "tokens":
            return tokens
        with stage("decoder"):
            return self.vq.decode(tokens, config.grid)


def parti_stage_flops(proxy: PartiProxy, tokens: int | None = None) -> dict[str, int]:
    """FLOPs per image of each stage of a PartiProxy built on the meta device.

    text_encoder: one forward over the prompt and the empty prompt (2 rows); autoregressive: the text's
    cross-attention keys and values (once) plus the steps at positions 0..tokens-1 (default: all), each over
    2 rows, summed exactly (a step's count is linear in its position: n x (first + last) / 2); decoder: one
    VQ decode. Sampling (top-k, softmax draws) is element-wise and not counted.
    """
    decoder = proxy.decoder
    if decoder.pos.device.type != "meta":
        raise MuseInputError("count FLOPs on a proxy built with device='meta'")
    config = proxy.config
    n = config.seq_len if tokens is None else tokens
    if not 1 <= n <= config.seq_len:
        raise MuseInputError(f"tokens must be between 1 and {config.seq_len}, got {n}")
    length = config.text.max_length
    with torch.device("meta"):
        ids = torch.zeros(2, length, dtype=torch.long)
        text = torch.zeros(2, length, proxy.text_encoder.dim)
        mask = torch.ones(2, length, dtype=torch.bool)
        token = torch.zeros(2, dtype=torch.long)
        image_tokens = torch.zeros(1, config.seq_len, dtype=torch.long)
    memory = decoder.memory(text)
    cache = decoder.new_cache(2)
    first, last = (count_flops(lambda p=p: decoder.step(token, p, cache, memory, mask)) for p in (0, n - 1))
    flops = {
        # No attention mask: it does not change the FLOPs, and preparing it reads a value back (impossible on meta).
        "text_encoder": count_flops(lambda: proxy.text_encoder.model(input_ids=ids)),
        "autoregressive": count_flops(lambda: decoder.memory(text)) + n * (first + last) // 2,
        "decoder": count_flops(lambda: proxy.vq.decode(image_tokens, config.grid)),
    }
    flops["total"] = sum(flops.values())
    return flops


def _text_role(text: TextConfig, prompts: list[str], build: dict):
    """Both proxies' per_stage text role: their T5 encoder over the prompts and as many empty prompts, one call."""
    from bench.latency.stagewise import Part, repeat_prompts, shared_module

    def role(resolutions, shared):
        model = shared_module(shared, ("text", text.kind, json.dumps(text.model, sort_keys=True)),
                              lambda: build_text_model(text), **build)
        encoder = TextEncoder(model, load_tokenizer(text), "t5", text.max_length)

        def parts(resolution, batch):
            both = _with_unconditional(repeat_prompts(prompts, batch))
            return [Part("text_encoder", f"text encoder over {len(both)} prompts", 1, lambda: encoder(both))]

        return parts

    return role


def parti_stage_plan(config: PartiConfig, prompts: list[str], device, dtype, seed: int = 0):
    """The per_stage plan of the Parti proxy (bench/latency/stagewise.py): the text encoder over 2B prompts; the text
    memory once, then per token one cached decoder step at the middle position (whose cost is the mean over
    the sequence, see the module docstring) and the guidance, top-k and draw on [B, codebook] logits; one VQ
    decode of the batch."""
    from bench.latency.stagewise import Part, StagePlan, build_for_timing, random_tokens

    build = dict(device=device, dtype=dtype, seed=seed)

    def generator_role(resolutions, shared):
        decoder = build_for_timing(lambda: ARDecoder(config.codebook_size, config.seq_len, config.hidden,
                                                     config.layers, config.heads, config.mlp,
                                                     config.text.model["d_model"]), **build)

        def parts(resolution, batch):
            if resolution not in PartiProxy.resolutions:
                return None
            rows, middle = 2 * batch, config.seq_len // 2
            g = torch.Generator().manual_seed(seed)
            text = torch.randn(rows, config.text.max_length, config.text.model["d_model"], generator=g).to(device, dtype)
            mask = torch.ones(rows, config.text.max_length, dtype=torch.bool, device=device)
            token = random_tokens(rows, 1, config.codebook_size, device, seed)[:, 0]
            cache = decoder.new_cache(rows)
            with torch.inference_mode():
                memory = decoder.memory(text)
                cond, uncond = decoder.step(token, middle, cache, memory, mask).float().chunk(2)
            generators = make_generators(seed, range(batch), device)

            def draw():
                logits = top_k_filter((uncond + config.guidance_scale * (cond - uncond)) / config.temperature,
                                      config.top_k)
                return sample_categorical(logits, generators)

            return [Part("autoregressive", "text memory (once per image)", 1, lambda: decoder.memory(text)),
                    Part("autoregressive", f"cached decoder step at position {middle} over {rows} rows",
                         config.seq_len, lambda: decoder.step(token, middle, cache, memory, mask)),
                    Part("autoregressive", "guidance, top-k and draw", config.seq_len, draw)]

        return parts

    def decoder_role(resolutions, shared):
        vq = build_for_timing(lambda: VQTokenizer.from_config(config.vq), **build)

        def parts(resolution, batch):
            tokens = random_tokens(batch, config.seq_len, config.codebook_size, device, seed)
            return [Part("decoder", f"VQ decode of {batch} samples", 1, lambda: vq.decode(tokens, config.grid))]

        return parts

    return StagePlan({"text": _text_role(config.text, prompts, build), "generator": generator_role,
                      "decoder": decoder_role})


def parti_runner(profile: str, device, dtype, init_seed: int, seed: int, *, prompts: list[str] | None = None,
                 materialize: bool = True) -> Runner:
    """The latency Runner of the Parti-3B proxy at `profile` (full, scaled or tiny); random weights. With
    materialize=False nothing is built: the runner holds the per_stage plan."""
    config = parti_config(profile)
    meta = PartiProxy.from_config(config, device="meta")
    flops = parti_stage_flops(meta)
    full = flops if profile == "full" else parti_stage_flops(PartiProxy.from_config(parti_config("full"), device="meta"))
    common = dict(model=PARTI_NAME, weights="random", profile=profile, resolutions=PartiProxy.resolutions,
                  params=meta.parameter_counts()["total"], steps=lambda r: config.seq_len, flops=lambda r: dict(flops),
                  full_steps=lambda r: {"autoregressive": config.seq_len}, arch=PARTI_NAME,
                  full_flops=lambda r: None if profile == "tiny" else dict(full))
    if not materialize:
        return Runner(run=None, stage_plan=parti_stage_plan(config, prompts or [""], device, dtype, init_seed),
                      **common)
    proxy = PartiProxy.from_config(config, device=device, dtype=dtype, seed=init_seed)

    def run(prompts, resolution, clock, steps=None):
        with torch.inference_mode():
            return proxy.generate(prompts, resolution=resolution, seed=seed, steps=steps, stage_timer=clock)

    return Runner(run=run, pipeline=proxy, **common)


# ---- Imagen proxy -----------------------------------------------------------------------------------------

IMAGEN_STAGES = ("base", "superres_256", "superres_1024")
_STAGE_SIZE = {"base": 64, "superres_256": 256, "superres_1024": 1024}


def _unet(channels, layers, attention_levels: int, context_dim: int, *, cross_only: bool, size: int,
          in_channels: int, pool_heads: int = 64, head_channels: int = 64, **extra) -> dict:
    """UNet2DConditionModel kwargs: attention in the `attention_levels` coarsest levels, heads of
    `head_channels` (diffusers' `attention_head_dim` is the head COUNT in this class)."""
    plain = len(channels) - attention_levels
    return dict(
        sample_size=size, in_channels=in_channels, out_channels=3, block_out_channels=tuple(channels),
        layers_per_block=layers, cross_attention_dim=context_dim, only_cross_attention=cross_only,
        attention_head_dim=tuple(max(1, c // head_channels) for c in channels),
        down_block_types=("DownBlock2D",) * plain + ("CrossAttnDownBlock2D",) * attention_levels,
        up_block_types=("CrossAttnUpBlock2D",) * attention_levels + ("UpBlock2D",) * plain,
        addition_embed_type="text", addition_embed_type_num_heads=pool_heads,
        # diffusers' cross-attention mid block always self-attends too; a cross-only (super-res) UNet gets
        # a mid block of plain resnets instead, so it has no self-attention anywhere.
        mid_block_type="UNetMidBlock2D" if cross_only else "UNetMidBlock2DCrossAttn", **extra,
    )


@dataclass(frozen=True)
class ImagenConfig:
    """Shape and sampler of the Imagen proxy for one profile (see the module docstring)."""

    profile: str
    text: TextConfig
    unets: dict  # stage -> UNet2DConditionModel kwargs
    steps: dict = field(default_factory=lambda: {"base": 256, "superres_256": 128, "superres_1024": 64})
    guidance: dict = field(default_factory=lambda: {"base": 7.0, "superres_256": 4.0, "superres_1024": 4.0})
    scheduler: dict = field(default_factory=lambda: dict(
        num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2", clip_sample=False, set_alpha_to_one=True,
        prediction_type="epsilon", thresholding=True, dynamic_thresholding_ratio=0.995, sample_max_value=1e4,
    ))  # DDIMScheduler; sample_max_value this high leaves Imagen's dynamic threshold uncapped


def imagen_config(profile: str = "full", steps: dict | None = None) -> ImagenConfig:
    """The Imagen proxy's shape: "full" (paper-sized), "scaled" (widths / 16) or "tiny" (tests).

    steps overrides the (UNKNOWN) default step counts by stage, e.g. {"base": 64}.
    """
    _check_profile(profile)
    if profile == "tiny":
        text = TextConfig(kind="t5", model=dict(T5_TINY), tokenizer="byt5", max_length=64)
        small = dict(context_dim=32, pool_heads=4, head_channels=16, norm_num_groups=4)
        unets = {
            "base": _unet((16, 32), 1, 1, size=64, in_channels=3, cross_only=False, **small),
            "superres_256": _unet((8, 16), 1, 1, size=256, in_channels=6, cross_only=True, **small),
            "superres_1024": _unet((4, 8), 1, 1, size=1024, in_channels=6, cross_only=True, **small),
        }
    else:
        text_model = dict(T5_XXL) if profile == "full" else _narrow_t5(T5_XXL)
        text = TextConfig(kind="t5", model=text_model, tokenizer="byt5", max_length=128)
        scale = 1 if profile == "full" else DIVISOR
        # Scaled: same head counts (head channels / 16) and 8 norm groups, which divide every narrowed width.
        common = dict(context_dim=text_model["d_model"], head_channels=64 // scale,
                      **({} if profile == "full" else dict(norm_num_groups=8)))
        unets = {
            "base": _unet([c // scale for c in (512, 1024, 1536, 1792)], 2, 3, size=64, in_channels=3,
                          cross_only=False, **common),
            "superres_256": _unet([c // scale for c in (128, 256, 512, 1024)], (2, 4, 4, 3), 1, size=256,
                                  in_channels=6, cross_only=True, **common),
            "superres_1024": _unet([c // scale for c in (128, 256, 512, 768)], (2, 2, 3, 3), 1, size=1024,
                                   in_channels=6, cross_only=True, **common),
        }
    config = ImagenConfig(profile, text, unets)
    if steps:
        unknown = set(steps) - set(IMAGEN_STAGES)
        if unknown:
            raise MuseInputError(f"unknown Imagen stages {sorted(unknown)}: use {', '.join(IMAGEN_STAGES)}")
        config = dataclasses.replace(config, steps={**config.steps, **steps})
    return config


def _imagen_stages(resolution: int) -> tuple[str, ...]:
    if resolution == 256:
        return IMAGEN_STAGES[:2]
    if resolution == 1024:
        return IMAGEN_STAGES
    raise MuseInputError(f"{IMAGEN_NAME} supports resolutions 256 and 1024 (Table 3's rows), got {resolution}")


class ImagenProxy:
    """T5-XXL -> 64x64 base UNet -> 256 super-res -> 1024 super-res, pixel-space DDIM, random weights."""

    resolutions = (256, 1024)

    def __init__(self, config: ImagenConfig, text_encoder: TextEncoder, unets: dict[str, nn.Module]):
        self.config = config
        self.text_encoder = text_encoder
        self.unets = {name: unet.eval().requires_grad_(False) for name, unet in unets.items()}

    @classmethod
    def from_config(cls, config: ImagenConfig, device="cpu", dtype: torch.dtype | None = None,
                    seed: int = 0) -> "ImagenProxy":
        """Random weights drawn from `seed`; device="meta" allocates nothing (parameter and FLOP counts)."""
        from diffusers import UNet2DConditionModel

        device = torch.device(device)
        with _seeded_build(device, seed):
            text_model = build_text_model(config.text)
            unets = {name: UNet2DConditionModel(**config.unets[name]) for name in IMAGEN_STAGES}
        text = TextEncoder(text_model, load_tokenizer(config.text), "t5", config.text.max_length)
        proxy = cls(config, text, unets)
        if device.type != "meta" and dtype not in (None, torch.float32):
            _cast(proxy.modules(), dtype)
        return proxy

    def modules(self) -> dict[str, nn.Module]:
        return {"text_encoder": self.text_encoder.model, **self.unets}

    def parameter_counts(self) -> dict[str, int]:
        """Parameters per component and in total."""
        counts = {name: _params(m) for name, m in self.modules().items()}
        counts["total"] = sum(counts.values())
        return counts

    def _denoise(self, stage: str, noise: torch.Tensor, low: torch.Tensor | None, steps: int, context, mask):
        from diffusers import DDIMScheduler

        unet, scale = self.unets[stage], self.config.guidance[stage]
        scheduler = DDIMScheduler(**self.config.scheduler)
        scheduler.set_timesteps(steps, device=noise.device)
        x = noise
        extra = None if low is None else torch.cat([low, low])
        for t in scheduler.timesteps:
            # Conditional and unconditional rows in one batched forward of 2B.
            inputs = torch.cat([x, x]) if extra is None else torch.cat([torch.cat([x, x]), extra], dim=1)
            eps = unet(inputs, t, encoder_hidden_states=context, encoder_attention_mask=mask, return_dict=False)[0]
            cond, uncond = eps.chunk(2)
            x = scheduler.step(uncond + scale * (cond - uncond), t, x, return_dict=False)[0]
        return x

    @torch.no_grad()
    def generate(self, prompts: Sequence[str], *, resolution: int = 256, seed: int = 0,
                 sample_indices: Sequence[int] | None = None, steps: int | None = None,
                 stage_timer: Callable[[str], contextlib.AbstractContextManager] | None = None) -> torch.Tensor:
        """Images [B, 3, resolution, resolution] in [0, 1] (float32), resolution 256 or 1024.

        Stages "text_encoder", "base", "superres_256" (and "superres_1024") go to `stage_timer`. steps=None
        uses the config's step counts; an int runs every denoising loop with that many steps. Sample i's
        noise comes only from its generator, seeded by (seed, sample_indices[i]).
        """
        stages = _imagen_stages(resolution)
        stage = _stage(stage_timer)
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        indices = _indices(prompts, sample_indices)
        if steps is not None and steps < 1:
            raise MuseInputError(f"steps must be at least 1, got {steps}")
        with stage("text_encoder"):
            text = self.text_encoder(_with_unconditional(prompts))
        device, dtype = text.hidden.device, self.unets["base"].dtype
        context = text.hidden.to(dtype)
        # diffusers turns a key mask into an additive bias; it wants 1 at real tokens.
        mask = text.mask.to(dtype)
        generators = make_generators(seed, indices, device)
        x = None
        for name in stages:
            size = _STAGE_SIZE[name]
            with stage(name):
                noise = torch.stack([torch.randn(3, size, size, generator=g, device=device) for g in generators])
                low = None if x is None else F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
                x = self._denoise(name, noise.to(dtype), low, steps or self.config.steps[name], context, mask)
        return ((x.float().clamp(-1, 1) + 1) / 2)


@torch.no_grad()
def imagen_stage_flops(proxy: ImagenProxy, resolution: int, steps: dict | None = None) -> dict[str, int]:
    """FLOPs per image of each stage of an ImagenProxy built on the meta device, at `resolution`.

    text_encoder: one forward over the prompt and the empty prompt; each UNet stage: its step count (the
    config's, or `steps`) x one forward over 2 images. Element-wise work is not counted.
    """
    if proxy.unets["base"].device.type != "meta":
        raise MuseInputError("count FLOPs on a proxy built with device='meta'")
    steps = {**proxy.config.steps, **(steps or {})}
    length = proxy.config.text.max_length
    with torch.device("meta"):
        ids = torch.zeros(2, length, dtype=torch.long)
        context = torch.zeros(2, length, proxy.text_encoder.dim)
        mask = torch.ones(2, length)
        t = torch.tensor(999)  # an explicit tensor: nothing is read back from the meta device
    flops = {"text_encoder": count_flops(lambda: proxy.text_encoder.model(input_ids=ids))}
    for name in _imagen_stages(resolution):
        unet, size = proxy.unets[name], _STAGE_SIZE[name]
        with torch.device("meta"):
            x = torch.zeros(2, unet.config.in_channels, size, size)
        flops[name] = steps[name] * count_flops(
            lambda: unet(x, t, encoder_hidden_states=context, encoder_attention_mask=mask))
    flops["total"] = sum(flops.values())
    return flops


def imagen_stage_plan(config: ImagenConfig, prompts: list[str], device, dtype, seed: int = 0):
    """The per_stage plan of the Imagen proxy (bench/latency/stagewise.py): T5-XXL over 2B prompts; per denoising
    step of each stage one UNet forward over 2B images (DDIM arithmetic, thresholding and upsampling, all
    element-wise, are not timed). Pixel-space: no image decoder."""
    from diffusers import UNet2DConditionModel

    from bench.latency.stagewise import Part, StagePlan, build_for_timing

    build = dict(device=device, dtype=dtype, seed=seed)

    def generator_role(resolutions, shared):
        stages = {stage for r in resolutions if r in ImagenProxy.resolutions for stage in _imagen_stages(r)}
        unets = build_for_timing(lambda: nn.ModuleDict(
            {name: UNet2DConditionModel(**config.unets[name]) for name in IMAGEN_STAGES if name in stages}), **build)

        def parts(resolution, batch):
            if resolution not in ImagenProxy.resolutions:
                return None
            rows, width = 2 * batch, config.text.model["d_model"]
            g = torch.Generator().manual_seed(seed)
            context = torch.randn(rows, config.text.max_length, width, generator=g).to(device, dtype)
            mask = torch.ones(rows, config.text.max_length, device=device, dtype=dtype)
            t = torch.tensor(999, device=device)
            out = []
            for name in _imagen_stages(resolution):
                unet, size = unets[name], _STAGE_SIZE[name]
                x = torch.randn(rows, unet.config.in_channels, size, size, generator=g).to(device, dtype)
                out.append(Part(name, f"UNet forward over {rows} images at {size}x{size}", config.steps[name],
                                lambda unet=unet, x=x: unet(x, t, encoder_hidden_states=context,
                                                            encoder_attention_mask=mask, return_dict=False)))
            return out

        return parts

    return StagePlan({"text": _text_role(config.text, prompts, build), "generator": generator_role})


def imagen_runner(profile: str, device, dtype, init_seed: int, seed: int, steps: dict | None = None, *,
                  prompts: list[str] | None = None, materialize: bool = True) -> Runner:
    """The latency Runner of the Imagen proxy at `profile` (full, scaled or tiny); random weights.

    steps overrides the default (UNKNOWN) step counts by stage. With materialize=False nothing is built: the
    runner holds the per_stage plan.
    """
    config = imagen_config(profile, steps)
    meta = ImagenProxy.from_config(config, device="meta")
    flops = {r: imagen_stage_flops(meta, r) for r in ImagenProxy.resolutions}
    if profile == "full":
        full = flops
    else:
        full_meta = ImagenProxy.from_config(imagen_config("full", steps), device="meta")
        full = {r: imagen_stage_flops(full_meta, r) for r in ImagenProxy.resolutions}

    def full_steps(resolution):
        return {name: config.steps[name] for name in _imagen_stages(resolution)}

    common = dict(model=IMAGEN_NAME, weights="random", profile=profile, resolutions=ImagenProxy.resolutions,
                  params=meta.parameter_counts()["total"],
                  steps=lambda r: "+".join(str(s) for s in full_steps(r).values()), flops=lambda r: dict(flops[r]),
                  full_steps=full_steps, arch=IMAGEN_NAME,
                  full_flops=lambda r: None if profile == "tiny" else dict(full[r]))
    if not materialize:
        return Runner(run=None, stage_plan=imagen_stage_plan(config, prompts or [""], device, dtype, init_seed),
                      **common)
    proxy = ImagenProxy.from_config(config, device=device, dtype=dtype, seed=init_seed)

    def run(prompts, resolution, clock, run_steps=None):
        with torch.inference_mode():
            return proxy.generate(prompts, resolution=resolution, seed=seed, steps=run_steps, stage_timer=clock)

    return Runner(run=run, pipeline=proxy, **common)


RUNNERS = {PARTI_NAME: parti_runner, IMAGEN_NAME: imagen_runner}
