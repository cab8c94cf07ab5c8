"""CLIP models through open_clip, apart from the metrics that use them: loading (an open_clip arch with a
pretrained tag or a local checkpoint file, or an injected scorer), and `ClipScorer`, which embeds images and
prompts. CLIP score (bench/metrics/clip_score.py), CMMD (bench/metrics/cmmd.py) and the win-rate judges
(bench/metrics/parti.py) all embed through a ClipScorer.

`ClipScorer` wraps an open_clip model with open_clip's own inference transform and tokenizer, so the numbers
are open_clip's. `build_clip_scorer` reads the `eval.clip` config (or `eval.cmmd`'s, same keys). Offline, a tag
whose weights are not cached fails at once (no retry loop) with a BenchError that says which file is missing
and how to supply it. `TINY_CLIP_NAME` ("muse-bench-tiny-clip") is a small OpenAI-style CLIP (random weights,
the real BPE tokenizer) for tests and offline smoke runs; its config ships in bench/data/.

This module is one idea (a CLIP model, from a config to embeddings) a little over 400 lines: most of it is
finding a tag's weights without open_clip's slow retries offline and saying how to supply them.
"""

from __future__ import annotations

import json
import logging
import os
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.core.errors import BenchError
from bench.core.results import file_sha256
from bench.data.prompts import packaged_data_path
from muse.seeding import seeded_init

log = logging.getLogger(__name__)

TINY_CLIP_NAME = "muse-bench-tiny-clip"
# An OpenAI-style CLIP (ViT image tower, causal text transformer, QuickGELU as in OpenAI's weights), small
# enough for a CPU test. The text tower keeps CLIP's 77-token context and 49408-token vocabulary so that
# open_clip's bundled BPE tokenizer, and its truncation, are the real ones. open_clip reads model configs
# only from JSON files, so the config ships as package data (bench/data/) rather than being written to a
# temporary folder at run time (which left a folder behind in every process).
TINY_CLIP_FILE = packaged_data_path(f"{TINY_CLIP_NAME}.json")
TINY_CLIP_CONFIG: dict[str, Any] = json.loads(TINY_CLIP_FILE.read_text(encoding="utf-8"))

# What open_clip's SimpleTokenizer does with a prompt longer than the context (77 for CLIP): keep the start
# token and the first 75 BPE tokens, and end with the end token. HEIM truncates to 75 tokens the same way.
TRUNCATION_RULE = (
    "<start> + first (context_length - 2) BPE tokens + <end> (open_clip SimpleTokenizer; 75 prompt tokens "
    "at context 77, as HEIM)"
)

_DEFAULT_BATCH_SIZE = 32
_PROBE_TIMEOUT_S = 5.0

_tiny_registered = False


def register_tiny_clip() -> str:
    """Register TINY_CLIP_FILE with open_clip under TINY_CLIP_NAME (once per process); returns the name.

    Nothing is written: open_clip reads the packaged JSON file in place.
    """
    global _tiny_registered
    if not _tiny_registered:
        import open_clip

        open_clip.add_model_config(TINY_CLIP_FILE)
        _tiny_registered = True
    return TINY_CLIP_NAME


