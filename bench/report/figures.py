"""The one figure module every report uses: bars, lines, trade-off curves, image grids and decoding strips.

Every figure is drawn the same way: matplotlib's Agg backend (no display needed), the Okabe-Ito palette
(distinguishable under the common colour-vision deficiencies) with hatching once the eight colours run out,
one font family and size set, axes that name their units, a legend wherever there is more than one series,
and PNG files saved at DPI (150) dots per inch. A figure can carry a `note` under its axes (for example
"random weights: not a paper number"), so it stays honest when it is looked at on its own.

Each function takes the data, the output path and labels, saves the figure and returns the saved path.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

DPI = 150
# Okabe & Ito (2008), "Color Universal Design": blue, orange, bluish green, vermillion, reddish purple,
# sky blue, yellow, black. Yellow and black come last: yellow is faint on white, black reads as an axis.
OKABE_ITO = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000")
HATCHES = ("", "//", "..", "xx", "\\\\", "++")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
# The grey of still-masked tokens in decoding strips (mid grey: neither black nor white pixels of an image).
MASK_GREY = (128, 128, 128)

STYLE = {
    "font.family": "DejaVu Sans",  # ships with matplotlib: the same font on every machine
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.labelsize": 9,
    "legend.fontsize": 8,
    "xtick.labelsize": 8,
    "ytick.labelsize": 8,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "figure.dpi": DPI,
    "savefig.dpi": DPI,
}


def _pyplot() -> Any:
    # Imported here so that `muse-bench --help` and modules importing this one do not pay for matplotlib.
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def colour(i: int) -> str:
    """The i-th series colour of the palette (cycling)."""
    return OKABE_ITO[i % len(OKABE_ITO)]


def hatch(i: int) -> str:
    """The hatch pattern of the i-th bar series: none for the first eight, then one per further cycle."""
    return HATCHES[(i // len(OKABE_ITO)) % len(HATCHES)]


def save(fig: Any, path: str | Path) -> Path:
    """Save `fig` as a PNG at DPI, tight around its contents, close it and return the path."""
    plt = _pyplot()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with plt.rc_context(STYLE):
        # No creation date in the metadata: the same data gives the same file.
        fig.savefig(path, dpi=DPI, bbox_inches="tight", metadata={"Software": "muse-bench (bench/report/figures.py)"})
    plt.close(fig)
    return path


def _note_below(fig: Any, axes: Sequence[Any], note: str | None, width: int = 110) -> None:
    """Write `note` under everything the axes draw (tick labels included), at the figure's left edge."""
    if not note:
        return
    renderer = fig.canvas.get_renderer()
    bottom = min(ax.get_tightbbox(renderer).y0 for ax in axes)
    y = fig.transFigure.inverted().transform((0, bottom))[1]
    # In the figure, not the Markdown around it: a figure copied out of the report keeps its caveat.
    fig.text(0.0, y - 0.02, textwrap.fill(note, width), ha="left", va="top", fontsize=7, color="#444444")


def _finish(fig: Any, ax: Any, *, title: str | None, note: str | None) -> None:
    if title:
        ax.set_title(title)
    _note_below(fig, [ax], note)


def _value(v: Any) -> float:
    return 0.0 if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)


