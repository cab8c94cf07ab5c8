"""Frozen text encoders: T5 (Muse) and CLIP-L/14 with projection (aMUSEd), through transformers.

Prompts are padded to a fixed max_length so the text sequence length is part of the protocol.
"""

from __future__ import annotations

import gzip
import json
import os
import tempfile
from dataclasses import dataclass
from functools import lru_cache

import torch
from torch import nn

from .config import TextConfig
from .errors import MissingWeightsError


@dataclass
class TextEmbedding:
    hidden: torch.Tensor  # [B, S, D] token embeddings for cross-attention
    mask: torch.Tensor  # [B, S] True at real tokens
    pooled: torch.Tensor | None = None  # [B, P] aMUSEd's projected pooled embedding

    @staticmethod
    def cat(parts: list["TextEmbedding"]) -> "TextEmbedding":
        pooled = None if parts[0].pooled is None else torch.cat([p.pooled for p in parts])
        return TextEmbedding(torch.cat([p.hidden for p in parts]), torch.cat([p.mask for p in parts]), pooled)


def _hub_error(what: str, name: str, err: Exception) -> MissingWeightsError:
    return MissingWeightsError(
        f"Could not load the {what} from {name!r} ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}). "
        f"If this machine is offline, download it where there is a network (for example "
        f"`huggingface-cli download {name} --local-dir DIR`), copy DIR here and load from it "
        f"(MusePipeline.from_pretrained(DIR); in muse-bench, model.pretrained=DIR), or use a preset with random weights."
    )


@lru_cache(maxsize=1)
def clip_bpe_tokenizer_dir() -> str:
    """A CLIPTokenizer folder (vocab.json, merges.txt) built from the BPE merges that open_clip ships.

    These are OpenAI CLIP's own merges, so the tokenizer matches CLIP-L/14's without a download.
    """
    from open_clip.tokenizer import bytes_to_unicode, default_bpe

    with gzip.open(default_bpe(), "rt", encoding="utf-8") as f:
        merges = f.read().split("\n")[1 : 49152 - 256 - 2 + 1]
    vocab = list(bytes_to_unicode().values())
    vocab += [v + "</w>" for v in vocab]
    vocab += ["".join(m.split()) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    folder = tempfile.mkdtemp(prefix="muse-clip-bpe-")
    with open(os.path.join(folder, "vocab.json"), "w", encoding="utf-8") as f:
        json.dump({token: i for i, token in enumerate(vocab)}, f)
    with open(os.path.join(folder, "merges.txt"), "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n" + "\n".join(merges) + "\n")
    return folder


def load_tokenizer(config: TextConfig, fallback: str | None = None):
    """The tokenizer named by config.tokenizer ("byt5", "clip-bpe", or a folder / hub id)."""
    from transformers import AutoTokenizer, ByT5Tokenizer, CLIPTokenizer

    name = config.tokenizer
    if name == "byt5":
        return ByT5Tokenizer()
    if name == "clip-bpe":
        folder = clip_bpe_tokenizer_dir()
        # CLIP-L/14 reads 77 tokens (its position table), as the released tokenizer says.
        return CLIPTokenizer(os.path.join(folder, "vocab.json"), os.path.join(folder, "merges.txt"), model_max_length=77)
    try:
        return AutoTokenizer.from_pretrained(name)
    except OSError as err:
        raise _hub_error("tokenizer", name, err) from err


def build_text_model(config: TextConfig):
    """The transformers text model: pretrained when config.pretrained is set, else random from config.model."""
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection, T5Config, T5EncoderModel

    classes = {"t5": (T5EncoderModel, T5Config), "clip": (CLIPTextModelWithProjection, CLIPTextConfig)}
    if config.kind not in classes:
        raise ValueError(f"unknown text encoder kind {config.kind!r}: use t5 or clip")
    model_cls, config_cls = classes[config.kind]
    if config.pretrained:
        try:
            return model_cls.from_pretrained(config.pretrained, use_safetensors=True)
        except OSError as err:
            raise _hub_error(f"{config.kind} text encoder", config.pretrained, err) from err
    return model_cls(config_cls(**config.model))


class TextEncoder(nn.Module):
    """prompts -> TextEmbedding. The model is frozen: no gradients, eval mode."""

    def __init__(self, model: nn.Module, tokenizer, kind: str, max_length: int):
        super().__init__()
        self.model = model.eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.kind = kind
        self.max_length = max_length

    @property
    def dim(self) -> int:
        return self.model.config.d_model if self.kind == "t5" else self.model.config.hidden_size

    @torch.no_grad()
    def forward(self, prompts: list[str]) -> TextEmbedding:
        return self.embed(prompts)

    def embed(self, prompts: list[str]) -> TextEmbedding:
        """prompts -> TextEmbedding, with gradients when the model has them (training; forward is inference-only)."""
        device = next(self.model.parameters()).device
        batch = self.tokenizer(
            list(prompts), padding="max_length", truncation=True, max_length=self.max_length, return_tensors="pt"
        ).to(device)
        if self.kind == "t5":
            hidden = self.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).last_hidden_state
            return TextEmbedding(hidden, batch.attention_mask.bool())
        # aMUSEd conditions on CLIP's penultimate hidden states and the projected pooled embedding, with no
        # key mask over the padding (as its pipeline does).
        out = self.model(input_ids=batch.input_ids, output_hidden_states=True, return_dict=True)
        hidden = out.hidden_states[-2]
        return TextEmbedding(hidden, torch.ones(hidden.shape[:2], dtype=torch.bool, device=device), out.text_embeds)
