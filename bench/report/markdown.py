"""How the report writes things: numbers, standard errors and parameter counts as text, Markdown tables, the
"Protocol:" note under each table, the "not a paper number" flag, metric names, and the figure files of a report
with their Markdown links."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from bench.report.runs import FIGURES_DIR

NOT_PAPER = "not a paper number"
METRIC_NAMES = {"fid": "FID", "kid": "KID", "clip_score": "CLIP (cosine)", "clip_score_x100": "CLIP x100",
                "cmmd": "CMMD", "win_rate": "win rate", "loss_rate": "loss rate", "win_ratio": "win ratio",
                "judge_win_rate": "win rate (exact judge)", "judge_loss_rate": "loss rate (exact judge)",
                "clip_judge_win_rate": "win rate (CLIP judge)", "clip_judge_loss_rate": "loss rate (CLIP judge)",
                "clip_judge_agreement": "CLIP judge agrees with exact", "precision": "precision (k-NN)",
                "recall": "recall (k-NN)", "density": "density (k-NN)", "coverage": "coverage (k-NN)"}
# Prefixes of the figures a report writes: an earlier report's figure that is not made again is removed.
FIGURE_PREFIXES = ("latency-", "throughput-", "fid-clip-", "fid-judge-", "parti-", "win-rate-", "grid-", "trajectory-",
                   "sweep-", "edit-")


def number(value: Any, digits: int = 4) -> str:
    """A value as a table cell: `digits` significant digits, thousands separated, a dash for none (or NaN)."""
    if value is None or value == "":
        return "—"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if math.isnan(value):
            return "—"
        return f"{value:,.0f}" if abs(value) >= 10 ** digits else f"{value:.{digits}g}"
    return str(value)


def stderr_text(value: Any) -> str:
    """A standard error to two significant digits, trailing zeros kept (1.0, 0.020)."""
    if value is None:
        return "—"
    text = f"{float(value):#.2g}"
    return text.rstrip(".") if "e" not in text else text


def metric_cell(metric: Mapping[str, Any] | None) -> str:
    """A metric entry of results.json as a cell: "value ± stderr", "skipped" (its reason is said elsewhere) or a dash."""
    if not metric:
        return "—"
    if metric.get("value") is None:
        return "skipped" if (metric.get("protocol") or {}).get("skipped") else "—"
    return number(metric["value"]) + (f" ± {stderr_text(metric.get('stderr'))}" if metric.get("stderr") is not None else "")


def param_count(n: Any) -> str:
    """A parameter count with a unit: 9.14B, 604M, 250K."""
    if not isinstance(n, (int, float)) or isinstance(n, bool):
        return "—"
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= size:
            return f"{n / size:.3g}{unit}"
    return str(n)


def percent(value: Any) -> str:
    """A share (0.25) as a percentage (25.0%)."""
    return "—" if value is None else f"{100 * float(value):.1f}%"


def cell(text: Any) -> str:
    """Text made safe for one Markdown table cell (pipes escaped, one line)."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A Markdown table."""
    lines = ["| " + " | ".join(cell(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def protocol_note(rows: Sequence[tuple[str, Mapping[str, str]]], *, intro: str = "") -> str:
    """The "Protocol:" note under a table: facets every row shares once, then each row's own facets.

    `rows` are (row label, {facet: text}); a facet with the same text in every row is said once.
    """
    if not rows:
        return f"**Protocol:** {intro}".rstrip()
    keys = list(dict.fromkeys(k for _, facets in rows for k in facets))
    shared = {k: rows[0][1][k] for k in keys if all(f.get(k) == rows[0][1].get(k) for _, f in rows)}
    if len(rows) == 1:
        shared = dict(rows[0][1])
    lines = ["**Protocol:** " + " ".join(p for p in (intro, "; ".join(f"{k}: {v}" for k, v in shared.items())) if p)]
    if len(rows) > 1:
        for label, facets in rows:
            own = {k: v for k, v in facets.items() if k not in shared}
            if own:
                lines.append(f"- {label}: " + "; ".join(f"{k}: {v}" for k, v in own.items()))
    return "\n".join(lines)


def caveat_flag(caveats: Sequence[str]) -> str:
    """A row's Note: "**not a paper number**: <why>", or nothing when there is no caveat."""
    return f"**{NOT_PAPER}**: " + ", ".join(caveats) if caveats else ""


def slug(text: str) -> str:
    """A file-name-safe form of `text` (lower case, dashes, at most 80 characters)."""
    return re.sub(r"[^a-z0-9._]+", "-", text.lower()).strip("-.")[:80] or "x"


class FigureFolder:
    """Unique figure paths under out_dir/figures and their Markdown links."""

    def __init__(self, out_dir: Path):
        self.out_dir = out_dir
        self.dir = out_dir / FIGURES_DIR
        self.dir.mkdir(parents=True, exist_ok=True)
        self.written: list[Path] = []

    def path(self, name: str) -> Path:
        """A new figure's path, named after `name` and distinct from every figure of this report so far."""
        stem = slug(name)
        candidate, i = stem, 2
        while any(p.stem == candidate for p in self.written):
            candidate, i = f"{stem}-{i}", i + 1
        path = self.dir / f"{candidate}.png"
        self.written.append(path)
        return path

    def link(self, path: Path, alt: str) -> str:
        """The Markdown image link to a figure, relative to report.md."""
        return f"![{cell(alt)}]({path.relative_to(self.out_dir).as_posix()})"

    def remove_stale(self) -> None:
        """Remove figures an earlier report wrote here that this one did not write again."""
        keep = {p.name for p in self.written}
        for old in self.dir.glob("*.png"):
            if old.name not in keep and old.name.startswith(FIGURE_PREFIXES):
                old.unlink()
