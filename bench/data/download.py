"""The prepare step: fetch the reference images a dataset's FID needs, or say how to.

- coco30k, coco5k: downloads the official COCO archives val2014.zip (40,504 images, 6.6 GB) and
  annotations_trainval2014.zip (for captions_val2014.json), verifies their sha256, extracts them under
  `root`, and returns the `dataset.reference_dir` / `dataset.captions_file` values to use.
  Downloads are resumable (bench/core/download.py): bytes go to `<archive>.part` and a rerun continues
  it with an HTTP Range request. A complete file whose sha256 does not match is deleted (resuming it could
  never repair it) and the step fails, so the next run starts that archive afresh.
- cc3m: the images exist only as URLs, many of them dead; img2dataset is the tool for that, so this
  step writes the caption list with the header img2dataset needs and returns the img2dataset command
  line (it does not download the images itself). img2dataset resizes as it downloads, so the command
  asks for the resolution that will be evaluated (`image_size`; the prepare job passes the run's):
  references smaller than that would be upsampled, which the evaluation warns about.

Run it as `python -m bench.download coco30k --root /data/coco`. Archives are fetched by the one downloader,
bench/core/download.py.
"""

from __future__ import annotations

import argparse
import csv
import json
import shlex
import shutil
import sys
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.core.download import download_file
from bench.core.errors import BenchError
from bench.data.captions import CC3M_HEADER
from bench.data.prompts import DATASET_NAMES, load_dataset

COCO_HOST = "http://images.cocodataset.org"
# The other way to a prepared COCO, named when an archive cannot be downloaded.
_MANUAL_ROUTE = ("or extract the archives yourself and set dataset.reference_dir / dataset.captions_file to the "
                 "results")


@dataclass(frozen=True)
class Archive:
    """One official archive: where it lives on the host, its size and sha256, and what to extract from it."""

    name: str
    url_path: str
    size: int
    sha256: str
    # Members to extract (zip paths); empty = all of them.
    members: tuple[str, ...] = ()


# Sizes and sha256 from tensorflow/datasets @ 333639b37af6c6fedf3610a4a2d42f1c6ef6f7d5,
# tensorflow_datasets/url_checksums/coco.txt; the same sha256 values are pinned in pytorch/vision @
# 05caddc3ed04f3b4de937a581c34193ed3c7d388, torchvision/prototype/datasets/_builtin/coco.py
# (_IMAGES_CHECKSUMS[("2014", "val")], _META_CHECKSUMS["2014"]).
COCO_ARCHIVES = {
    "val2014": Archive(
        "val2014.zip", "/zips/val2014.zip", 6645013297,
        "fe9be816052049c34717e077d9e34aa60814a55679f804cd043e3cbee3b9fde0",
    ),
    "annotations_trainval2014": Archive(
        "annotations_trainval2014.zip", "/annotations/annotations_trainval2014.zip", 252872794,
        "031296bbc80c45a1d1f76bf9a90ead27e94e99ec629208449507a4917a3bf009",
        members=("annotations/captions_val2014.json",),
    ),
}

def _extract(archive: Path, root: Path, members: Sequence[str], progress: bool) -> None:
    """Extract `members` (all when empty) of a zip into root, refusing paths that leave root."""
    from tqdm import tqdm

    try:
        with zipfile.ZipFile(archive) as zf:
            listed = zf.namelist()
            names = list(members) if members else [n for n in listed if not n.endswith("/")]
            absent = sorted(set(names) - set(listed))
            if absent:
                raise BenchError(f"{archive} lacks {', '.join(absent)}: not the expected archive. Delete it and run "
                                 "this step again.")
            base = root.resolve()
            for name in tqdm(names, desc=f"extract {archive.name}", unit="file", disable=not progress):
                target = (root / name).resolve()
                if base not in target.parents:
                    raise BenchError(
                        f"{archive}: member {name!r} would be written outside {root}; refusing to extract."
                    )
                zf.extract(name, root)
    except zipfile.BadZipFile as err:
        raise BenchError(f"{archive} is not a valid zip ({err}). Delete it and run this step again.") from err


