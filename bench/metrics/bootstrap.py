"""The one bootstrap: resampling groups of samples with replacement, and the standard error it gives.

A group is what must be resampled whole: the K images of one prompt share the prompt's difficulty, so FID and
CLIP score resample prompts, each bringing all its images. Every resample is drawn from numpy's
default_rng(seed), so a stderr is the same in every run with the same seed.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence

import numpy as np


def resample_groups(n_groups: int, n_resamples: int, seed: int) -> np.ndarray:
    """[n_resamples, n_groups] group indices, each row `n_groups` draws with replacement from default_rng(seed).

    One call draws them all; numpy's Generator gives the same rows as one draw of `n_groups` per resample.
    """
    return np.random.default_rng(seed).integers(0, n_groups, size=(n_resamples, n_groups))


def bootstrap_stderr(
    statistic: Callable[[np.ndarray, np.ndarray], float], gen: np.ndarray, ref: np.ndarray, n: int, seed: int = 0,
    groups: Sequence[Hashable] | None = None,
) -> float | None:
    """Standard error of statistic(gen, ref) by `n` bootstrap resamples of the generated features.

    Without `groups` each resample draws len(gen) rows of `gen` with replacement. With `groups` (one id per row,
    e.g. the prompt of each image) it draws as many groups as there are, with replacement, and takes every row
    of each: the K images of one prompt are correlated, so they are resampled together. Draws come from
    resample_groups(seed); the result is the standard deviation (ddof=1) of the n statistics. It captures the
    sampling variance of the generated set only: the reference set is held fixed, and the spread over
    generation seeds is a separate matter. Returns None when n < 2.
    """
    if n < 2:
        return None
    if groups is None:
        members = [np.array([i]) for i in range(len(gen))]
    else:
        if len(groups) != len(gen):
            raise ValueError(f"{len(gen)} feature rows but {len(groups)} group ids: one per row is needed")
        by_group: dict[Hashable, list[int]] = {}
        for row, group in enumerate(groups):
            by_group.setdefault(group, []).append(row)
        members = [np.array(rows) for rows in by_group.values()]
    values = []
    for draw in resample_groups(len(members), n, seed):
        rows = np.concatenate([members[i] for i in draw])
        values.append(statistic(gen[rows], ref))
    stderr = float(np.std(values, ddof=1))
    return stderr if np.isfinite(stderr) else None