def stacked_bars(labels: Sequence[str], stacks: Mapping[str, Sequence[float | None]], path: str | Path, *,
                 ylabel: str, panels: Sequence[str] | None = None, title: str | None = None,
                 legend_title: str | None = None, totals: Sequence[float | None] | None = None,
                 colours: Mapping[str, str] | None = None, note: str | None = None) -> Path:
    """Vertical bars, one per label, each stacked from `stacks` ({segment name: one value per label}).

    `panels` (one name per label, e.g. "256 px") splits the bars into side-by-side panels with their own
    y scales, so a fast model's bar is not flattened by a slow one at another resolution. Missing values
    (None, NaN) count as zero. Each bar is annotated with its total (`totals` when given, e.g. a measured
    end-to-end time, else the sum of its segments), so bars too short to see still show their number.
    `colours` pins a segment's colour (so a stage keeps its colour across figures); others take the
    palette's colours in turn.
    """
    plt = _pyplot()
    panels = list(panels) if panels is not None else [""] * len(labels)
    names = list(dict.fromkeys(panels))
    totals = list(totals) if totals is not None else [None] * len(labels)
    pinned = dict(colours or {})
    free = [c for c in OKABE_ITO if c not in pinned.values()] or list(OKABE_ITO)
    unpinned = [s for s in stacks if s not in pinned]
    styles = {s: (pinned[s], "") for s in stacks if s in pinned}
    styles |= {s: (free[k % len(free)], HATCHES[(k // len(free)) % len(HATCHES)]) for k, s in enumerate(unpinned)}
    with plt.rc_context(STYLE):
        widths = [sum(p == name for p in panels) for name in names]
        fig, axes = plt.subplots(1, len(names), figsize=(max(4.0, 0.95 * len(labels) + 1.2 * len(names) + 1.5), 3.8),
                                 squeeze=False, gridspec_kw={"width_ratios": widths})
        for ax, name in zip(axes.flat, names):
            idx = [i for i, p in enumerate(panels) if p == name]
            x = np.arange(len(idx))
            bottom = np.zeros(len(idx))
            for segment, values in stacks.items():
                heights = np.array([_value(values[i]) for i in idx])
                col, pattern = styles[segment]
                ax.bar(x, heights, 0.6, bottom=bottom, label=segment, color=col, hatch=pattern,
                       edgecolor="white", linewidth=0.5)
                bottom += heights
            shown = [_value(totals[i]) if totals[i] is not None else b for i, b in zip(idx, bottom)]
            for xi, total in zip(x, shown):
                ax.annotate(f"{total:.3g}", (xi, max(total, bottom[xi])), textcoords="offset points", xytext=(0, 2),
                            ha="center", va="bottom", fontsize=7)
            ax.set_xticks(x, [labels[i] for i in idx])
            ax.set_ylim(0, (max(max(shown, default=0), bottom.max(initial=0)) * 1.15) or 1)
            ax.grid(axis="x", visible=False)
            if name:
                ax.set_title(name)
        axes.flat[0].set_ylabel(ylabel)
        handles, legend_labels = axes.flat[0].get_legend_handles_labels()
        axes.flat[-1].legend(handles, legend_labels, title=legend_title, bbox_to_anchor=(1.01, 1), loc="upper left",
                             frameon=False)
        if title:
            fig.suptitle(title, fontsize=10)
        fig.tight_layout()
        _note_below(fig, list(axes.flat), note)
        return save(fig, path)


def line_chart(series: Mapping[str, tuple[Sequence[float], Sequence[float]]], path: str | Path, *, xlabel: str,
               ylabel: str, title: str | None = None, logx: bool = False, logy: bool = False,
               note: str | None = None) -> Path:
    """One line with markers per series ({label: (xs, ys)}); x ticks at the values present."""
    plt = _pyplot()
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(5.2, 3.6))
        xs_all = sorted({float(x) for xs, _ in series.values() for x in xs})
        for i, (label, (xs, ys)) in enumerate(series.items()):
            ax.plot(xs, ys, marker=MARKERS[i % len(MARKERS)], color=colour(i), label=label, linewidth=1.5)
        if logx:
            ax.set_xscale("log", base=2)
        if logy:
            ax.set_yscale("log")
        ax.set_xticks(xs_all, [f"{x:g}" for x in xs_all])
        if logx:
            ax.minorticks_off()  # a log axis would add unlabelled minor ticks between the batch sizes
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.legend(bbox_to_anchor=(1.01, 1), loc="upper left", frameon=False)
        _finish(fig, ax, title=title, note=note)
        return save(fig, path)


def tradeoff_curve(curves: Mapping[str, Sequence[Mapping[str, Any]]], path: str | Path, *, xlabel: str,
                   ylabel: str, title: str | None = None, note: str | None = None) -> Path:
    """One curve per series through its points, each point labelled, as in the Muse paper's Figure 8.

    `curves` maps a series name (a model) to points {x, y, label, xerr (optional), yerr (optional)}, in the
    order the curve passes through them (e.g. by increasing guidance scale).
    """
    plt = _pyplot()
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(5.4, 4.0))
        for i, (name, points) in enumerate(curves.items()):
            xs = [p["x"] for p in points]
            ys = [p["y"] for p in points]
            xerr = [_value(p.get("xerr")) for p in points]
            yerr = [_value(p.get("yerr")) for p in points]
            ax.errorbar(xs, ys, xerr=xerr if any(xerr) else None, yerr=yerr if any(yerr) else None,
                        marker=MARKERS[i % len(MARKERS)], color=colour(i), label=name, linewidth=1.5, capsize=2)
            for p in points:
                ax.annotate(str(p["label"]), (p["x"], p["y"]), textcoords="offset points", xytext=(4, 4),
                            fontsize=7, color=colour(i))
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.legend(frameon=False)
        _finish(fig, ax, title=title, note=note)
        return save(fig, path)


def grouped_bars(groups: Sequence[str], series: Mapping[str, tuple[Sequence[float | None], Sequence[float | None]]],
                 path: str | Path, *, xlabel: str, title: str | None = None, note: str | None = None) -> Path:
    """Horizontal bars per group (long names read well on the y axis), one bar per series, with error bars.

    `series` maps a series name (a model) to (means, stderrs), one per group; a missing mean draws no bar,
    a missing stderr no error bar.
    """
    plt = _pyplot()
    with plt.rc_context(STYLE):
        n = max(len(series), 1)
        fig, ax = plt.subplots(figsize=(6.0, max(2.0, 0.28 * len(groups) * n + 1.0)))
        height = 0.8 / n
        y = np.arange(len(groups))
        for i, (name, (means, errs)) in enumerate(series.items()):
            offset = (i - (n - 1) / 2) * height
            vals = np.array([_value(m) for m in means])
            err = np.array([_value(e) for e in errs])
            present = np.array([m is not None for m in means])
            ax.barh(y[present] + offset, vals[present], height, xerr=err[present], label=name, color=colour(i),
                    hatch=hatch(i), edgecolor="white", linewidth=0.5, capsize=2, error_kw={"elinewidth": 0.8})
        ax.set_yticks(y, [textwrap.shorten(g, 40) for g in groups])
        ax.invert_yaxis()  # first group on top, as in the table beneath
        ax.axvline(0, color="#333333", linewidth=0.6)
        ax.set_xlabel(xlabel)
        ax.grid(axis="y", visible=False)
        ax.legend(bbox_to_anchor=(1.01, 1), loc="upper left", frameon=False)
        _finish(fig, ax, title=title, note=note)
        return save(fig, path)


def win_rate_bars(groups: Sequence[str], wins: Sequence[float], ties: Sequence[float], losses: Sequence[float],
                  path: str | Path, *, names: tuple[str, str], counts: Sequence[int] | None = None,
                  title: str | None = None, note: str | None = None) -> Path:
    """Horizontal 100% bars per group: share of prompts won by names[0], tied, won by names[1] (fractions)."""
    plt = _pyplot()
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(6.0, max(1.8, 0.32 * len(groups) + 1.0)))
        y = np.arange(len(groups))
        left = np.zeros(len(groups))
        parts = ((f"{names[0]} wins", wins, colour(0)), ("tie", ties, "#BBBBBB"), (f"{names[1]} wins", losses, colour(1)))
        for label, values, col in parts:
            vals = np.array([100 * _value(v) for v in values])
            ax.barh(y, vals, 0.6, left=left, label=label, color=col, edgecolor="white", linewidth=0.5)
            left += vals
        labels = [textwrap.shorten(g, 40) + (f" (n={c})" if counts else "") for g, c in zip(groups, counts or groups)]
        ax.set_yticks(y, labels)
        ax.invert_yaxis()
        ax.axvline(50, color="#333333", linewidth=0.6, linestyle="--")
        ax.set_xlim(0, 100)
        ax.set_xlabel("share of prompts (%)")
        ax.grid(axis="y", visible=False)
        ax.legend(bbox_to_anchor=(1.01, 1), loc="upper left", frameon=False)
        _finish(fig, ax, title=title, note=note)
        return save(fig, path)


def _rgb(image: Any) -> np.ndarray:
    """A PIL image, a path or an array as an RGB uint8 array."""
    from PIL import Image

    if isinstance(image, (str, Path)):
        with Image.open(image) as im:
            return np.asarray(im.convert("RGB"))
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"))
    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=2)
    return arr.astype(np.uint8)


