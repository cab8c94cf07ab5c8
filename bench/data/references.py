"""Reference images: the real images a dataset's samples are compared with (FID and friends).

Published FIDs disagree mostly because the reference sets differ, so every choice is explicit and
ends up in `ReferenceSet.protocol`:

- COCO (coco30k, coco5k): the user's val2014 image folder (`dataset.reference_dir`, as extracted from
  val2014.zip), listed either by globbing `*.jpg` or through `dataset.captions_file`
  (captions_val2014.json, which names every image of the split). `dataset.reference_set` is "all"
  (every image of the split: the Imagen FID-30K convention) or "matched" (only the images whose
  captions were selected: MLPerf's convention for its 5K subset).
- CC3M: the output folder of img2dataset (see bench/data/download.py), in its `files` layout
  (00000/000000000.jpg with .json/.txt sidecars) or its `webdataset` layout (00000.tar, ...).
  Images are matched to caption rows by URL; rows whose URL gave no image are counted as unreachable.
- shapes: nothing to download. The references are renders of the shapes world's test scenes
  (bench.shapes.scenes.render(make_scene(scene, "test", resolution))) at the evaluation resolution, one per row of
  the prompt list ("all", by default) or per selected prompt ("matched"), rendered when read.

`dataset.reference_limit` keeps the first N images of the ordered list (image id order for "all",
caption order for "matched"). Images are read lazily: a `ReferenceImage` holds a picklable callable
that returns the encoded bytes, so a reference set of 40k images costs no memory until it is read.

What is in the folder is part of the protocol (`content`: a sha256 over every image's name, byte size and
modification time, read with one stat per file), so cached reference features are keyed by the images
themselves: a second download into a folder of the same name, or any changed image, gives other features. A
rendered shapes reference is stamped with a hash of its scene's ground truth instead.

One idea, one file (about 550 lines): every layout ends in the same ReferenceSet, and the rules that
make two reference sets comparable (order, limit, fingerprint) are read best side by side.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import os
import re
import stat
import tarfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.core.config import ReferenceSet
from bench.core.errors import BenchError
from bench.data.captions import coco_file_name
from bench.data.images import list_images
from bench.data.prompts import PromptRecord, caption_list_protocol, load_dataset
from bench.shapes.prompts import SPLIT as PROMPT_SPLIT
from bench.shapes.scenes import make_scene, render

# As the config schema lists them (dataset.reference_set); checked here too for direct Python callers.
REFERENCE_SETS = tuple(ReferenceSet)
# The caption lists whose reference images are COCO val2014's.
COCO_LISTS = ("coco30k", "coco5k")
# The caption lists whose reference images are rendered, not downloaded (the shapes world, bench/shapes/).
RENDERED_LISTS = ("shapes",)
# Every caption list whose protocol defines reference images of its own (others need dataset.reference_dir).
LISTS_WITH_REFERENCES = (*COCO_LISTS, "cc3m", *RENDERED_LISTS)
IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")  # what img2dataset's encode_format can write
PREPARE_HINT = "muse-bench job=prepare dataset={name}` (or `python -m bench.download {name} --root DIR"


@dataclass(frozen=True)
class ReferenceImage:
    """One reference image: a stable key (file name or img2dataset key), a callable returning its bytes, and a
    stamp that changes when the image does (byte size and modification time of its file; see file_stamp)."""

    key: str
    read: Callable[[], bytes] = field(repr=False, compare=False)
    stamp: str = field(default="", compare=False)


def file_stamp(info: os.stat_result) -> str:
    """What identifies a file's content without reading it: its byte size and modification time (ns)."""
    return f"{info.st_size}:{info.st_mtime_ns}"


FILE_STAMPS = "each image's name, byte size and modification time (ns), in reference order"


def content_fingerprint(images: Sequence[ReferenceImage], of: str = FILE_STAMPS) -> dict[str, Any]:
    """The `content` entry of a reference protocol: a sha256 over each image's key and stamp, in order; `of` says
    what the stamps are."""
    digest = hashlib.sha256()
    for image in images:
        digest.update(f"{image.key}\t{image.stamp}\n".encode("utf-8", "surrogateescape"))
    return {"sha256": digest.hexdigest(), "images": len(images), "of": of}


