"""Where the checkout's own folders are: muse-bench runs from its source checkout (pip install -e .), with conf/
and reports/ beside the bench package."""

from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
CONF_DIR = REPO_ROOT / "conf"