def wrap_caption(text: str, width: int = 30, max_lines: int = 4) -> str:
    """A caption wrapped to `width` characters and cut to `max_lines` lines (ending with an ellipsis)."""
    lines = textwrap.wrap(" ".join(str(text).split()), width) or [""]
    if len(lines) > max_lines:
        lines = lines[:max_lines]
        lines[-1] = lines[-1][: width - 4].rstrip() + " ..."
    return "\n".join(lines)


def image_grid(images: Sequence[Any], captions: Sequence[str], path: str | Path, *, ncols: int = 4,
               title: str | None = None, note: str | None = None, wrap: int = 30, max_lines: int = 4) -> Path:
    """Images in rows of `ncols`, each with its caption (the prompt) wrapped beneath it.

    `images` are PIL images, paths or HxWx3 uint8 arrays. Captions longer than `max_lines` lines of `wrap`
    characters end with "...".
    """
    plt = _pyplot()
    n = len(images)
    ncols = max(1, min(ncols, n))
    nrows = max(1, math.ceil(n / ncols))
    wrapped = [wrap_caption(c, wrap, max_lines) for c in captions]
    lines = max((w.count("\n") + 1 for w in wrapped), default=1)
    cell, line_h, title_h = 2.0, 0.14, 0.35 if title else 0.05
    row_h = cell + line_h * lines + 0.1
    height = row_h * nrows + title_h
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(nrows, ncols, figsize=(cell * ncols + 0.1, height), squeeze=False)
        for ax in axes.flat:
            ax.axis("off")
        for ax, image, caption in zip(axes.flat, images, wrapped):
            ax.imshow(_rgb(image), interpolation="lanczos")
            ax.text(0.5, -0.02, caption, transform=ax.transAxes, ha="center", va="top", fontsize=7)
        # Room under each image for its caption's lines, and above the first row for the title.
        fig.subplots_adjust(left=0.01, right=0.99, bottom=(line_h * lines + 0.1) / height,
                            top=1 - title_h / height, wspace=0.05, hspace=(line_h * lines + 0.1) / cell)
        if title:
            fig.suptitle(title, fontsize=10, y=1 - 0.05 / height)
        _note_below(fig, list(axes.flat), note, width=25 * ncols)
        return save(fig, path)