def _prepare_coco(
    name: str, root: Path, *, progress: bool, mirror: str | None, checksums: Mapping[str, str | None] | None,
    keep_archives: bool, timeout: float,
) -> dict[str, Any]:
    host = (mirror or COCO_HOST).rstrip("/")
    reference_dir = root / "val2014"
    captions_file = root / "annotations" / "captions_val2014.json"
    outputs = {"val2014": reference_dir, "annotations_trainval2014": captions_file}
    archives = []
    for key, archive in COCO_ARCHIVES.items():
        overridden = checksums is not None and key in checksums
        sha256 = checksums[key] if overridden else archive.sha256
        url = host + archive.url_path
        output = outputs[key]
        marker = root / f".{archive.name}.prepared"
        if marker.is_file() and output.exists():
            archives.append({**json.loads(marker.read_text()), "skipped": "already prepared"})
            continue
        if output.exists():
            raise BenchError(f"{output} exists but was not extracted by this step. If it is complete, set "
                             f"dataset.reference_dir / dataset.captions_file to it; otherwise move it away and run "
                             "this step again.")
        info = download_file(url, root / archive.name, sha256=sha256, size=None if overridden else archive.size,
                             progress=progress, timeout=timeout, hint=_MANUAL_ROUTE)
        # Extract beside the final place and move in at the end, so an interrupted extraction is never mistaken
        # for a complete folder.
        staging = root / f".{archive.name}.extracting"
        shutil.rmtree(staging, ignore_errors=True)
        _extract(Path(info["path"]), staging, archive.members, progress)
        top = output.relative_to(root).parts[0]
        if not (staging / top).exists():
            raise BenchError(f"{info['path']} has no {top}/ folder: not the expected archive. Delete it and run this "
                             "step again.")
        if (root / top).exists():
            _merge(staging / top, root / top)
        else:
            (staging / top).replace(root / top)
        shutil.rmtree(staging, ignore_errors=True)
        if not output.exists():
            raise BenchError(f"{info['path']} did not yield {output}: not the expected archive.")
        marker.write_text(json.dumps(info) + "\n")
        if not keep_archives:
            Path(info["path"]).unlink()
        archives.append(info)
    return {
        "dataset": name,
        "reference_dir": str(reference_dir),
        "captions_file": str(captions_file),
        "archives": archives,
        "overrides": [f"dataset.reference_dir={reference_dir}", f"dataset.captions_file={captions_file}"],
    }


def _merge(source: Path, target: Path) -> None:
    """Move the files of `source` into the existing folder `target` (annotations/ of another archive)."""
    for path in source.rglob("*"):
        if path.is_file():
            destination = target / path.relative_to(source)
            destination.parent.mkdir(parents=True, exist_ok=True)
            path.replace(destination)


def img2dataset_command(
    url_list: str | Path,
    output_folder: str | Path,
    *,
    output_format: str = "files",
    image_size: int = 256,
    resize_mode: str = "center_crop",
    encode_format: str = "png",
    processes: int = 4,
    threads: int = 32,
) -> list[str]:
    """The img2dataset command line that downloads the images of a `caption<TAB>url` TSV with a header.

    Defaults: a 256x256 centre crop (img2dataset resizes down with OpenCV's INTER_AREA), written as PNG
    so no second JPEG compression is added to the references; files layout (webdataset also works).
    Two retries and a 20 s timeout keep transient failures out of the unreachable count.
    """
    command = [
        "img2dataset", "--url_list", str(url_list), "--input_format", "tsv",
        "--url_col", "url", "--caption_col", "caption",
        "--output_format", output_format, "--output_folder", str(output_folder),
        "--image_size", str(image_size), "--resize_mode", resize_mode,
        "--encode_format", encode_format,
        "--processes_count", str(processes), "--thread_count", str(threads),
        "--retries", "2", "--timeout", "20",
    ]
    if encode_format == "png":
        command += ["--encode_quality", "9"]  # for PNG img2dataset takes a compression level 0-9, not a quality
    return command