class ClipScorer:
    """An open_clip-style CLIP model with its inference transform and tokenizer, embedding images and prompts.

    `model` needs `encode_image(x, normalize=True)` and `encode_text(tokens, normalize=True)` (any open_clip
    CLIP); `preprocess` maps a PIL image to a [3, H, W] tensor; `tokenizer` maps a list of prompts to a
    [N, context_length] LongTensor. `protocol` records every choice that moves a score; it is copied into
    every metric computed from this scorer. Embeddings come back L2-normalised as float32 numpy arrays.
    """

    def __init__(self, model: Any, preprocess: Callable, tokenizer: Callable, *, protocol: Mapping[str, Any],
                 device: str | torch.device = "cpu", batch_size: int = _DEFAULT_BATCH_SIZE, setting: str = "eval.clip"):
        if batch_size < 1:
            raise BenchError(f"{setting}.batch_size must be at least 1, got {batch_size}.")
        self.model = model.eval().requires_grad_(False).to(device)
        self.preprocess = preprocess
        self.tokenizer = tokenizer
        self.protocol = dict(protocol)
        self.device = torch.device(device)
        self.batch_size = batch_size

    def to(self, device: str | torch.device) -> ClipScorer:
        """Move the model to `device`; returns self."""
        self.device = torch.device(device)
        self.model.to(self.device)
        return self

    @property
    def image_size(self) -> int | None:
        """The square input size of the image tower as its preprocessing records it, or None when unknown."""
        size = (self.protocol.get("image_preprocess") or {}).get("size")
        return int(size[0] if isinstance(size, (list, tuple)) else size) if size else None

    @property
    def context_length(self) -> int | None:
        """The text context (tokens including start and end), or None when the tokenizer does not say."""
        return getattr(self.tokenizer, "context_length", None)

    def image_embeddings(self, images: Sequence[Any]) -> np.ndarray:
        """L2-normalised image embeddings [N, D] (float32) of PIL images (or paths to image files).

        Each image goes through open_clip's own inference transform (resize the shorter side, centre crop,
        normalise), so an image already at the model's input size is not resampled.
        """
        from PIL import Image

        images = list(images)
        out = []
        for start in range(0, len(images), self.batch_size):
            batch = []
            for image in images[start:start + self.batch_size]:
                if isinstance(image, (str, os.PathLike)):
                    with Image.open(image) as opened:
                        opened.load()
                        image = opened.copy()
                batch.append(self.preprocess(image))
            with torch.inference_mode():
                emb = self.model.encode_image(torch.stack(batch).to(self.device), normalize=True)
            out.append(emb.float().cpu().numpy())
        return _stack(out)

    def text_embeddings(self, prompts: Sequence[str]) -> tuple[np.ndarray, list[bool]]:
        """L2-normalised prompt embeddings [N, D] (float32), and per prompt whether it was truncated.

        A prompt longer than the model's context is truncated by the tokenizer (see TRUNCATION_RULE);
        the flags say which, so a result can report how many prompts were scored on a cut text.
        """
        prompts = list(prompts)
        out = []
        for start in range(0, len(prompts), self.batch_size):
            tokens = self.tokenizer(prompts[start:start + self.batch_size])
            with torch.inference_mode():
                emb = self.model.encode_text(tokens.to(self.device), normalize=True)
            out.append(emb.float().cpu().numpy())
        return _stack(out), [self._truncated(p) for p in prompts]

    def cosines(self, images: Sequence[Any], prompts: Sequence[str]) -> tuple[np.ndarray, list[bool]]:
        """The image-prompt cosine per pair (float64), and per prompt whether it was truncated."""
        if len(images) != len(prompts):
            raise ValueError(f"{len(images)} images but {len(prompts)} prompts: they must pair up")
        text, truncated = self.text_embeddings(prompts)
        return paired_cosines(self.image_embeddings(images), text), truncated

    def _truncated(self, prompt: str) -> bool:
        length = self.context_length
        if length is None:
            return False
        from open_clip.tokenizer import HFTokenizer, SimpleTokenizer

        if isinstance(self.tokenizer, SimpleTokenizer):
            # encode() applies the same cleaning (ftfy, whitespace, lower case) as __call__; +2 for start/end.
            return len(self.tokenizer.encode(prompt)) + 2 > length
        if isinstance(self.tokenizer, HFTokenizer):
            return len(self.tokenizer.tokenizer(self.tokenizer.clean_fn(prompt))["input_ids"]) > length
        return False