def grey_masked(image: Any, mask: Any, grey: tuple[int, int, int] = MASK_GREY) -> np.ndarray:
    """The image with every still-masked token's pixels painted grey.

    `mask` is a 2-D boolean array over the token grid (e.g. 16x16; True = still masked); each token covers
    an equal block of pixels (the VQ downsampling factor), so the grid is upsampled by repetition.
    """
    arr = _rgb(image).copy()
    mask = np.asarray(mask, dtype=bool)
    if mask.ndim != 2:
        raise ValueError(f"mask must be a 2-D token grid, got shape {mask.shape}")
    h, w = arr.shape[:2]
    gh, gw = mask.shape
    if h % gh or w % gw:
        raise ValueError(f"a {h}x{w} image does not tile into a {gh}x{gw} token grid")
    pixels = np.repeat(np.repeat(mask, h // gh, axis=0), w // gw, axis=1)
    arr[pixels] = grey
    return arr


def trajectory_strip(images_per_step: Sequence[Any], path: str | Path, *, masks: Sequence[Any] | None = None,
                     step_labels: Sequence[str] | None = None, title: str | None = None,
                     note: str | None = None, max_steps: int = 12) -> Path:
    """One image per decoding step, left to right: what is unmasked at each step of parallel decoding.

    `images_per_step` are the decoded partially-unmasked images (PIL, paths or arrays), in step order, with
    still-masked tokens already shown grey, or, when `masks` (one boolean token grid per step, True = still
    masked) is given, painted grey here (grey_masked) and each step labelled with its unmasked share.
    With more than `max_steps` steps, `max_steps` evenly spaced steps are shown, first and last included.
    """
    n = len(images_per_step)
    if n == 0:
        raise ValueError("trajectory_strip needs at least one image")
    if masks is not None and len(masks) != n:
        raise ValueError(f"{n} images but {len(masks)} masks: one mask per step is needed")
    keep = sorted({round(i) for i in np.linspace(0, n - 1, min(n, max_steps))})
    plt = _pyplot()
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(1, len(keep), figsize=(1.5 * len(keep), 1.5 + 0.5), squeeze=False)
        for ax, i in zip(axes.flat, keep):
            image = images_per_step[i]
            label = step_labels[i] if step_labels else f"step {i + 1}/{n}"
            if masks is not None:
                mask = np.asarray(masks[i], dtype=bool)
                image = grey_masked(image, mask)
                label += f"\n{100 * (1 - mask.mean()):.0f}% unmasked"
            ax.imshow(_rgb(image), interpolation="nearest")
            ax.set_title(label, fontsize=7)
            ax.axis("off")
        fig.subplots_adjust(wspace=0.04)
        if title:
            fig.suptitle(wrap_caption(title, 20 * len(keep), 2), fontsize=9, y=1.04)
        _note_below(fig, list(axes.flat), note, width=20 * len(keep))
        return save(fig, path)
