"""The Parti-3B latency proxy (Yu et al. 2022), `parti_config`: an autoregressive encoder-decoder of Parti-3B's
shape with random weights, for timing only (bench/models/proxies/__init__.py says what a proxy is and is not).

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

"""

from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch
from torch import nn

from bench.latency.stagewise import Part, StagePlan, build_for_timing, random_tokens
from bench.models.flops import count_flops
from bench.models.profiles import narrow, scaled_t5, scaled_vq
from bench.models.proxies import PARTI_NAME
from bench.models.proxies.autoregressive import ARDecoder
from bench.models.proxies.shared import (
    cast,
    check_profile,
    count_params,
    sample_indices_of,
    stage_clock,
    text_role,
    with_unconditional,
)
from bench.models.runner import CompileSpec, Runner
from muse.config import TextConfig, VQConfig
from muse.errors import MuseInputError
from muse.presets import T5_TINY, VQ_F8
from muse.sampling import make_generators, sample_categorical, top_k_filter
from muse.seeding import seeded_init
from muse.text import TextEncoder, build_text_model, load_tokenizer
from muse.vqgan import VQTokenizer


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
    check_profile(profile)
    text = TextConfig(kind="t5", model=dict(_PARTI_T5), tokenizer="byt5", max_length=128)
    if profile == "full":
        return PartiConfig(profile, text)
    if profile == "scaled":
        return PartiConfig(profile, dataclasses.replace(text, model=scaled_t5(text.model)), hidden=narrow(2048),
                           mlp=narrow(8192), vq=scaled_vq(VQ_F8))
    tiny_vq = VQConfig(block_out_channels=(8, 8, 8, 8), layers_per_block=1, latent_channels=8, codebook_size=64,
                       norm_num_groups=4)
    return PartiConfig(profile, TextConfig(kind="t5", model=dict(T5_TINY), tokenizer="byt5", max_length=64),
                       hidden=32, layers=2, heads=4, mlp=64, codebook_size=64, vq=tiny_vq)


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
        with seeded_init(seed, device):
            text_model = build_text_model(config.text)
            decoder = ARDecoder(config.codebook_size, config.seq_len, config.hidden, config.layers, config.heads,
                                config.mlp, text_model.config.d_model)
            vq = VQTokenizer.from_config(config.vq)
        if vq.downsample * config.grid != 256 or vq.codebook_size != config.codebook_size:
            raise ValueError("the VQ decoder must map the token grid to 256x256 over the same codebook")
        text = TextEncoder(text_model, load_tokenizer(config.text), "t5", config.text.max_length)
        proxy = cls(config, text, decoder, vq)
        if device.type != "meta" and dtype not in (None, torch.float32):
            cast(proxy.modules(), dtype)
        return proxy

    def modules(self) -> dict[str, nn.Module]:
        return {"text_encoder": self.text_encoder.model, "decoder": self.decoder, "vq": self.vq}

    def parameter_counts(self) -> dict[str, int]:
        """Parameters per component and in total (the whole VQGAN is counted, as for Muse's rows)."""
        counts = {name: count_params(m) for name, m in self.modules().items()}
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
        stage = stage_clock(stage_timer)
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        indices = sample_indices_of(prompts, sample_indices)
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
            text = self.text_encoder(with_unconditional(prompts))
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


def parti_stage_plan(config: PartiConfig, prompts: list[str], device, dtype, seed: int = 0):
    """The per_stage plan of the Parti proxy (bench/latency/stagewise.py): the text encoder over 2B prompts; the text
    memory once, then per token one cached decoder step at the middle position (whose cost is the mean over
    the sequence, see the module docstring) and the guidance, top-k and draw on [B, codebook] logits; one VQ
    decode of the batch."""
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

    return StagePlan({"text": text_role(config.text, prompts, build), "generator": generator_role,
                      "decoder": decoder_role})


def parti_runner(name: str, latency_cfg: Any, device, dtype, init_seed: int, seed: int, *,
                 compile: CompileSpec = CompileSpec(), prompts: list[str] | None = None,
                 materialize: bool = True) -> Runner:
    """The latency Runner of the Parti-3B proxy (bench.models.runner.RunnerFactory) at latency.profile (full,
    scaled or tiny); random weights, timed eager (`compile` is not applied). With materialize=False nothing is
    built: the runner holds the per_stage plan."""
    profile = latency_cfg.profile
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

