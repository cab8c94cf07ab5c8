"""Where a result came from: code version, library versions, hardware.

Recorded in every results.json so that a number can be traced to the commit, the libraries and the
device that produced it.
"""

from __future__ import annotations

import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path

import torch

from bench.core.paths import REPO_ROOT

# Distributions whose version moves a number or a timing.
TRACKED_PACKAGES = ("muse-bench", "torch", "torchvision", "diffusers", "transformers", "hydra-core", "omegaconf",
                    "pillow")



def package_versions(names: tuple[str, ...] = TRACKED_PACKAGES) -> dict[str, str | None]:
    """Installed version of each distribution, None where it is not installed."""
    versions: dict[str, str | None] = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def _git(*args: str) -> str | None:
    try:
        done = subprocess.run(
            ["git", "-C", str(REPO_ROOT), *args], capture_output=True, text=True, timeout=10, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip()


def git_state() -> dict[str, str | bool | None]:
    """The commit of the checkout bench runs from, and whether tracked files differ from it.

    Both are None outside a git checkout or before the first commit.
    """
    commit = _git("rev-parse", "--verify", "--quiet", "HEAD")
    if not commit:
        return {"git_commit": None, "git_dirty": None}
    status = _git("status", "--porcelain", "--untracked-files=no")
    return {"git_commit": commit, "git_dirty": None if status is None else bool(status)}


def _cpu_name() -> str:
    # platform.processor() is empty on many Linux systems; /proc/cpuinfo names the model.
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _nvidia_driver() -> str | None:
    try:
        done = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=10, check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip().splitlines()[0] if done.stdout.strip() else None


def device_info(device: str | torch.device) -> dict[str, str | int | None]:
    """Name of the device a job ran on, with CUDA runtime and driver versions where CUDA is used."""
    device = torch.device(device)
    info: dict[str, str | int | None] = {
        "device": str(device),
        "device_name": _cpu_name(),
        "cpu_count": _cpu_count(),
        "cuda": torch.version.cuda,
        "cuda_driver": None,
        "cudnn": None,
    }
    if device.type == "cuda":
        info["device_name"] = torch.cuda.get_device_name(device)
        info["cuda_driver"] = _nvidia_driver()
        info["cudnn"] = torch.backends.cudnn.version()
    return info


def _cpu_count() -> int | None:
    # The CPUs this process may use, which is what bounds CPU timings.
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def collect_provenance(device: str | torch.device) -> dict:
    """Everything results.json records about the code, libraries, interpreter and device of a run."""
    return {
        **git_state(),
        "packages": package_versions(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        **device_info(device),
    }