def _stack(chunks: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(chunks) if chunks else np.zeros((0, 0), dtype=np.float32)


def paired_cosines(image_emb: np.ndarray, text_emb: np.ndarray) -> np.ndarray:
    """Row-wise cosine of two [N, D] arrays of L2-normalised embeddings, computed in float64."""
    a = np.asarray(image_emb, dtype=np.float64)
    b = np.asarray(text_emb, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"embedding shapes differ: {a.shape} vs {b.shape}")
    return np.einsum("nd,nd->n", a, b)


# ---------------------------------------------------------------------------------------------------------
# Loading: open_clip arch + pretrained tag or local file, failing fast when offline.


def _hf_files(tag_cfg: Mapping[str, Any]) -> tuple[str, list[str]]:
    """The Hub repo and candidate file names open_clip tries for a tag (pretrained.download_pretrained)."""
    model_id, filename = os.path.split(tag_cfg["hf_hub"])
    filename = filename or "open_clip_pytorch_model.bin"
    # open_clip tries a safetensors twin first (pretrained._get_safe_alternatives).
    if filename == "open_clip_pytorch_model.bin":
        return model_id, ["open_clip_model.safetensors", filename]
    if filename.endswith((".bin", ".pth")):
        return model_id, [filename[:-4] + ".safetensors", filename]
    return model_id, [filename]


def _cached_weights(tag_cfg: Mapping[str, Any], cache_dir: str | None) -> str | None:
    """The local file of a tag's weights when already downloaded (HF cache or open_clip's URL cache)."""
    import huggingface_hub

    if tag_cfg.get("hf_hub"):
        model_id, names = _hf_files(tag_cfg)
        for name in names:
            hit = huggingface_hub.try_to_load_from_cache(model_id, name, cache_dir=cache_dir)
            if isinstance(hit, str) and os.path.isfile(hit):
                return hit
    if tag_cfg.get("url"):
        path = Path(cache_dir or os.path.expanduser("~/.cache/clip")) / os.path.basename(tag_cfg["url"])
        if path.is_file():
            return str(path)
    return None


def _unreachable(url: str) -> str | None:
    """None when `url`'s host answers (any HTTP status), else why not. One try, short timeout, no retries."""
    request = urllib.request.Request(url, method="HEAD")
    try:
        urllib.request.urlopen(request, timeout=_PROBE_TIMEOUT_S).close()
    except urllib.error.HTTPError:
        return None  # the server answered: the network is there
    except (urllib.error.URLError, OSError) as err:
        return str(getattr(err, "reason", err))
    return None


def _missing_weights_error(arch: str, tag: str, tag_cfg: Mapping[str, Any], why: str,
                           cache_dir: str | None, setting: str = "eval.clip") -> BenchError:
    import huggingface_hub

    sources = []
    if tag_cfg.get("hf_hub"):
        model_id, names = _hf_files(tag_cfg)
        sources.append(f"{' or '.join(names)} from the Hugging Face Hub repo {model_id} "
                       f"({huggingface_hub.constants.ENDPOINT}/{model_id})")
    if tag_cfg.get("url"):
        url = tag_cfg["url"]
        sha = f" (sha256 {url.split('/')[-2]})" if "openaipublic" in url else ""
        sources.append(f"{os.path.basename(url)} from {url}{sha}")
    import open_clip

    local = f"{setting}.arch={arch}"
    if tag_cfg.get("quick_gelu") and not arch.endswith("-quickgelu"):
        # A local file is loaded with the arch's own activation; OpenAI's weights need QuickGELU.
        quick = f"{arch}-quickgelu"
        local = (f"{setting}.arch={quick}" if open_clip.get_model_config(quick) is not None
                 else f"{setting}.arch={arch} {setting}.quick_gelu=true")
    hf_cache = cache_dir or huggingface_hub.constants.HF_HUB_CACHE
    return BenchError(
        f"The CLIP weights for {setting}.arch={arch} {setting}.pretrained={tag} are not on this machine and "
        f"cannot be downloaded ({why}). open_clip fetches {'; or '.join(sources)}. To supply them: download "
        f"that file elsewhere and set {local} {setting}.pretrained=/path/to/the/file; or "
        f"copy a Hugging Face cache that holds it to {hf_cache} (or point HF_HOME at one); or inject your own "
        f"scorer with {setting}.model._target_=... (see bench/metrics/clip_model.py). For an offline smoke run, "
        f"{setting}.arch={TINY_CLIP_NAME} {setting}.pretrained=null uses a tiny random CLIP."
    )


def _resolve_weights(arch: str, pretrained: str | None, cache_dir: str | None,
                     setting: str = "eval.clip") -> tuple[str | None, dict[str, Any]]:
    """(local checkpoint path or None for random weights, the tag's open_clip config or {}).

    A tag's weights are looked up in the caches first and handed to open_clip as a file, because open_clip
    with a tag asks the Hub again even when the file is cached, and offline that costs ~45 s of retries.
    """
    import huggingface_hub
    import open_clip

    if not pretrained:
        return None, {}
    path = Path(os.path.expanduser(str(pretrained)))
    if path.is_file():
        return str(path), {}
    tag_cfg = open_clip.get_pretrained_cfg(arch, str(pretrained))
    if not tag_cfg:
        tags = open_clip.list_pretrained_tags_by_model(arch)
        looks_like_path = os.sep in str(pretrained) or path.suffix in (".bin", ".pt", ".pth", ".safetensors")
        what = "is not a file" if looks_like_path else f"is not an open_clip pretrained tag for {arch}"
        raise BenchError(
            f"{setting}.pretrained={pretrained} {what}. Known tags for {arch}: {', '.join(tags) or 'none'}. Set "
            f"{setting}.pretrained to one of them (downloaded on first use, or read from the Hugging Face cache), "
            "to a local checkpoint file, or to null for random weights; or inject a scorer with "
            f"{setting}.model._target_=..."
        )
    cached = _cached_weights(tag_cfg, cache_dir)
    if cached:
        return cached, dict(tag_cfg)
    if huggingface_hub.constants.HF_HUB_OFFLINE:
        why = "HF_HUB_OFFLINE is set"
    else:
        probe = huggingface_hub.constants.ENDPOINT if tag_cfg.get("hf_hub") else tag_cfg["url"]
        why = _unreachable(probe)
        if why is None:
            return None, dict(tag_cfg)  # online: let open_clip download it by tag
        why = f"{probe} is unreachable: {why}"
    raise _missing_weights_error(arch, str(pretrained), tag_cfg, why, cache_dir, setting)


def open_clip_scorer(arch: str = "ViT-L-14", pretrained: str | None = "openai", *, device: str = "cpu",
                     batch_size: int = _DEFAULT_BATCH_SIZE, quick_gelu: bool | None = None,
                     cache_dir: str | None = None, seed: int = 0, resize_mode: str | None = None,
                     setting: str = "eval.clip") -> ClipScorer:
    """A ClipScorer for an open_clip arch and weights.

    `pretrained`: an open_clip tag (e.g. "openai"; downloaded on first use), a local checkpoint file
    (open_clip's format, .bin/.pt/.safetensors), or None for random weights drawn from `seed` (smoke runs).
    `quick_gelu`: None = as the tag says (OpenAI weights use QuickGELU), else forced; for a local file of
    OpenAI weights use an arch ending in "-quickgelu" or quick_gelu=True.
    `resize_mode`: None = the model's own ("shortest": shorter side resized, then a centre crop), or open_clip's
    "squash" (the whole image resized to the input size, no crop: CMMD's reference preprocessing) or "longest".
    `setting` is the config key error messages name (eval.clip, eval.cmmd).
    Offline with the weights missing raises BenchError saying which file to supply and where.
    """
    import open_clip
    from open_clip.transform import (
        PreprocessCfg,
        image_transform_v2,
        merge_preprocess_dict,
    )

    if arch == TINY_CLIP_NAME:
        register_tiny_clip()
    if open_clip.get_model_config(arch) is None:
        raise BenchError(
            f"{setting}.arch={arch} is not an open_clip architecture. Known: {', '.join(open_clip.list_models())}, "
            f"and {TINY_CLIP_NAME} (a tiny random CLIP for tests)."
        )
    if resize_mode not in (None, "shortest", "squash", "longest"):
        raise BenchError(f"resize_mode={resize_mode!r} for {setting}: use shortest, squash or longest.")
    checkpoint, tag_cfg = _resolve_weights(arch, pretrained, cache_dir, setting)
    force_quick_gelu = bool(tag_cfg.get("quick_gelu", False)) if quick_gelu is None else bool(quick_gelu)
    # A tag's own preprocessing (mean, std, interpolation, resize mode) also applies when its file comes from
    # the cache, exactly as open_clip merges it when given the tag.
    force_pp = {k: v for k, v in merge_preprocess_dict({}, tag_cfg).items() if k != "size"} if tag_cfg else None
    source = checkpoint if checkpoint else (pretrained if tag_cfg else None)
    try:
        with seeded_init(seed):
            # Random weights (no checkpoint) are drawn from `seed`, so a smoke run is reproducible.
            model = open_clip.create_model(arch, pretrained=source, force_quick_gelu=force_quick_gelu,
                                           force_preprocess_cfg=force_pp, cache_dir=cache_dir, device="cpu")
    except (RuntimeError, FileNotFoundError, OSError) as err:
        raise BenchError(
            f"open_clip could not build {setting}.arch={arch} with {setting}.pretrained={pretrained}: {err}. Check "
            "that the checkpoint matches the arch (an OpenAI checkpoint needs quick_gelu), or supply the weights as "
            f"a local file with {setting}.pretrained=/path/to/file."
        ) from err
    pp = dict(model.visual.preprocess_cfg)
    if resize_mode is not None:
        pp["resize_mode"] = resize_mode
    preprocess = image_transform_v2(PreprocessCfg(**pp), is_train=False)
    tokenizer = open_clip.get_tokenizer(arch)
    protocol: dict[str, Any] = {
        "backend": "open_clip",
        "open_clip_version": open_clip.__version__,
        "arch": arch,
        "pretrained": str(pretrained) if pretrained else None,
        "weights": "pretrained" if source else "random",
        "quick_gelu": _uses_quick_gelu(model),
        "embed_dim": getattr(model.visual, "output_dim", None),
        "image_preprocess": {
            "size": list(pp["size"]) if isinstance(pp["size"], (tuple, list)) else pp["size"],
            # "shortest": resize the shorter side, then centre crop; "squash": the whole image to size x size
            "resize_mode": pp["resize_mode"],
            "interpolation": pp["interpolation"],
            "antialias": True,  # torchvision Resize on PIL images resamples with PIL, which filters
            "mean": list(pp["mean"]),
            "std": list(pp["std"]),
        },
        "context_length": getattr(tokenizer, "context_length", None),
        "tokenizer": type(tokenizer).__name__,
        "truncation": TRUNCATION_RULE,
        "precision": "fp32",
    }
    if source is None:
        protocol["init_seed"] = seed
        log.warning("CLIP %s has random weights (%s.pretrained is null): its scores only test the "
                    "pipeline.", arch, setting)
    if checkpoint and not tag_cfg:
        protocol["checkpoint_sha256"] = file_sha256(checkpoint)
    return ClipScorer(model, preprocess, tokenizer, protocol=protocol, device=device, batch_size=batch_size,
                      setting=setting)


def _uses_quick_gelu(model: Any) -> bool:
    from open_clip.transformer import QuickGELU

    return any(isinstance(m, QuickGELU) for m in model.modules())


def _cfg_get(cfg: Any, key: str, default: Any = None) -> Any:
    # DictConfig in struct mode refuses unknown attributes; .get with a default works for both it and dicts.
    value = cfg.get(key, default) if hasattr(cfg, "get") else getattr(cfg, key, default)
    return default if value is None and default is not None else value


def build_clip_scorer(cfg: Any, device: str | torch.device, *, setting: str = "eval.clip",
                      resize_mode: str | None = None, default_arch: str = "ViT-L-14") -> ClipScorer:
    """The ClipScorer that `eval.clip` (or another node of the same keys, named by `setting`) asks for.

    Keys: `arch` (default "ViT-L-14"), `pretrained` (default "openai": an open_clip tag, a local checkpoint
    file, or null for random weights), `batch_size` (32), optional `quick_gelu` (null = from the tag) and
    `cache_dir` (null = the Hugging Face cache), and `model`: null, or a Hydra node whose `_target_` returns
    either a ClipScorer or an open_clip-style (model, preprocess, tokenizer) triple, e.g.
    `{_target_: bench.metrics.clip_model.open_clip_scorer, arch: muse-bench-tiny-clip, pretrained: /tmp/tiny.bin}`.
    `resize_mode` is passed to open_clip_scorer (an injected scorer brings its own preprocessing).
    """
    batch_size = int(_cfg_get(cfg, "batch_size", _DEFAULT_BATCH_SIZE))
    injected = _cfg_get(cfg, "model")
    if injected is not None:
        from hydra.utils import instantiate
        from omegaconf import OmegaConf

        spec = OmegaConf.to_container(injected, resolve=True) if OmegaConf.is_config(injected) else dict(injected)
        target = spec.get("_target_")
        if not target:
            raise BenchError(f"{setting}.model must be null or a node with a _target_ that returns a ClipScorer "
                             "or a (model, preprocess, tokenizer) triple.")
        built = instantiate(spec)
        if isinstance(built, ClipScorer):
            return built.to(device)
        if isinstance(built, tuple) and len(built) == 3:
            model, preprocess, tokenizer = built
            protocol = {"backend": "injected", "target": target,
                        **{k: v for k, v in spec.items() if k != "_target_"},
                        "context_length": getattr(tokenizer, "context_length", None), "truncation": TRUNCATION_RULE}
            return ClipScorer(model, preprocess, tokenizer, protocol=protocol, device=device, batch_size=batch_size,
                              setting=setting)
        raise BenchError(f"{setting}.model._target_={target} returned a {type(built).__name__}; it must return a "
                         "bench.metrics.clip_model.ClipScorer or a (model, preprocess, tokenizer) triple.")
    # An absent `pretrained` means OpenAI's weights; an explicit null means random weights (smoke runs).
    pretrained = cfg.get("pretrained", "openai") if hasattr(cfg, "get") else getattr(cfg, "pretrained", "openai")
    return open_clip_scorer(
        str(_cfg_get(cfg, "arch", default_arch)), pretrained, device=str(device),
        batch_size=batch_size, quick_gelu=_cfg_get(cfg, "quick_gelu"), cache_dir=_cfg_get(cfg, "cache_dir"),
        resize_mode=resize_mode, setting=setting,
    )