@dataclass
class ReferenceSet:
    """The reference images of a dataset, the protocol that produced the list, and how complete it is.

    stats: expected (images the protocol asks for), found, unreachable (expected - found: CC3M URLs
    that gave no image; always 0 for COCO, where a missing file is an error), unreachable_fraction.
    """

    images: list[ReferenceImage]
    protocol: dict[str, Any]
    stats: dict[str, Any]
    # What the images' stamps are (content_fingerprint's `of`): file stamps, unless the images are rendered.
    stamps: str = FILE_STAMPS

    def __post_init__(self) -> None:
        # The protocol names the images by content, so anything keyed by it (cached features) follows the folder.
        self.protocol["content"] = content_fingerprint(self.images, self.stamps)


def _option(cfg: Any, key: str, default: Any = None) -> Any:
    """A config value from a DictConfig, a plain dict or a dataclass; `default` when absent or null."""
    value = cfg.get(key, default) if isinstance(cfg, Mapping) else getattr(cfg, key, default)
    return default if value is None else value


def _read_file(path: Path) -> bytes:
    return path.read_bytes()


def _read_span(path: Path, offset: int, size: int) -> bytes:
    """Bytes [offset, offset + size) of a file: a member of an uncompressed tar, without scanning the tar."""
    with path.open("rb") as handle:
        handle.seek(offset)
        data = handle.read(size)
    if len(data) != size:
        raise BenchError(f"{path}: truncated at byte {offset + len(data)} (expected {size} bytes of a member). "
                         "The tar shard is incomplete: download it again.")
    return data


def _stats(expected: int, found: int) -> dict[str, Any]:
    unreachable = expected - found
    return {
        "expected": expected,
        "found": found,
        "unreachable": unreachable,
        "unreachable_fraction": unreachable / expected if expected else 0.0,
    }


def _examples(names: Sequence[str], k: int = 5) -> str:
    shown = ", ".join(names[:k])
    return shown + (", ..." if len(names) > k else "")


def has_own_references(name: str) -> bool:
    """Whether the dataset's protocol defines reference images (COCO val2014, CC3M validation, rendered shapes), so
    that FID and friends need no dataset.reference_dir."""
    return name in LISTS_WITH_REFERENCES


def open_references(dataset_cfg: Any, records: Sequence[PromptRecord], *, resolution: int | None = None) -> ReferenceSet:
    """The reference images for `records` of the dataset `dataset_cfg` describes (cfg.dataset).

    Reads name, path, caption_seed, reference_dir, captions_file, reference_set and reference_limit
    (absent keys take their defaults). `records` are the selected captions (after dataset.limit): the
    "matched" set is their images. `resolution` is the evaluation resolution, which rendered references (shapes)
    are drawn at; the other datasets' images are files and ignore it. Raises BenchError when the images are
    missing, saying how to get them.
    """
    name = _option(dataset_cfg, "name")
    reference_set = _option(dataset_cfg, "reference_set", "all")
    if reference_set not in REFERENCE_SETS:
        raise BenchError(f"dataset.reference_set must be one of {', '.join(REFERENCE_SETS)}; got {reference_set!r}.")
    limit = _option(dataset_cfg, "reference_limit")
    if limit is not None and limit < 1:
        raise BenchError(f"dataset.reference_limit must be at least 1, or null for no cap; got {limit}.")
    path = _option(dataset_cfg, "path")
    caption_seed = _option(dataset_cfg, "caption_seed", 0)
    reference_dir = _option(dataset_cfg, "reference_dir")
    if name in COCO_LISTS:
        if reference_dir is None:
            raise BenchError(
                f"dataset.reference_dir is not set: FID on {name} compares samples with COCO val2014 images. "
                f"Run `{PREPARE_HINT.format(name=name)}` (downloads val2014.zip, 6.6 GB, and the captions; it prints "
                "the settings to use), or set dataset.reference_dir to your own val2014 folder (and "
                "dataset.captions_file to captions_val2014.json)."
            )
        return coco_references(
            name, reference_dir, records, reference_set=reference_set,
            captions_file=_option(dataset_cfg, "captions_file"), reference_limit=limit, path=path,
            caption_seed=caption_seed,
        )
    if name == "cc3m":
        if reference_dir is None:
            raise BenchError(
                "dataset.reference_dir is not set: FID on cc3m compares samples with the CC3M validation images. "
                f"Run `{PREPARE_HINT.format(name='cc3m')}` for the img2dataset command that downloads them, then set "
                "dataset.reference_dir to its output folder."
            )
        return cc3m_references(reference_dir, records, reference_set=reference_set, reference_limit=limit, path=path)
    if name in RENDERED_LISTS and reference_dir is None:
        if resolution is None:
            raise ValueError(f"{name}'s reference images are rendered at the evaluation resolution: pass resolution=")
        return shapes_references(records, resolution=resolution, reference_set=reference_set, reference_limit=limit,
                                 path=path)
    if reference_dir is None:
        raise BenchError(f"Dataset {name!r} has no reference images of its own: set dataset.reference_dir to a folder "
                         "of images to compare its samples with.")
    return folder_references(name, reference_dir, reference_limit=limit)


