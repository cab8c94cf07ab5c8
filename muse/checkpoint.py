"""Saving and loading pipelines: safetensors only, never pickle.

Our layout (save_pipeline): muse_pipeline.json (format, version, config), text_encoder/ (transformers
save_pretrained), tokenizer/ (only for tokenizers that are not built in), and one .safetensors file per
component. aMUSEd checkpoints load from diffusers' layout (model_index.json with vqvae/, transformer/,
text_encoder/, tokenizer/), from a local folder or a hub id.
"""

from __future__ import annotations

import dataclasses
import json
import os

import torch
from safetensors.torch import load_file, save_file

from .config import AmusedConfig, PipelineConfig, TextConfig, VQConfig
from .errors import MissingWeightsError, UnsafeCheckpointError

FORMAT = "muse-bench-pipeline"
VERSION = 1
CONFIG_FILE = "muse_pipeline.json"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
BUILTIN_TOKENIZERS = ("byt5", "clip-bpe")
AMUSED_HUB_IDS = ("amused/amused-256", "amused/amused-512")


def _component_files(config: PipelineConfig) -> list[str]:
    names = ["vq_base", "base"] + (["vq_superres", "superres"] if config.superres is not None else [])
    return [f"{name}.safetensors" for name in names]


def save_pipeline(pipe, path: str) -> None:
    """Write `pipe` to folder `path` in our layout."""
    os.makedirs(path, exist_ok=True)
    pipe.text_encoder.model.save_pretrained(os.path.join(path, "text_encoder"), safe_serialization=True)
    config = pipe.config
    if config.text.tokenizer not in BUILTIN_TOKENIZERS:
        pipe.text_encoder.tokenizer.save_pretrained(os.path.join(path, "tokenizer"))
    for name, module in pipe.modules().items():
        if name != "text_encoder":
            state = {k: v.detach().contiguous().cpu() for k, v in module.state_dict().items()}
            save_file(state, os.path.join(path, f"{name}.safetensors"), metadata={"format": "pt"})
    data = {"format": FORMAT, "version": VERSION, "config": config.to_dict()}
    tmp = os.path.join(path, CONFIG_FILE + ".tmp")
    with open(tmp, "w") as f:
        json.dump(data, f, indent=2)
    os.replace(tmp, os.path.join(path, CONFIG_FILE))  # the config last: a folder without it is incomplete


def _refuse_pickles(folder: str, expected: str) -> None:
    """A folder that holds pickle weights where safetensors are expected is refused, not loaded."""
    if os.path.isdir(folder) and not os.path.exists(os.path.join(folder, expected)):
        pickles = [f for f in os.listdir(folder) if f.endswith(PICKLE_SUFFIXES)]
        if pickles:
            raise UnsafeCheckpointError(
                f"{os.path.join(folder, pickles[0])} is a pickle checkpoint, which can run arbitrary code when "
                f"loaded, so it is refused. Convert it to safetensors ({expected}) and load the folder again."
            )


def _require(path: str, files: list[str]) -> None:
    for name in files:
        full = os.path.join(path, name)
        if not os.path.exists(full):
            folder = os.path.dirname(full)
            _refuse_pickles(folder, os.path.basename(full))
            raise MissingWeightsError(
                f"the checkpoint folder {path} is missing {name}; save it again with "
                f"MusePipeline.save_pretrained or copy the missing file in."
            )


def _has_safetensors(folder: str) -> str:
    for name in ("model.safetensors", "model.safetensors.index.json"):
        if os.path.exists(os.path.join(folder, name)):
            return name
    return "model.safetensors"


def load_pipeline(cls, path_or_id: str):
    """A MusePipeline from our folder, an aMUSEd diffusers folder, or an aMUSEd hub id."""
    path = os.fspath(path_or_id)
    if os.path.isfile(path):
        if path.endswith(PICKLE_SUFFIXES):
            raise UnsafeCheckpointError(
                f"{path} is a pickle checkpoint, which can run arbitrary code when loaded, so it is refused. "
                f"Convert it to safetensors and save a pipeline folder with MusePipeline.save_pretrained."
            )
        raise MissingWeightsError(f"{path} is a file; pass the pipeline folder that contains {CONFIG_FILE}")
    if os.path.isdir(path):
        if os.path.exists(os.path.join(path, CONFIG_FILE)):
            return _load_ours(cls, path)
        if os.path.exists(os.path.join(path, "model_index.json")):
            return _load_diffusers_amused(cls, path)
        _refuse_pickles(path, CONFIG_FILE)
        raise MissingWeightsError(
            f"{path} has neither {CONFIG_FILE} (a muse-bench checkpoint) nor model_index.json (an aMUSEd "
            f"diffusers checkpoint)"
        )
    if "/" in path and not path.startswith((".", "/")):
        return _load_diffusers_amused(cls, _download(path))
    raise MissingWeightsError(f"no checkpoint at {path!r}: pass a folder or an aMUSEd hub id ({', '.join(AMUSED_HUB_IDS)})")


