"""Feature extractors for FID and KID: clean-fid's Inception, or an injected module, behind one interface.

A `FeatureExtractor` does per image exactly what clean-fid's folder path does (cleanfid.utils.
ResizeDataset): the mode's resizer (cleanfid.resize.build_resizer), the same tensor conversion,
then the network on the stacked batch. Images therefore give the same features whether they
arrive as arrays straight from the generator or are read back from PNG files.

`build_fid_extractor` reads the `eval.fid` config: clean-fid's Inception (its weights file must be
present or downloadable; offline, a BenchError says how to supply it), a Hydra `_target_` building a
module (tests and offline smoke runs inject bench.testing.RandomConvFeatures), or a TorchScript file. Missing
Inception weights are fetched once by the one downloader (bench/core/download.py) and checked against their
published sha256. One idea (Inception features as clean-fid computes them) a little over 400 lines: most of it
is finding, checking and loading the weights each clean-fid mode needs.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import platform
import shutil
import tempfile
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from bench.core.config import FidMode
from bench.core.download import DownloadError, download_file
from bench.core.errors import BenchError
from bench.core.results import file_sha256

# clean-fid's modes, as the config schema lists them (eval.fid.mode); checked here too for direct Python callers.
MODES = tuple(FidMode)

# clean-fid's TorchScript Inception (TF weights), used by modes clean and legacy_tensorflow
# (cleanfid/downloads_helper.py, inception_url).
INCEPTION_FILE = "inception-2015-12-05.pt"
INCEPTION_URL = "https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/metrics/inception-2015-12-05.pt"
INCEPTION_SHA256 = "f58cb9b6ec323ed63459aa4fb441fe750cfe39fafad6da5cb504a16f19e958f4"
# pytorch-fid's port of the same weights, used by mode legacy_pytorch (cleanfid/inception_pytorch.py,
# FID_WEIGHTS_URL). torch.hub names checkpoints <name>-<first digits of sha256>.pth; that prefix is all
# the hash this file publishes.
PT_INCEPTION_FILE = "pt_inception-2015-12-05-6726825d.pth"
PT_INCEPTION_URL = "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/" + PT_INCEPTION_FILE
PT_INCEPTION_SHA256_PREFIX = "6726825d"

# Where cleanfid.features.feature_extractor looks for (and downloads) inception-2015-12-05.pt: it
# hard-codes "/tmp" (not tempfile.gettempdir()), "./" on Windows.
CLEANFID_INCEPTION_DIR = Path("./" if platform.system() == "Windows" else "/tmp")

INCEPTION_NAME = "inception-2015-12-05 (clean-fid TorchScript, TF weights)"
PT_INCEPTION_NAME = "pt_inception-2015-12-05-6726825d (clean-fid's pytorch-fid port of the TF weights)"

# What cleanfid.resize.build_resizer(mode) does to each image before the network; recorded in protocols.
GENERATED_RESIZE = {
    "clean": {
        "library": "PIL",
        "filter": "bicubic",
        "size": [299, 299],
        "quantize": False,
        "detail": "each channel resized as a float32 PIL image, clipped to [0, 255], not rounded",
    },
    "legacy_pytorch": {
        "library": "PyTorch",
        "filter": "bilinear",
        "size": [299, 299],
        "quantize": False,
        "detail": "torch.nn.functional.interpolate(align_corners=False, no antialias), clipped to [0, 255]",
    },
    "legacy_tensorflow": {
        "library": "none outside the network",
        "filter": None,
        "size": None,
        "quantize": False,
        "detail": "uint8 images reach the network at their own size; clean-fid's Inception resizes inside its "
        "graph (TF-style bilinear)",
    },
}

log = logging.getLogger(__name__)

# Targets the README documented before a move (a config's `_target_` is public surface): old -> new.
MOVED_TARGETS = {"bench.features.RandomConvFeatures": "bench.testing.RandomConvFeatures"}

_DOWNLOAD_TIMEOUT_S = 20  # per socket operation: offline, name resolution fails at once anyway


@dataclass
class FeatureExtractor:
    """A feature network plus clean-fid's per-image preprocessing for `mode`.

    `model` maps a float [N, 3, H, W] batch in [0, 255] (H = W = 299 except in legacy_tensorflow mode)
    to [N, dims] features. `name` is the stable id recorded in protocols and in reference-cache keys.
    `dims` is filled in on the first call when not known in advance.
    """

    model: Callable[[torch.Tensor], torch.Tensor]
    name: str
    mode: str = "clean"
    dims: int | None = None
    device: str = "cpu"
    _resize: Callable[[np.ndarray], np.ndarray] | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        self.device = str(self.device)

    def preprocess(self, img: np.ndarray) -> torch.Tensor:
        """One uint8 H x W x 3 image -> the [3, h, w] float tensor in [0, 255] clean-fid feeds the network."""
        if not isinstance(img, np.ndarray) or img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
            raise ValueError(
                "FeatureExtractor expects uint8 H x W x 3 RGB arrays, got "
                f"{type(img).__name__} {getattr(img, 'dtype', '')} {getattr(img, 'shape', '')}"
            )
        if self._resize is None:
            from cleanfid.resize import build_resizer

            self._resize = build_resizer(self.mode)
        resized = self._resize(img)
        # cleanfid.utils.ResizeDataset.__getitem__: torchvision's ToTensor, then *255 for uint8 (which
        # ToTensor divides by 255 first: the round trip is kept because it is not bit-exact).
        tensor = torch.from_numpy(np.ascontiguousarray(resized.transpose((2, 0, 1))))
        if resized.dtype == np.uint8:
            return tensor.to(dtype=torch.get_default_dtype()).div(255) * 255
        if resized.dtype == np.float32:
            return tensor
        raise ValueError(f"clean-fid resizer returned {resized.dtype}; expected uint8 or float32")

    def __call__(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """Features [len(images), dims] (numpy, the network's dtype) of uint8 H x W x 3 RGB images."""
        if len(images) == 0:
            return np.zeros((0, self.dims or 0), dtype=np.float32)
        tensors = [self.preprocess(img) for img in images]
        shapes = {tuple(t.shape) for t in tensors}
        if len(shapes) > 1:
            # Only possible in legacy_tensorflow mode, where clean-fid does not resize outside the network.
            raise ValueError(f"images of one batch must share a size in mode {self.mode}; got {sorted(shapes)}")
        with torch.no_grad():
            feats = self.model(torch.stack(tensors).to(self.device))
        feats = feats.detach().cpu().numpy()
        if feats.ndim != 2 or feats.shape[0] != len(images):
            raise ValueError(f"feature extractor {self.name} returned shape {feats.shape}; expected [N, D]")
        if self.dims is None:
            self.dims = int(feats.shape[1])
        elif feats.shape[1] != self.dims:
            raise ValueError(
                f"feature extractor {self.name} returned {feats.shape[1]}-d features, expected {self.dims}"
            )
        return feats

    def protocol(self) -> dict[str, Any]:
        """The choices of this extractor that move FID/KID: mode, network, dims, resize of generated images."""
        return {
            "mode": self.mode,
            "feature_extractor": self.name,
            "feature_dims": self.dims,
            "generated_resize": {
                **GENERATED_RESIZE[self.mode],
                "source": f"cleanfid.resize.build_resizer({self.mode!r})",
            },
        }


def inception_search_dirs() -> list[Path]:
    """Folders searched for clean-fid's weights: clean-fid's own (/tmp) and the temp dir, when different."""
    dirs = [CLEANFID_INCEPTION_DIR, Path(tempfile.gettempdir())]
    unique: list[Path] = []
    for folder in dirs:
        if all(os.path.abspath(folder) != os.path.abspath(seen) for seen in unique):
            unique.append(folder)
    return unique


@dataclass(frozen=True)
class _Weights:
    """One weights file a mode needs: where clean-fid finds it, where it comes from, how to check it."""

    file: str
    url: str
    sha256: str  # full digest, or a prefix (pytorch-fid publishes only a prefix)
    dirs: tuple[Path, ...]

    def check(self, path: Path) -> None:
        """Refuse a file whose sha256 is not the published one (a truncated download, another model)."""
        actual = file_sha256(path)
        if not actual.startswith(self.sha256):
            raise BenchError(
                f"{path} is not {self.file}: its sha256 is {actual}, expected "
                f"{self.sha256 + ('...' if len(self.sha256) < 64 else '')}. It may be a truncated download or a "
                f"different file: delete it and download {self.url} again."
            )


def _weights_for(mode: str) -> _Weights:
    if mode == "legacy_pytorch":
        # clean-fid loads these through torch.hub, which caches them in <hub dir>/checkpoints.
        hub_checkpoints = Path(torch.hub.get_dir()) / "checkpoints"
        return _Weights(PT_INCEPTION_FILE, PT_INCEPTION_URL, PT_INCEPTION_SHA256_PREFIX, (hub_checkpoints,))
    return _Weights(INCEPTION_FILE, INCEPTION_URL, INCEPTION_SHA256, tuple(inception_search_dirs()))


def _missing_weights_error(weights: _Weights, mode: str, reason: str) -> BenchError:
    where = " or ".join(str(d / weights.file) for d in weights.dirs)
    digest = weights.sha256 if len(weights.sha256) == 64 else f"starting {weights.sha256}"
    return BenchError(
        f"FID/KID in mode {mode} need clean-fid's Inception weights {weights.file}, which are not on this "
        f"machine and could not be downloaded ({reason}). Download {weights.url} (sha256 {digest}) on a "
        f"machine with a network, then either put it at {where}, or set eval.fid.inception_path=/path/to/"
        f"{weights.file}. For an offline smoke test without Inception, inject a small extractor instead: "
        "eval.fid.feature_extractor._target_=bench.testing.RandomConvFeatures (its numbers are not "
        "comparable with published FIDs)."
    )


def resolve_inception_weights(mode: str, inception_path: str | Path | None = None, *, download: bool = True) -> Path:
    """Path of the verified weights file `mode` needs: `inception_path`, clean-fid's folder, or a download.

    A user-supplied or found file must match the published sha256. When the file is absent the
    download is tried once (unless `download` is false); any network failure becomes a BenchError that
    names the file, its URL and sha256 and the ways to supply it.
    """
    weights = _weights_for(mode)
    if inception_path is not None:
        path = Path(inception_path).expanduser()
        if not path.is_file():
            raise BenchError(
                f"eval.fid.inception_path={inception_path} does not exist. Point it at a local copy of "
                f"{weights.file} (from {weights.url}), or set it to null to use clean-fid's folder "
                f"({weights.dirs[0]})."
            )
        weights.check(path)
        return path
    for folder in weights.dirs:
        if (folder / weights.file).is_file():
            weights.check(folder / weights.file)
            return folder / weights.file
    if not download:
        raise _missing_weights_error(weights, mode, "downloads are disabled")
    dest = weights.dirs[0] / weights.file
    try:
        download_file(weights.url, dest, progress=False, timeout=_DOWNLOAD_TIMEOUT_S)
    except DownloadError as exc:  # offline, refused, timed out
        raise _missing_weights_error(weights, mode, exc.reason) from exc
    except (BenchError, OSError) as exc:  # an HTTP error, an interrupted download, a read-only folder
        raise _missing_weights_error(weights, mode, f"{type(exc).__name__}: {exc}") from exc
    try:
        weights.check(dest)
    except BenchError:
        dest.unlink(missing_ok=True)  # our own bad download: do not leave it for the next run to trip on
        raise
    return dest


@contextlib.contextmanager
def _quiet_jit_load() -> Iterator[None]:
    # torch marks torch.jit.load deprecated, but TorchScript is the format these weights ship in
    # (clean-fid's Inception included): the warning would only alarm users at every run.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*torch.jit.load.* is deprecated", category=FutureWarning)
        yield


class _PytorchInceptionFeatures(nn.Module):
    """clean-fid's legacy_pytorch model function (cleanfid.features.feature_extractor, pytorch_inception)."""

    def __init__(self, inception: nn.Module) -> None:
        super().__init__()
        self.inception = inception

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[N, 3, 299, 299] in [0, 255] -> [N, 2048] pool features."""
        return self.inception(x / 255)[0].squeeze(-1).squeeze(-1)


def _link(path: Path, link: Path) -> None:
    """`link` made to stand for the file at `path`: a symbolic link, or a copy where links are not allowed."""
    link.parent.mkdir(parents=True, exist_ok=True)
    try:
        link.symlink_to(path.resolve())
    except OSError:
        shutil.copyfile(path, link)


@contextlib.contextmanager
def _folder_holding(path: Path, name: str) -> Iterator[Path]:
    """A folder in which `name` is the file at `path`: its own folder when the name matches, else a temporary
    one with a link under that name. clean-fid opens its weights by fixed name in a fixed folder."""
    if path.name == name:
        yield path.parent
        return
    with tempfile.TemporaryDirectory() as folder:
        _link(path, Path(folder) / name)
        yield Path(folder)


@contextlib.contextmanager
def _hub_dir_holding(path: Path) -> Iterator[None]:
    """torch.hub's folder set, while inside, to a temporary one whose checkpoints/ holds `path` under the name
    clean-fid's legacy_pytorch Inception asks torch.hub for; the previous folder is set again on leaving."""
    previous = torch.hub.get_dir()
    with tempfile.TemporaryDirectory() as hub:
        _link(path, Path(hub) / "checkpoints" / PT_INCEPTION_FILE)
        torch.hub.set_dir(hub)
        try:
            yield
        finally:
            torch.hub.set_dir(previous)


def load_inception(mode: str, path: str | Path, device: str | torch.device = "cpu") -> nn.Module:
    """clean-fid's Inception for `mode` built from a local weights file, as cleanfid.features builds it."""
    path = Path(path)
    if mode == "legacy_pytorch":
        import cleanfid.inception_pytorch as inception_pytorch

        # clean-fid reads these weights only from torch.hub's cache, <hub dir>/checkpoints/<file> (downloading them
        # when absent): unless the file is there already, point torch.hub for this one build at a temporary hub
        # folder whose checkpoints/ holds it, through torch.hub's own setting.
        hub_dir = torch.hub.get_dir()
        cached = Path(hub_dir) / "checkpoints" / PT_INCEPTION_FILE
        with contextlib.ExitStack() as stack:
            if not (cached.is_file() and cached.resolve() == path.resolve()):
                stack.enter_context(_hub_dir_holding(path))
            model: nn.Module = _PytorchInceptionFeatures(
                inception_pytorch.InceptionV3(output_blocks=[3], resize_input=False))
    else:
        from cleanfid.inception_torchscript import InceptionV3W

        # InceptionV3W only opens <folder>/inception-2015-12-05.pt.
        with _folder_holding(path, INCEPTION_FILE) as folder, _quiet_jit_load():
            model = InceptionV3W(str(folder), download=False, resize_inside=mode == "legacy_tensorflow")
    return model.to(device).eval()


def _plain(cfg: Any) -> dict[str, Any]:
    if cfg is None:
        return {}
    try:
        from omegaconf import DictConfig, OmegaConf

        if isinstance(cfg, DictConfig):
            return dict(OmegaConf.to_container(cfg, resolve=True))  # type: ignore[arg-type]
    except ImportError:  # pragma: no cover - omegaconf is a dependency
        pass
    return dict(cfg)


def _module_name(module: Any, target: str | None, args: Mapping[str, Any]) -> str:
    name = getattr(module, "protocol_name", None)
    if isinstance(name, str) and name:
        return name
    if target is not None:
        return f"{target}({json.dumps(dict(args), sort_keys=True, separators=(',', ':'), default=str)})"
    cls = type(module)
    return f"{cls.__module__}.{cls.__qualname__}"


def _prepare_module(module: Any, device: str | torch.device) -> Any:
    if isinstance(module, nn.Module):
        module = module.to(device).eval()
    if not callable(module):
        raise BenchError(
            f"eval.fid.feature_extractor built a {type(module).__name__}, which is not callable: it must be an "
            "nn.Module mapping [N,3,H,W] floats in [0,255] to [N,D] features."
        )
    return module


def build_fid_extractor(cfg: Mapping[str, Any] | Any, device: str | torch.device = "cpu") -> FeatureExtractor:
    """The FID/KID feature extractor the `eval.fid` config asks for, on `device`.

    Keys: `mode` (clean | legacy_pytorch | legacy_tensorflow; default clean); `feature_extractor`
    (null = clean-fid's Inception for the mode; a mapping with a Hydra `_target_` building an nn.Module
    that maps float [N,3,H,W] in [0,255] to [N,D]; a path to a TorchScript file of such a module; or,
    from Python, an nn.Module); `inception_path` (null or a local copy of the weights file the mode
    needs); `download` (default true: fetch missing Inception weights once). Other keys are ignored.
    """
    cfg = _plain(cfg)
    mode = cfg.get("mode") or "clean"
    if mode not in MODES:
        raise BenchError(f"eval.fid.mode={mode!r} is not a clean-fid mode: use one of {', '.join(MODES)}.")
    device = str(device)
    spec = cfg.get("feature_extractor")
    if spec is None:
        weights = resolve_inception_weights(mode, cfg.get("inception_path"), download=bool(cfg.get("download", True)))
        model = load_inception(mode, weights, device)
        name = PT_INCEPTION_NAME if mode == "legacy_pytorch" else INCEPTION_NAME
        return FeatureExtractor(model=model, name=name, mode=mode, dims=2048, device=device)
    if isinstance(spec, Mapping):
        spec = dict(spec)
        if "_target_" not in spec:
            raise BenchError(
                "eval.fid.feature_extractor must be null, a TorchScript file path, or a mapping with a _target_ "
                "(e.g. eval.fid.feature_extractor._target_=bench.testing.RandomConvFeatures); got keys "
                f"{sorted(spec)}."
            )
        if spec["_target_"] in MOVED_TARGETS:
            # The README named this target before the stand-ins moved to bench/testing.py: command lines and
            # configs written then keep working, and are told the new name.
            log.warning("eval.fid.feature_extractor._target_=%s has moved: use %s", spec["_target_"],
                        MOVED_TARGETS[spec["_target_"]])
            spec["_target_"] = MOVED_TARGETS[spec["_target_"]]
        import hydra.utils

        try:
            module = hydra.utils.instantiate(spec)
        except Exception as exc:  # hydra wraps import and constructor errors in InstantiationException
            raise BenchError(f"Cannot build eval.fid.feature_extractor ({spec['_target_']}): {exc}") from exc
        args = {k: v for k, v in spec.items() if k != "_target_"}
        name = _module_name(module, spec["_target_"], args)
    elif isinstance(spec, (str, os.PathLike)):
        path = Path(spec).expanduser()
        if not path.is_file():
            raise BenchError(
                f"eval.fid.feature_extractor={spec} is not a file. Give a TorchScript file (torch.jit.save) of a "
                "module mapping [N,3,H,W] floats in [0,255] to [N,D] features, a mapping with a _target_, or null."
            )
        try:
            with _quiet_jit_load():
                module = torch.jit.load(str(path), map_location=device)
        except Exception as exc:  # torch raises RuntimeError/ValueError for a non-TorchScript file
            raise BenchError(f"Cannot load eval.fid.feature_extractor={spec} as TorchScript: {exc}") from exc
        # The file's digest is in the name: two different files must never share cached reference features.
        name = f"torchscript:{path.name} (sha256 {file_sha256(path)[:16]})"
    elif isinstance(spec, nn.Module) or callable(spec):
        module, name = spec, _module_name(spec, None, {})
    else:
        raise BenchError(
            f"eval.fid.feature_extractor has an unsupported value {spec!r}: use null, a TorchScript path or a _target_."
        )
    module = _prepare_module(module, device)
    return FeatureExtractor(model=module, name=name, mode=mode, dims=getattr(module, "dims", None), device=device)