def folder_references(name: str, reference_dir: str | Path, *, reference_limit: int | None = None) -> ReferenceSet:
    """Every image of a plain folder (recursively, in clean-fid's order) as the reference set of a dataset that
    has none of its own (e.g. PartiPrompts against a photo collection); reference_limit keeps the first N."""
    folder = Path(reference_dir).expanduser()
    if not folder.is_dir():
        raise BenchError(f"dataset.reference_dir={str(reference_dir)!r} is not a folder.")
    files = list_images(folder)
    if not files:
        raise BenchError(f"dataset.reference_dir={str(folder)!r} holds no images ({', '.join(IMAGE_EXTENSIONS)}).")
    if reference_limit is not None:
        files = files[:reference_limit]
    images = [ReferenceImage(str(f.relative_to(folder)), functools.partial(_read_file, f), file_stamp(f.stat()))
              for f in files]
    protocol = {"dataset": name, "source": "folder", "source_dir": folder.name, "reference_set": "all",
                "count": len(images), "reference_limit": reference_limit}
    return ReferenceSet(images, protocol, _stats(len(images), len(images)))


# ---- COCO -----------------------------------------------------------------------------------------------


def _coco_split(path: str | None) -> str:
    """The split the captions come from: val2014 for the shipped lists, else read off a captions_<split>.json name."""
    if path is None or not str(path).lower().endswith(".json"):
        return "val2014"
    match = re.search(r"(train|val|test)\d{4}", Path(path).name)
    return match.group(0) if match else "unknown"


def _coco_listing(captions_file: Path) -> dict[int, str]:
    """image id -> file name of every image a COCO annotation file lists."""
    if not captions_file.is_file():
        raise BenchError(f"dataset.captions_file not found: {captions_file}. Point it at captions_val2014.json "
                         "(annotations_trainval2014.zip), or set it to null to list the *.jpg files of reference_dir.")
    try:
        data = json.loads(captions_file.read_text(encoding="utf-8"))
        return {int(image["id"]): str(image["file_name"]) for image in data["images"]}
    except json.JSONDecodeError as err:
        raise BenchError(
            f"{captions_file}:{err.lineno}: not valid JSON ({err.msg}). Is this captions_val2014.json?"
        ) from err
    except (KeyError, TypeError, ValueError) as err:
        raise BenchError(f"{captions_file}: no 'images' list with id and file_name ({err!r}). "
                         "Is this a COCO annotation file such as captions_val2014.json?") from err


