"""The VQ read-back measurement (bench/train/fidelity.py) on tokenizers whose answer is known: a lookup table of
cells gives every scene back exactly, and one that shifts a colour gives none back."""

from __future__ import annotations

from types import SimpleNamespace

import torch

from bench.train.fidelity import vq_read_back


class CellTable:
    """A lossless tokenizer: each distinct 4x4 cell is a token, its latent a one-hot of the token (`shift` is added
    to the decoded pixels, to make it lossy)."""

    downsample = 4
    value_range = "-1,1"

    def __init__(self, shift: float = 0.0):
        self.cells: dict[bytes, int] = {}
        self.table: list[torch.Tensor] = []
        self.shift = shift
        self.vq = SimpleNamespace(config=SimpleNamespace(latent_channels=512))

    def _cells(self, images):
        b, c, h, w = images.shape
        return images.unfold(2, 4, 4).unfold(3, 4, 4).permute(0, 2, 3, 1, 4, 5).reshape(b, -1, c, 4, 4)

    def encode(self, images):
        ids = []
        for cell in self._cells(images).reshape(-1, 3, 4, 4):
            key = (cell * 255).round().byte().numpy().tobytes()
            if key not in self.cells:
                self.cells[key] = len(self.table)
                self.table.append(cell.clone())
            ids.append(self.cells[key])
        return torch.tensor(ids).view(images.shape[0], -1)

    def latents(self, images):
        tokens = self.encode((images + 1) / 2)
        grid = images.shape[-1] // 4
        one_hot = torch.nn.functional.one_hot(tokens, 512).float()
        return one_hot.view(images.shape[0], grid, grid, 512).permute(0, 3, 1, 2)

    def decode(self, tokens, grid):
        cells = torch.stack([self.table[i] for i in tokens.reshape(-1).tolist()]).view(tokens.shape[0], grid, grid, 3, 4, 4)
        images = cells.permute(0, 3, 1, 4, 2, 5).reshape(tokens.shape[0], 3, grid * 4, grid * 4)
        return (images + self.shift).clamp(0, 1)


def test_a_lossless_tokenizer_reads_back_every_scene_and_a_colour_shift_none():
    # Catches: tokens decoded at the wrong grid or cell order (scenes come back scrambled), reconstructions scored
    # against other scenes' ground truth, a measurement that does not look at the decoded pixels at all.
    exact = vq_read_back(CellTable(), scenes=24)
    assert exact["exact"] == 1.0 and exact["caption_accepted"] == 1.0
    assert exact["distinct_cell_latents"] == exact["codes_used"]
    assert abs(exact["nearest_latent_distance_median"] - 2 ** 0.5) < 1e-6  # one-hots are sqrt(2) apart
    shifted = vq_read_back(CellTable(shift=0.25), scenes=24)
    assert shifted["exact"] == 0.0