def _prepare_cc3m(root: Path, *, path: str | None, output_format: str, image_size: int) -> dict[str, Any]:
    # img2dataset reads the TSV with pyarrow, which takes column names from the first line: the official file
    # has none. csv's minimal quoting matches pyarrow's default parsing.
    url_list = root / "cc3m_validation.tsv"
    records = load_dataset("cc3m", path=path)
    root.mkdir(parents=True, exist_ok=True)
    with url_list.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, delimiter="\t", lineterminator="\n")
        writer.writerow(CC3M_HEADER)
        writer.writerows([r.prompt, r.metadata["url"]] for r in records)
    reference_dir = root / "cc3m_validation"
    command = img2dataset_command(url_list, reference_dir, output_format=output_format, image_size=image_size)
    return {
        "dataset": "cc3m",
        "url_list": str(url_list),
        "rows": len(records),
        "image_size": image_size,
        "reference_dir": str(reference_dir),
        "command": command,
        "command_line": shlex.join(command),
        "overrides": [f"dataset.reference_dir={reference_dir}"],
    }


def prepare_dataset(
    name: str,
    root: str | Path,
    *,
    progress: bool = True,
    mirror: str | None = None,
    checksums: Mapping[str, str | None] | None = None,
    keep_archives: bool = False,
    timeout: float = 60.0,
    path: str | None = None,
    output_format: str = "files",
    image_size: int = 256,
) -> dict[str, Any]:
    """Prepare the reference images of dataset `name` under `root`; return the config values to use.

    COCO (coco30k, coco5k): download, verify and extract val2014.zip and captions_val2014.json (see the
    module docstring); returns reference_dir, captions_file, archives (url, path, sha256, verified) and
    `overrides` (command-line settings). `mirror` replaces http://images.cocodataset.org; `checksums`
    replaces the known sha256 per archive key of COCO_ARCHIVES (None = do not verify: recorded as
    verified False). The archives are deleted after extraction unless `keep_archives`.
    CC3M: writes <root>/cc3m_validation.tsv (the caption list of `path` or the shipped one, with a
    header) and returns the img2dataset `command` that downloads its images to reference_dir, centre-cropped
    and resized to `image_size` (the resolution to be evaluated).
    """
    root = Path(root)
    if name in ("coco30k", "coco5k"):
        return _prepare_coco(name, root, progress=progress, mirror=mirror, checksums=checksums,
                             keep_archives=keep_archives, timeout=timeout)
    if name == "cc3m":
        if image_size < 1:
            raise BenchError(f"image_size must be a positive number of pixels, got {image_size}.")
        return _prepare_cc3m(root, path=path, output_format=output_format, image_size=image_size)
    if name == "shapes":
        raise BenchError("shapes has nothing to prepare: its reference images are rendered test scenes, drawn when "
                         "FID, KID or CMMD reads them.")
    if name in DATASET_NAMES:
        raise BenchError(f"{name} has no reference images to prepare: only coco30k, coco5k and cc3m do.")
    raise BenchError(f"Unknown dataset {name!r}. Datasets with reference images: coco30k, coco5k, cc3m.")


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: `python -m bench.download NAME --root DIR`; prints the settings (or command) to use."""
    parser = argparse.ArgumentParser(prog="python -m bench.download", description=__doc__.split("\n\n")[0])
    parser.add_argument("name", choices=["coco30k", "coco5k", "cc3m"])
    parser.add_argument("--root", required=True, help="folder for the archives and extracted images")
    parser.add_argument("--mirror", help=f"base URL replacing {COCO_HOST}")
    parser.add_argument("--keep-archives", action="store_true", help="keep the zip files after extraction")
    parser.add_argument("--output-format", default="files", choices=["files", "webdataset"],
                        help="cc3m: img2dataset layout")
    parser.add_argument("--image-size", type=int, default=256,
                        help="cc3m: side in pixels of the downloaded images: the resolution to be evaluated")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    try:
        result = prepare_dataset(args.name, args.root, progress=not args.no_progress, mirror=args.mirror,
                                 keep_archives=args.keep_archives, output_format=args.output_format,
                                 image_size=args.image_size)
    except BenchError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if "command_line" in result:
        print(f"Wrote {result['url_list']} ({result['rows']} rows). Download the images at {result['image_size']} px "
              "(the resolution to be evaluated) with img2dataset (pip install img2dataset):\n")
        print("  " + result["command_line"] + "\n")
        print("then run muse-bench with:")
    else:
        print("Prepared. Run muse-bench with:")
    print("  " + " ".join(shlex.quote(o) for o in result["overrides"]))
    return 0