def coco_references(
    name: str,
    reference_dir: str | Path,
    records: Sequence[PromptRecord],
    *,
    reference_set: str = "all",
    captions_file: str | Path | None = None,
    reference_limit: int | None = None,
    path: str | None = None,
    caption_seed: int = 0,
) -> ReferenceSet:
    """COCO reference images from a val2014 folder (see the module docstring for the choices).

    Every listed image must exist: a missing file raises BenchError with the count and a few names.
    "all" also checks that the records' own images are in the listing, which catches a folder or
    captions file of the wrong split.
    """
    folder = Path(reference_dir)
    if not folder.is_dir():
        raise BenchError(
            f"dataset.reference_dir={folder} is not a folder. Run `{PREPARE_HINT.format(name=name)}` to download "
            "and extract COCO val2014, or set dataset.reference_dir to the folder holding COCO_val2014_*.jpg."
        )
    listing = _coco_listing(Path(captions_file)) if captions_file else None

    def record_file(record: PromptRecord) -> str:
        image_id = int(record.metadata.get("image_id", record.id))
        if listing is not None:
            if image_id not in listing:
                raise BenchError(f"image_id {image_id} (caption {record.index}) is not in dataset.captions_file="
                                 f"{captions_file}: the captions file is of another split than the caption list.")
            return listing[image_id]
        return str(record.metadata.get("file_name") or coco_file_name(image_id))

    matched = list(dict.fromkeys(record_file(r) for r in records))  # one reference per image, caption order
    if reference_set == "matched":
        files = matched
    else:
        if listing is not None:
            files = [listing[i] for i in sorted(listing)]
        else:
            # val2014.zip holds only COCO_val2014_<12-digit id>.jpg, so name order is image id order.
            files = sorted(p.name for p in folder.glob("*.jpg"))
        listed = set(files)
        outside = [f for f in matched if f not in listed]
        if outside:
            raise BenchError(
                f"{len(outside)} of the {len(matched)} images of the selected captions are not among the "
                f"{len(files)} images listed from {captions_file or folder} (e.g. {_examples(outside)}): "
                "reference_dir or captions_file is of another split than the captions. Point dataset.reference_dir "
                "at the val2014 folder, or use dataset.reference_set=matched."
            )
    if reference_limit is not None:
        files = files[:reference_limit]
    file_stats: dict[str, os.stat_result] = {}
    missing = []
    for f in files:
        try:
            file_stats[f] = (folder / f).stat()
        except OSError:
            missing.append(f)
            continue
        if not stat.S_ISREG(file_stats[f].st_mode):
            missing.append(f)
    if missing:
        raise BenchError(
            f"{len(missing)} of {len(files)} reference images are missing from {folder} (e.g. {_examples(missing)}). "
            f"Run `{PREPARE_HINT.format(name=name)}` to download and extract COCO val2014, or set "
            "dataset.reference_dir to the folder that holds them."
        )
    images = [ReferenceImage(key=f, read=functools.partial(_read_file, folder / f), stamp=file_stamp(file_stats[f]))
              for f in files]
    if captions_file:
        listing_name = Path(captions_file).name
    else:
        listing_name = "file_name of each caption" if reference_set == "matched" else "*.jpg in reference_dir"
    protocol = {
        "dataset": name,
        "split": _coco_split(path),
        "reference_set": reference_set,
        "count": len(images),
        "reference_limit": reference_limit,
        "source": folder.name,
        "listing": listing_name,
        "source_format": "image folder",
        **caption_list_protocol(name, path, caption_seed=caption_seed),
    }
    return ReferenceSet(images=images, protocol=protocol, stats=_stats(len(files), len(images)))


# ---- CC3M (img2dataset output) ------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Downloaded:
    url: str
    image: ReferenceImage
    extension: str


def _sidecar_url(meta: Any, where: str) -> str | None:
    """The URL of a successful img2dataset sample, None for a failed one; BenchError when it is no sidecar."""
    if not isinstance(meta, dict) or "url" not in meta:
        raise BenchError(f"{where}: not an img2dataset metadata file (no 'url'). Is dataset.reference_dir the "
                         "output folder of img2dataset?")
    # img2dataset writes sidecars for successes only; the status check guards against other writers.
    return str(meta["url"]) if meta.get("status", "success") == "success" else None


def _scan_files_layout(folder: Path) -> list[_Downloaded]:
    """img2dataset --output_format files: <shard>/<key>.<ext> with <key>.json holding url and status."""
    found = []
    for shard in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("_")):
        for meta_path in sorted(shard.glob("*.json")):
            try:
                meta = json.loads(meta_path.read_text(encoding="utf-8"))
            except (json.JSONDecodeError, UnicodeDecodeError) as err:
                raise BenchError(
                    f"{meta_path}: not valid JSON ({err}). Delete that sample or download the shard again."
                ) from err
            url = _sidecar_url(meta, str(meta_path))
            if url is None:
                continue
            for ext in IMAGE_EXTENSIONS:
                image_path = meta_path.with_suffix(f".{ext}")
                if image_path.is_file():
                    reader = functools.partial(_read_file, image_path)
                    stamp = file_stamp(image_path.stat())
                    found.append(_Downloaded(url, ReferenceImage(meta_path.stem, reader, stamp), ext))
                    break
    return found


