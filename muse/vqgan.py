"""VQGAN image tokenizers, configured from diffusers' VQModel rather than re-implemented.

Muse's tokenizers are convolutional (no attention blocks), codebook 8192: f=16 for the base model and f=8 for
super-res. At inference the paper uses a finetuned decoder wider than the encoder; we swap in a diffusers
Decoder of that width. aMUSEd's VQ-GAN is a plain VQModel that looks tokens up in its codebook.
"""

from __future__ import annotations

import torch
from diffusers import VQModel
from diffusers.models.autoencoders.vae import Decoder
from torch import nn

from .config import VQConfig


def build_vqmodel(config: VQConfig) -> VQModel:
    """A VQModel of the given shape, with the wider decoder when the config asks for one."""
    levels = len(config.block_out_channels)
    vq = VQModel(
        down_block_types=("DownEncoderBlock2D",) * levels,
        up_block_types=("UpDecoderBlock2D",) * levels,
        block_out_channels=tuple(config.block_out_channels),
        layers_per_block=config.layers_per_block,
        latent_channels=config.latent_channels,
        num_vq_embeddings=config.codebook_size,
        norm_num_groups=config.norm_num_groups,
        mid_block_add_attention=config.mid_block_add_attention,
        lookup_from_codebook=config.lookup_from_codebook,
    )
    wide = config.decoder_block_out_channels
    if wide is not None or config.decoder_layers_per_block is not None:
        wide = tuple(wide or config.block_out_channels)
        if len(wide) != levels:
            raise ValueError("the decoder must have as many levels as the encoder (same downsampling factor)")
        vq.decoder = Decoder(
            in_channels=config.latent_channels,
            out_channels=3,
            up_block_types=("UpDecoderBlock2D",) * levels,
            block_out_channels=wide,
            layers_per_block=config.decoder_layers_per_block or config.layers_per_block,
            norm_num_groups=config.norm_num_groups,
            mid_block_add_attention=config.mid_block_add_attention,
        )
    return vq


class VQTokenizer(nn.Module):
    """Images in [0, 1] <-> token grids [B, h*w], over a diffusers VQModel."""

    def __init__(self, vq: VQModel, value_range: str = "-1,1", encode_cells: bool = False):
        super().__init__()
        self.vq = vq
        self.value_range = value_range
        self.encode_cells = encode_cells
        self.downsample = 2 ** (len(vq.config.block_out_channels) - 1)
        self.codebook_size = vq.config.num_vq_embeddings

    @classmethod
    def from_config(cls, config: VQConfig) -> "VQTokenizer":
        vq = build_vqmodel(config)
        # diffusers draws codebook entries from +-1/codebook_size (a training-time choice), so with random
        # weights every token decodes to nearly the same latent and all images look alike; N(0, 1) entries
        # keep random-weight images distinct. Loaded checkpoints overwrite the codebook either way.
        torch.nn.init.normal_(vq.quantize.embedding.weight)
        return cls(vq, config.value_range, config.encode_cells)

    def _to_model_range(self, images):
        return images * 2 - 1 if self.value_range == "-1,1" else images

    def _from_model_range(self, images):
        images = (images + 1) / 2 if self.value_range == "-1,1" else images
        return images.clamp(0, 1)

    def latents(self, images: torch.Tensor) -> torch.Tensor:
        """The encoder's output [B, C, H/f, W/f] (before quantisation) for images in the model's pixel range: of the
        whole image, or (encode_cells) of each f x f cell on its own."""
        if not self.encode_cells:
            return self.vq.encode(images).latents
        b, c, h, w = images.shape
        f = self.downsample
        if h % f or w % f:
            raise ValueError(f"a {h}x{w} image does not split into {f}x{f} cells")
        cells = images.unfold(2, f, f).unfold(3, f, f)  # [B, C, H/f, W/f, f, f]
        cells = cells.permute(0, 2, 3, 1, 4, 5).reshape(b * (h // f) * (w // f), c, f, f)
        latents = self.vq.encode(cells).latents  # [B * cells, C', 1, 1]
        return latents.reshape(b, h // f, w // f, -1).permute(0, 3, 1, 2)

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """images [B, 3, H, W] in [0, 1] -> tokens [B, (H/f)*(W/f)]."""
        param = next(self.vq.parameters())
        latents = self.latents(self._to_model_range(images.to(param.device, param.dtype)))
        _, _, (_, _, indices) = self.vq.quantize(latents)
        return indices.view(images.shape[0], -1)

    @torch.no_grad()
    def decode(self, tokens: torch.Tensor, grid: int) -> torch.Tensor:
        """tokens [B, grid*grid] -> images [B, 3, grid*f, grid*f] in [0, 1] (float32)."""
        b = tokens.shape[0]
        shape = (b, grid, grid, self.vq.config.vq_embed_dim or self.vq.config.latent_channels)
        if self.vq.config.lookup_from_codebook:
            # aMUSEd's path, exactly as its pipeline calls it: the model looks the indices up itself.
            images = self.vq.decode(tokens.reshape(b, -1), force_not_quantize=True, shape=shape).sample
        else:
            quant = self.vq.quantize.get_codebook_entry(tokens.reshape(-1), shape)
            images = self.vq.decode(quant, force_not_quantize=True).sample
        return self._from_model_range(images.float())
