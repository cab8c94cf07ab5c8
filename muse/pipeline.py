"""MusePipeline: text -> 256x256 (base) and text -> 512x512 (base + super-res), and zero-shot editing.

The same object runs Muse at any size (random or trained weights) and aMUSEd; every stage decodes with
muse.sampling.parallel_decode.
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Sequence

import torch
from torch import nn

from .config import PipelineConfig, SamplerConfig
from .errors import MuseInputError
from .output import MuseOutput, to_pil
from .presets import preset_config
from .sampling import (
    check_choice_temperature,
    check_token_order,
    make_generators,
    parallel_decode,
    schedule_power,
    to_guidance_scale,
    to_guidance_t,
)
from .seeding import seeded_init
from .text import TextEmbedding, TextEncoder, build_text_model, load_tokenizer
from .transformer import build_transformers
from .vqgan import VQTokenizer


@contextlib.contextmanager
def fixed_cpu_threads(threads: int | None):
    """Run the block with exactly `threads` intra-op CPU threads, then restore the caller's count (None: as is)."""
    if threads is None:
        yield
        return
    if threads < 1:
        raise MuseInputError(f"decode_threads must be at least 1, got {threads}")
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class MusePipeline:
    """The Muse cascade. Build with from_preset, from_pretrained or from_config."""

    def __init__(self, config: PipelineConfig, text_encoder: TextEncoder, vq_base: VQTokenizer, base: nn.Module,
                 vq_superres: VQTokenizer | None = None, superres: nn.Module | None = None, weights: str = "random"):
        self.config = config
        self.text_encoder = text_encoder
        self.vq_base = vq_base
        self.base = base.eval().requires_grad_(False)
        self.vq_superres = vq_superres
        self.superres = superres.eval().requires_grad_(False) if superres is not None else None
        self.weights = weights

    # ---- construction -------------------------------------------------------------------------------------
    @classmethod
    def from_config(cls, config: PipelineConfig, device="cpu", dtype: torch.dtype | None = None,
                    seed: int = 0) -> "MusePipeline":
        """Random weights of the config's shape, drawn from `seed` (the same weights in every process on the
        same kind of device); device="meta" allocates nothing (for parameter counts)."""
        with seeded_init(seed, device):
            text_model = build_text_model(dataclasses.replace(config.text, pretrained=None))
            vq_base = VQTokenizer.from_config(config.vq_base)
            vq_superres = VQTokenizer.from_config(config.vq_superres) if config.vq_superres else None
            base, superres = build_transformers(config)
        text = TextEncoder(text_model, load_tokenizer(config.text), config.text.kind, config.text.max_length)
        pipe = cls(config, text, vq_base, base, vq_superres, superres, weights="random")
        return pipe.to(device, dtype)

    @classmethod
    def from_preset(cls, name: str, device="cpu", dtype: torch.dtype | None = None, seed: int = 0) -> "MusePipeline":
        """A named preset (muse.presets.PRESET_NAMES) with random weights drawn from `seed`; offline."""
        return cls.from_config(preset_config(name), device=device, dtype=dtype, seed=seed)

    @classmethod
    def from_pretrained(cls, path_or_id: str, device="cpu", dtype: torch.dtype | None = None) -> "MusePipeline":
        """Our safetensors checkpoints (save_pretrained), aMUSEd diffusers folders, or aMUSEd hub ids."""
        from .checkpoint import load_pipeline

        return load_pipeline(cls, path_or_id).to(device, dtype)

    def save_pretrained(self, path: str) -> None:
        """Write config JSON and safetensors weights to folder `path` (loadable with from_pretrained)."""
        from .checkpoint import save_pipeline

        save_pipeline(self, path)

    def modules(self) -> dict[str, nn.Module]:
        parts = {"text_encoder": self.text_encoder.model, "vq_base": self.vq_base, "base": self.base}
        if self.superres is not None:
            parts.update(vq_superres=self.vq_superres, superres=self.superres)
        return parts

    def to(self, device=None, dtype: torch.dtype | None = None) -> "MusePipeline":
        if device is not None and torch.device(device).type == "meta":
            return self
        for module in self.modules().values():
            module.to(device=device, dtype=dtype)
        return self

    @property
    def device(self) -> torch.device:
        return next(self.base.parameters()).device

    def parameter_counts(self) -> dict[str, int]:
        """Parameters per component and in total (works on the meta device)."""
        counts = {name: sum(p.numel() for p in m.parameters()) for name, m in self.modules().items()}
        counts["total"] = sum(counts.values())
        return counts

    @property
    def supported_resolutions(self) -> tuple[int, ...]:
        return self.config.resolutions

    @property
    def mask_token_id(self) -> int:
        return self.base.mask_token_id

    def stage_samplers(self, resolution: int, guidance_scale: float | None = None, steps: int | None = None,
                       superres_steps: int | None = None, choice_temperature: float | None = None,
                       schedule: str | None = None, token_order: str | None = None) -> dict[str, SamplerConfig]:
        """The sampler settings of every stage a call at `resolution` runs, with the call's overrides applied.

        guidance_scale (the CFG scale g >= 1; Muse's t = g - 1, keeping each stage's ramp) applies to every
        stage, steps to the base stage and superres_steps to the super-res stage; None keeps the preset's.
        choice_temperature (the Gumbel temperature of the re-masking choice, keeping the stage's temperature
        schedule) and schedule (the masking schedule: cosine, linear, arccos or powP) apply to the base stage, as steps
        does: the base stage lays out the image (which objects, where, what colour), the super-res stage refines
        it conditioned on the base's tokens, so a sweep of them varies the composition alone. token_order
        (confidence, halton or halton-random: which tokens each step keeps) applies to every stage: it is the
        sampler's, not a setting of one stage.
        Bad values raise MuseInputError before anything runs.
        """
        for name, value in (("steps", steps), ("superres_steps", superres_steps)):
            if value is not None and value < 1:
                raise MuseInputError(f"{name} must be at least 1, got {value}")
        t = None if guidance_scale is None else to_guidance_t(guidance_scale)
        base = {"steps": steps, "schedule": schedule,
                "choice_temperature": None if choice_temperature is None else check_choice_temperature(choice_temperature)}
        if schedule is not None:
            schedule_power(schedule)  # refuses an unknown schedule now, not at the first step
        every = {"guidance_t": t, "token_order": None if token_order is None else check_token_order(token_order)}

        def stage(sampler: SamplerConfig, overrides: dict) -> SamplerConfig:
            changes = {k: v for k, v in {**every, **overrides}.items() if v is not None}
            return dataclasses.replace(sampler, **changes)

        stages = {"base": stage(self.config.base_sampler, base)}
        if resolution > self.config.base_resolution:
            stages["superres"] = stage(self.config.superres_sampler, {"steps": superres_steps})
        return stages

    def sampler_settings(self, resolution: int, guidance_scale: float | None = None, steps: int | None = None,
                         superres_steps: int | None = None, choice_temperature: float | None = None,
                         schedule: str | None = None, token_order: str | None = None) -> dict:
        """The decoding protocol behind an image at `resolution` (with a call's overrides), for results files:
        every setting of each stage, guidance as both the CFG scale g (`guidance_scale`) and Muse's t."""
        settings = {}
        for name, sampler in self.stage_samplers(resolution, guidance_scale, steps, superres_steps,
                                                 choice_temperature, schedule, token_order).items():
            values = dataclasses.asdict(sampler)
            settings[name] = {"guidance_scale": to_guidance_scale(values["guidance_t"]), **values}
        return settings

    # ---- generation ---------------------------------------------------------------------------------------
    def encode_text(self, prompts: Sequence[str], negative_prompt: str | Sequence[str] | None, guided: bool):
        """Conditional embeddings, followed (when guided) by the negative / empty-prompt ones: [2B, ...]."""
        cond = self.text_encoder(list(prompts))
        if not guided:
            return cond
        if negative_prompt is None or isinstance(negative_prompt, str):
            negative_prompt = [negative_prompt or ""] * len(prompts)
        if len(negative_prompt) != len(prompts):
            raise MuseInputError(f"{len(negative_prompt)} negative prompts for {len(prompts)} prompts")
        return TextEmbedding.cat([cond, self.text_encoder(list(negative_prompt))])

    def decode_stage(self, model, text: TextEmbedding, tokens: torch.Tensor, sampler: SamplerConfig, generators,
                     low_tokens: torch.Tensor | None = None, return_trajectory: bool = False, **overrides):
        """Run parallel decoding of one stage from `tokens` (mask id where unknown) with `sampler`'s settings;
        overrides (SamplerConfig fields, in the sampler's own terms: guidance_t is Muse's t) replace them."""
        sampler = dataclasses.replace(sampler, **{k: v for k, v in overrides.items() if v is not None})
        guided = bool(sampler.guidance_t)
        paired = text.hidden.shape[0] == 2 * tokens.shape[0]
        if guided and not paired:
            raise ValueError("guided decoding needs conditional and unconditional text")
        if paired and not guided:
            n = tokens.shape[0]
            text = TextEmbedding(text.hidden[:n], text.mask[:n], None if text.pooled is None else text.pooled[:n])
        if low_tokens is not None and guided:
            low_tokens = torch.cat([low_tokens, low_tokens])
        context = model.context(text, low_tokens)

        def logits_fn(current):
            if not guided:
                return model.logits(current, context), None
            # One batched forward for both branches of classifier-free guidance.
            cond, uncond = model.logits(torch.cat([current, current]), context).chunk(2)
            return cond, uncond

        return parallel_decode(
            logits_fn, tokens, mask_token_id=model.mask_token_id, generators=generators,
            return_trajectory=return_trajectory, **dataclasses.asdict(sampler),
        )

    def check_prompts(self, prompts) -> list[str]:
        """`prompts` (a string or a sequence of strings) as a non-empty list of strings, or MuseInputError."""
        if isinstance(prompts, str):
            prompts = [prompts]
        prompts = list(prompts)
        if not prompts:
            raise MuseInputError("no prompts given: pass a list of at least one prompt ('' is the unconditional one)")
        bad = [p for p in prompts if not isinstance(p, str)]
        if bad:
            raise MuseInputError(f"prompts must be strings, got {type(bad[0]).__name__}: {bad[0]!r}")
        return prompts

    def check_resolution(self, resolution: int) -> None:
        """MuseInputError unless this pipeline generates at `resolution`."""
        if resolution not in self.supported_resolutions:
            raise MuseInputError(
                f"resolution {resolution} is not supported by {self.config.name}: use one of "
                f"{', '.join(map(str, self.supported_resolutions))}"
            )

    def _indices(self, n: int, sample_indices) -> list[int]:
        indices = list(range(n)) if sample_indices is None else [int(i) for i in sample_indices]
        if len(indices) != n:
            raise MuseInputError(f"{len(indices)} sample indices for {n} prompts")
        return indices

    @torch.no_grad()
    def __call__(self, prompts: str | Sequence[str], resolution: int = 256, seed: int = 0,
                 sample_indices: Sequence[int] | None = None, negative_prompt: str | Sequence[str] | None = None,
                 guidance_scale: float | None = None, steps: int | None = None, superres_steps: int | None = None,
                 return_trajectory: bool = False, output_type: str = "pil", stage_timer=None, replica: int = 0,
                 decode_threads: int | None = None, choice_temperature: float | None = None,
                 schedule: str | None = None, token_order: str | None = None) -> MuseOutput:
        """Generate one image per prompt.

        Sample i's randomness comes only from (seed, sample_indices[i], replica) (default: its position, replica
        0), so an image is the same whatever the batch it is generated in; replica k > 0 draws the k-th
        independent image of a prompt. guidance_scale is the classifier-free guidance scale g (diffusers' and
        aMUSEd's; Muse's t = g - 1; 1 = no guidance, below 1 refused) and overrides every stage's preset; steps
        overrides the base stage's steps, superres_steps the super-res stage's; choice_temperature and schedule
        (cosine, linear, arccos or powP) override the base stage's, token_order every stage's (see stage_samplers).
        output_type "pil" or "pt" (float tensors in [0, 1]). decode_threads: on a CPU, run the VQ decoder with
        exactly this many intra-op threads, so pixels do not depend on the caller's thread count (see
        decode_tokens); None = the process's setting.
        stage_timer(name) -> context manager, if given, brackets each stage: text_encoder, base, superres,
        decoder (the latency harness passes one that synchronises the device and records the time).
        """
        stage = stage_timer or (lambda name: contextlib.nullcontext())
        prompts = self.check_prompts(prompts)
        self.check_resolution(resolution)
        samplers = self.stage_samplers(resolution, guidance_scale, steps, superres_steps, choice_temperature, schedule,
                                       token_order)
        if decode_threads is not None and decode_threads < 1:
            raise MuseInputError(f"decode_threads must be at least 1, got {decode_threads}")
        indices = self._indices(len(prompts), sample_indices)
        generators = make_generators(seed, indices, self.device, replica)
        with stage("text_encoder"):
            text = self.encode_text(prompts, negative_prompt, guided=any(s.guidance_t for s in samplers.values()))

        with stage("base"):
            start = torch.full((len(prompts), self.base.seq_len), self.base.mask_token_id, device=self.device)
            base = self.decode_stage(self.base, text, start, samplers["base"], generators,
                                     return_trajectory=return_trajectory)
        tokens = base.tokens
        if "superres" in samplers:
            with stage("superres"):
                start = torch.full((len(prompts), self.superres.seq_len), self.superres.mask_token_id, device=self.device)
                tokens = self.decode_stage(self.superres, text, start, samplers["superres"], generators,
                                           low_tokens=base.tokens).tokens
        with stage("decoder"):
            images = self.decode_tokens(tokens, resolution, threads=decode_threads)
        return MuseOutput(images if output_type == "pt" else to_pil(images), tokens, base.trajectory, self.mask_token_id)

    def decode_tokens(self, tokens: torch.Tensor, resolution: int, threads: int | None = None) -> torch.Tensor:
        """Tokens of the stage that produces `resolution` -> images [B, 3, R, R] in [0, 1].

        On a CPU the convolutions' float result depends on the number of intra-op threads (oneDNN splits its
        sums by thread), so 8-bit pixels can differ by a level between, say, a 1-process and a torchrun run.
        threads=N decodes with exactly N threads (then restores the caller's count): the pixels are then a
        function of the tokens alone. Ignored on other devices.
        """
        vq = self.vq_superres if resolution > self.config.base_resolution else self.vq_base
        with fixed_cpu_threads(threads if self.device.type == "cpu" else None):
            # One sample at a time: batched convolutions round differently with the batch size, and a sample's
            # pixels must not depend on the batch it was generated in. The decoder is a small share of the time.
            return torch.cat([vq.decode(t[None], resolution // vq.downsample) for t in tokens])

    # ---- editing (muse/editing.py) ------------------------------------------------------------------------
    def inpaint(self, image, mask, prompt, **kwargs) -> MuseOutput:
        """Regenerate the masked region of `image` (mask True/white = regenerate). See muse.editing.inpaint."""
        from .editing import inpaint

        return inpaint(self, image, mask, prompt, **kwargs)

    def outpaint(self, image, keep, prompt, **kwargs) -> MuseOutput:
        """Regenerate everything outside `keep` (a box or a mask of what to keep). See muse.editing.outpaint."""
        from .editing import outpaint

        return outpaint(self, image, keep, prompt, **kwargs)

    def edit(self, image, prompt, **kwargs) -> MuseOutput:
        """Mask-free editing towards `prompt`. See muse.editing.edit."""
        from .editing import edit

        return edit(self, image, prompt, **kwargs)