def _scan_tar_layout(tars: list[Path]) -> list[_Downloaded]:
    """img2dataset --output_format webdataset: <shard>.tar with members <key>.<ext>, <key>.json, <key>.txt.

    Only the small .json members are read now; an image member is located by its data offset so that
    ReferenceImage.read seeks straight to it later.
    """
    found = []
    for tar_path in tars:
        tar_stat = tar_path.stat()
        metas: dict[str, Any] = {}
        spans: dict[str, tuple[str, int, int]] = {}
        try:
            with tarfile.open(tar_path, "r:") as tar:
                for member in tar:
                    if not member.isfile():
                        continue
                    key, _, ext = member.name.rpartition("/")[2].partition(".")
                    if ext == "json":
                        handle = tar.extractfile(member)
                        try:
                            metas[key] = json.loads(handle.read().decode("utf-8")) if handle else None
                        except (json.JSONDecodeError, UnicodeDecodeError) as err:
                            raise BenchError(
                                f"{tar_path}:{member.name}: not valid JSON ({err}). Download the shard again."
                            ) from err
                    elif ext in IMAGE_EXTENSIONS:
                        spans[key] = (ext, member.offset_data, member.size)
        except (tarfile.TarError, EOFError) as err:
            raise BenchError(
                f"{tar_path}: not a readable uncompressed tar ({err}). img2dataset's webdataset shards are plain "
                ".tar files; download the shard again."
            ) from err
        for key in sorted(spans):
            if key not in metas:
                continue
            url = _sidecar_url(metas[key], f"{tar_path}:{key}.json")
            if url is None:
                continue
            ext, offset, size = spans[key]
            reader = functools.partial(_read_span, tar_path, offset, size)
            stamp = f"{tar_path.name}@{offset}+{size}:{file_stamp(tar_stat)}"
            found.append(_Downloaded(url, ReferenceImage(key, reader, stamp), ext))
    return found


def _img2dataset_stats(folder: Path) -> dict[str, int] | None:
    """Totals of img2dataset's per-shard <shard>_stats.json (count, successes, failed_to_download, failed_to_resize)."""
    totals = {"count": 0, "successes": 0, "failed_to_download": 0, "failed_to_resize": 0}
    files = sorted(folder.glob("*_stats.json"))
    for path in files:
        try:
            stats = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise BenchError(
                f"{path}: not valid JSON ({err}). Delete it, or rerun img2dataset for that shard."
            ) from err
        for key in totals:
            totals[key] += int(stats.get(key, 0))
    return totals if files else None


def cc3m_references(
    reference_dir: str | Path,
    records: Sequence[PromptRecord],
    *,
    reference_set: str = "all",
    reference_limit: int | None = None,
    path: str | None = None,
) -> ReferenceSet:
    """CC3M reference images from an img2dataset output folder, matched to caption rows by URL.

    "matched": the images of `records`; "all": the images of every row of the caption list. Rows
    without an image are counted (stats unreachable, unreachable_fraction); images whose URL is in
    no row of the caption list are counted as stats["not_in_caption_list"] and left out.
    """
    folder = Path(reference_dir)
    hint = (f"Run `{PREPARE_HINT.format(name='cc3m')}` for the img2dataset command that downloads the CC3M "
            "validation images, and set dataset.reference_dir to its output folder.")
    if not folder.is_dir():
        raise BenchError(f"dataset.reference_dir={folder} is not a folder. {hint}")
    tars = sorted(folder.glob("*.tar"))
    has_files = any(p.is_dir() and any(p.glob("*.json")) for p in folder.iterdir())
    if tars and has_files:
        raise BenchError(f"{folder} holds both tar shards and image subfolders; point dataset.reference_dir at the "
                         "output of one img2dataset run.")
    source_format = "img2dataset webdataset" if tars else "img2dataset files"
    downloaded = _scan_tar_layout(tars) if tars else _scan_files_layout(folder)
    by_url: dict[str, _Downloaded] = {}
    for item in downloaded:
        by_url.setdefault(item.url, item)
    full = load_dataset("cc3m", path=path)
    wanted = full if reference_set == "all" else records
    urls = list(dict.fromkeys(str(r.metadata["url"]) for r in wanted))
    hits = [by_url[u] for u in urls if u in by_url]
    if not hits:
        raise BenchError(f"None of the {len(urls)} CC3M caption rows has an image in {folder} "
                         f"({len(downloaded)} images found there, matched by URL). {hint}")
    listed = {str(r.metadata["url"]) for r in full}
    stats = _stats(len(urls), len(hits))
    # Images from another caption list (a different TSV was downloaded into this folder) are left out.
    stats["not_in_caption_list"] = sum(1 for u in by_url if u not in listed)
    img2dataset = _img2dataset_stats(folder)
    if img2dataset is not None:
        stats["img2dataset"] = img2dataset
    if reference_limit is not None:
        hits = hits[:reference_limit]
    protocol = {
        "dataset": "cc3m",
        "split": "validation",
        "reference_set": reference_set,
        "count": len(hits),
        "reference_limit": reference_limit,
        "source": folder.name,
        "source_format": source_format,
        "image_format": sorted({h.extension for h in hits}),
        "expected": stats["expected"],
        "found": stats["found"],
        "unreachable": stats["unreachable"],
        **caption_list_protocol("cc3m", path),
    }
    return ReferenceSet(images=[h.image for h in hits], protocol=protocol, stats=stats)