def _load_ours(cls, path: str):
    with open(os.path.join(path, CONFIG_FILE)) as f:
        data = json.load(f)
    if data.get("format") != FORMAT:
        raise MissingWeightsError(f"{os.path.join(path, CONFIG_FILE)} is not a {FORMAT} config")
    if data.get("version", 0) > VERSION:
        raise MissingWeightsError(
            f"{path} was written by a newer muse-bench (checkpoint version {data['version']}, this one reads "
            f"{VERSION}); upgrade muse-bench"
        )
    config = PipelineConfig.from_dict(data["config"])
    text_dir = os.path.join(path, "text_encoder")
    _require(path, [os.path.join("text_encoder", "config.json"), os.path.join("text_encoder", _has_safetensors(text_dir))])
    _require(path, _component_files(config))
    tokenizer = config.text.tokenizer
    if tokenizer not in BUILTIN_TOKENIZERS:
        _require(path, [os.path.join("tokenizer", "tokenizer_config.json")])
        tokenizer = os.path.join(path, "tokenizer")

    from .text import TextEncoder, build_text_model, load_tokenizer
    from .transformer import build_transformers
    from .vqgan import VQTokenizer

    text_config = dataclasses.replace(config.text, pretrained=text_dir, tokenizer=tokenizer)
    text = TextEncoder(build_text_model(text_config), load_tokenizer(text_config), config.text.kind, config.text.max_length)
    with torch.device("meta"):
        vq_base = VQTokenizer.from_config(config.vq_base)
        vq_superres = VQTokenizer.from_config(config.vq_superres) if config.vq_superres else None
        base, superres = build_transformers(config)
    modules = {"vq_base": vq_base, "base": base, "vq_superres": vq_superres, "superres": superres}
    for name, module in modules.items():
        if module is not None:
            # Built on the meta device, so assign=True places the loaded tensors without a random init first.
            module.load_state_dict(load_file(os.path.join(path, f"{name}.safetensors")), strict=True, assign=True)
    return cls(config, text, vq_base, base, vq_superres, superres, weights="pretrained")


def _download(repo_id: str) -> str:
    """A hub snapshot (safetensors and configs only), or a MissingWeightsError that says how to supply it."""
    from huggingface_hub import snapshot_download

    try:
        return snapshot_download(repo_id, allow_patterns=["*.json", "*.txt", "*.safetensors"], ignore_patterns=["*fp16*"])
    except Exception as err:  # offline, unknown id, gated: all end the same way for the user
        raise MissingWeightsError(
            f"could not download {repo_id!r} (model_index.json and its safetensors weights): "
            f"{type(err).__name__}. On a machine with a network run `huggingface-cli download {repo_id} "
            f"--local-dir DIR`, copy DIR here, and pass DIR instead of the hub id (model.pretrained=DIR)."
        ) from err


def _load_diffusers_amused(cls, path: str):
    from diffusers import UVit2DModel, VQModel
    from transformers import CLIPTextModelWithProjection, CLIPTokenizer

    from .amused import AmusedTransformer
    from .text import TextEncoder

    for sub, weights in (("vqvae", "diffusion_pytorch_model.safetensors"),
                         ("transformer", "diffusion_pytorch_model.safetensors"),
                         ("text_encoder", "model.safetensors")):
        _require(path, [os.path.join(sub, "config.json"), os.path.join(sub, weights)])
    _require(path, [os.path.join("tokenizer", "tokenizer_config.json")])
    vq = VQModel.from_pretrained(path, subfolder="vqvae", use_safetensors=True)
    uvit = UVit2DModel.from_pretrained(path, subfolder="transformer", use_safetensors=True)
    text_model = CLIPTextModelWithProjection.from_pretrained(path, subfolder="text_encoder", use_safetensors=True)
    tokenizer = CLIPTokenizer.from_pretrained(path, subfolder="tokenizer")

    from .presets import AMUSED_SAMPLER

    downsample = 2 ** (len(vq.config.block_out_channels) - 1)
    grid = 16 * (2 if uvit.config.downsample else 1)
    resolution = grid * downsample
    vq_config = VQConfig(
        block_out_channels=tuple(vq.config.block_out_channels), layers_per_block=vq.config.layers_per_block,
        latent_channels=vq.config.latent_channels, codebook_size=vq.config.num_vq_embeddings,
        norm_num_groups=vq.config.norm_num_groups, mid_block_add_attention=vq.config.mid_block_add_attention,
        lookup_from_codebook=vq.config.lookup_from_codebook, value_range="0,1",
    )
    uvit_config = {k: v for k, v in dict(uvit.config).items() if not k.startswith("_")}
    config = PipelineConfig(
        name=os.path.basename(os.path.normpath(path)), family="amused",
        text=TextConfig(kind="clip", pretrained=os.path.join(path, "text_encoder"), tokenizer=os.path.join(path, "tokenizer"),
                        max_length=tokenizer.model_max_length, model={}),
        vq_base=vq_config, base=None, amused=AmusedConfig(transformer=uvit_config),
        base_sampler=dataclasses.replace(AMUSED_SAMPLER), base_resolution=resolution,
    )
    text = TextEncoder(text_model, tokenizer, "clip", tokenizer.model_max_length)
    from .vqgan import VQTokenizer

    base = AmusedTransformer(uvit, resolution // downsample, resolution)
    return cls(config, text, VQTokenizer(vq, "0,1"), base, weights="pretrained")