# ---- shapes (rendered test scenes) ---------------------------------------------------------------------------


def _render_png(index: int, split: str, size: int) -> bytes:
    """Scene `index` of `split` drawn and rendered at `size` px, as PNG bytes (lossless: the pixels are the
    render's)."""
    buffer = io.BytesIO()
    render(make_scene(index, split, size)).save(buffer, format="PNG")
    return buffer.getvalue()


def _scene_stamp(index: int, split: str, size: int) -> str:
    """What identifies a rendered reference without rendering it: a hash of its scene's ground truth (skill,
    objects and boxes), so changed scene generation gives other cached features."""
    return hashlib.sha256(repr(make_scene(index, split, size)).encode("utf-8")).hexdigest()[:16]


def _index_ranges(indices: Sequence[int]) -> str:
    """Indices written compactly: [0, 1, 2, 5, 7, 8] -> "0-2,5,7-8"."""
    parts: list[str] = []
    start = previous = None
    for i in list(indices) + [None]:
        if start is not None and (i is None or i != previous + 1):
            parts.append(str(start) if start == previous else f"{start}-{previous}")
            start = None
        if i is not None and start is None:
            start = i
        previous = i
    return ",".join(parts)


def shapes_references(
    records: Sequence[PromptRecord],
    *,
    resolution: int,
    reference_set: str = "all",
    reference_limit: int | None = None,
    path: str | None = None,
) -> ReferenceSet:
    """The shapes world's reference images: its test scenes, drawn and rendered at `resolution`, read lazily.

    "all": the scene of every row of the prompt list (300 for the shipped one: as many references as the list has
    rows); "matched": the scenes of `records`. Each scene once, in list order; reference_limit keeps the first N.
    A scene's layout does not depend on the size it is drawn at (bench/shapes/scenes.py), so at every resolution
    (a multiple of the scene lattice) each reference is exactly the ground truth its prompt was captioned from. The
    references are disjoint from the train and validation splits (other split
    seeds), not from the prompts: the protocol says so.
    """
    if resolution < 1:
        raise BenchError(f"The shapes references are rendered at the evaluation resolution; got {resolution} px.")
    full = load_dataset("shapes", path=path)
    wanted = full if reference_set == "all" else records
    scenes = list(dict.fromkeys(int(r.metadata["scene"]) for r in wanted))
    if reference_limit is not None:
        scenes = scenes[:reference_limit]
    images = [ReferenceImage(f"{PROMPT_SPLIT}-{i:05d}", functools.partial(_render_png, i, PROMPT_SPLIT, resolution),
                             _scene_stamp(i, PROMPT_SPLIT, resolution)) for i in scenes]
    protocol = {
        "dataset": "shapes",
        "split": PROMPT_SPLIT,
        "reference_set": reference_set,
        "count": len(images),
        "reference_limit": reference_limit,
        "source": "rendered: bench.shapes.scenes.render(make_scene(scene, split, size))",
        "source_format": "PNG, rendered when read",
        "size": resolution,
        "scenes": _index_ranges(scenes),
        "disjoint_from": "the train and validation splits (other split seeds); not from the prompts: each reference "
                         "is the scene a prompt of the list was captioned from",
        **caption_list_protocol("shapes", path),
    }
    return ReferenceSet(images=images, protocol=protocol, stats=_stats(len(images), len(images)),
                        stamps="each image's name and a hash of its scene's ground truth (the repr of its Scene), in "
                               "reference order")
