"""COCO-30K, COCO-5K (MLPerf) and CC3M: caption lists, reference images and the prepare step.

The shipped lists are checked against pandas (an independent parser); reference folders, img2dataset
outputs and COCO archives are built in tmp_path from the real photos in tests/assets/cc_images
(tests/assets/photo_256.png where one image is enough); downloads go to a local HTTP server.
"""

from __future__ import annotations

import csv
import hashlib
import http.server
import io
import json
import pickle
import re
import shutil
import socket
import tarfile
import threading
import zipfile
from pathlib import Path

import pandas as pd
import pytest
from omegaconf import OmegaConf

from bench.core.errors import BenchError
from bench.data.captions import COCO_JSON_SELECTION, coco_captions_from_json, read_cc3m, read_coco30k, read_mlperf_coco
from bench.data.download import COCO_ARCHIVES, download_file, main, prepare_dataset
from bench.data.prompts import PromptRecord, caption_list_protocol, load_dataset, packaged_data_path
from bench.data.references import ReferenceImage, open_references
from bench.jobs.generation import MANIFEST_KEYS

REPO = Path(__file__).resolve().parent.parent
# The official val2017 captions file (3.9 MB, not shipped) from the project's shared data folder: shared/data in
# the nearest folder above the checkout that has one (the checkout may sit a level or two below it).
SHARED = next((p / "shared" / "data" for p in REPO.parents if (p / "shared" / "data").is_dir()),
              REPO.parent / "shared" / "data")
CC_IMAGES = sorted((REPO / "tests" / "assets" / "cc_images").glob("*.jpg"))
VAL2017 = SHARED / "captions_val2017.json"
PHOTO = REPO / "tests" / "assets" / "photo_256.png"
RESERVED_METADATA = set(MANIFEST_KEYS) | {"replica"}


def needs_shared(*paths: Path):
    return pytest.mark.skipif(not all(p.exists() for p in paths),
                              reason="needs the shared data folder (shared/data) above the checkout")


# ---- the shipped caption lists -------------------------------------------------------------------------------


def _pandas_view(name: str) -> tuple[list[str], list[int]]:
    """(captions, ids) of a shipped list as pandas reads it: an independent parser of the same file."""
    path = packaged_data_path({"coco30k": "MS-COCO_val2014_30k_captions.csv",
                               "coco5k": "mlperf_coco2014_captions_source.tsv",
                               "cc3m": "Validation_GCC-1.1.0-Validation.tsv"}[name])
    if name == "coco30k":
        df = pd.read_csv(path, dtype={"text": str}, keep_default_na=False)
        return df["text"].tolist(), df["image_id"].tolist()
    if name == "coco5k":
        df = pd.read_csv(path, sep="\t", dtype={"caption": str}, keep_default_na=False)
        return df["caption"].tolist(), df["image_id"].tolist()
    df = pd.read_csv(path, sep="\t", header=None, names=["caption", "url"], quoting=csv.QUOTE_NONE,
                     dtype=str, keep_default_na=False)
    return df["caption"].tolist(), list(range(len(df)))


@pytest.mark.parametrize(
    ("name", "count", "first", "last"),
    [
        ("coco30k", 30000, "Someone is holding a phone while watching a video on it.",
         "Characters from Cat in the Hat in front of a man and child."),
        ("coco5k", 5000, "A city at night with people walking around.",
         "A person in a silly shirt sits at a table so they can eat some pizza"),
        ("cc3m", 15840, "author : a life in photography -- in pictures",
         "person warms up during a game against american football team ."),
    ],
)
def test_shipped_lists_parse_whole_and_agree_with_pandas(name, count, first, last):
    records = load_dataset(name)
    captions, ids = _pandas_view(name)
    assert len(records) == len(captions) == count
    assert (records[0].prompt, records[-1].prompt) == (captions[0], captions[-1]) == (first, last)
    assert [r.prompt for r in records] == captions
    assert [r.id for r in records] == ids
    assert [r.index for r in records] == list(range(count))
    for record in (records[0], records[-1]):
        assert not set(record.metadata) & RESERVED_METADATA
        json.dumps(record.metadata, allow_nan=False)


def test_coco_records_carry_image_id_and_file_name():
    coco30k, coco5k, cc3m = (load_dataset(name, limit=1)[0] for name in ("coco30k", "coco5k", "cc3m"))
    assert coco30k.metadata == {"image_id": 521669, "file_name": "COCO_val2014_000000521669.jpg"}
    assert coco5k.metadata == {"image_id": 227049, "file_name": "COCO_val2014_000000227049.jpg", "annotation_id": 70}
    assert cc3m.id == 0 and cc3m.metadata["url"].startswith("https://i.pinimg.com/")


def test_multiline_quoted_captions_are_kept_whole():
    records = load_dataset("coco30k")
    raw = packaged_data_path("MS-COCO_val2014_30k_captions.csv").read_text(encoding="utf-8")
    assert '526459,"That is a picture of an outside locale.\n"\n' in raw  # the file really spans lines here
    by_id = {r.id: r for r in records}
    assert by_id[526459].prompt == "That is a picture of an outside locale.\n"
    multiline = [r for r in records if "\n" in r.prompt]
    assert len(multiline) == 97 and len(records) == 30000  # no record was split at its newline
    # A caption with a doubled quote in the MLPerf TSV loses the CSV quoting, as pandas reads it.
    coco5k = {r.id: r.prompt for r in load_dataset("coco5k")}
    assert coco5k[565395] == (
        'A man in glasses sitting next to a woman and holding up a red frisbee that says "Cheese Shop" on it.'
    )


@pytest.mark.parametrize("name", ["coco30k", "coco5k", "cc3m"])
def test_limit_keeps_a_prefix(name):
    full = load_dataset(name)
    assert load_dataset(name, limit=7) == full[:7]
    assert load_dataset(name, limit=10**6) == full


@pytest.mark.parametrize(
    ("reader", "body", "line", "what"),
    [
        (read_coco30k, 'image_id,text\n1,a cat\nx2,a dog\n', 3, "image_id"),
        (read_coco30k, 'image_id,text\n1,"a cat\n on two lines"\n2,\n', 4, "empty text"),
        (read_coco30k, 'image_id,text\n1,a cat\n2,a dog,extra\n', 3, "expected 2 fields"),
        (read_coco30k, 'image_id,text\n1,a cat\n2,"never closed\n', 3, "not a valid"),
        (read_coco30k, 'id,caption\n1,a cat\n', 1, "lacks the column"),
        (read_mlperf_coco, 'id,image_id,caption\n', 1, "lacks the column"),
        (read_mlperf_coco, 'id\timage_id\tcaption\n7\t1\ta cat\n8\t2\n', 3, "expected 3 fields"),
        (read_cc3m, 'a cat\thttp://a\na dog\n', 2, "2 tab-separated fields"),
        (read_cc3m, 'a cat\thttp://a\n\na dog\t\n', 3, "empty url"),
    ],
)
def test_malformed_rows_are_reported_with_file_and_line(tmp_path, reader, body, line, what):
    path = tmp_path / "captions.txt"
    path.write_text(body, encoding="utf-8")
    with pytest.raises(BenchError) as err:
        reader(path)
    assert f"{path}:{line}:" in str(err.value)
    assert what in str(err.value)


def test_a_user_caption_list_replaces_the_shipped_one(tmp_path):
    path = tmp_path / "cc3m.tsv"
    path.write_text("caption\turl\na cat\thttp://x/1.jpg\na \"quoted\" dog\thttp://x/2.jpg\n", encoding="utf-8")
    records = load_dataset("cc3m", path=str(path))
    assert [(r.id, r.prompt, r.metadata["url"]) for r in records] == [
        (0, "a cat", "http://x/1.jpg"), (1, 'a "quoted" dog', "http://x/2.jpg")]
    assert caption_list_protocol("cc3m", str(path)) == {
        "caption_list": "cc3m.tsv", "caption_list_sha256": hashlib.sha256(path.read_bytes()).hexdigest()[:12]}


# ---- COCO-30K from a captions JSON ----------------------------------------------------------------------------


@needs_shared(VAL2017)
def test_one_caption_per_image_from_a_captions_json():
    data = json.loads(VAL2017.read_text())
    captions: dict[int, set[str]] = {}
    for ann in data["annotations"]:
        captions.setdefault(ann["image_id"], set()).add(ann["caption"])
    names = {image["id"]: image["file_name"] for image in data["images"]}

    records = coco_captions_from_json(VAL2017, seed=0)
    assert len(records) == len({r.id for r in records}) == 5000
    assert all(r.prompt in captions[r.id] and r.metadata["file_name"] == names[r.id] for r in records)
    assert [r.index for r in records] == list(range(5000))
    assert coco_captions_from_json(VAL2017, n=50, seed=0) == records[:50]  # a prefix of the full order
    other = coco_captions_from_json(VAL2017, n=50, seed=1)
    assert [r.id for r in other] != [r.id for r in records[:50]]
    # Not the file's order, and not always the first caption: the rule really samples.
    assert [r.id for r in records[:50]] != [image["id"] for image in data["images"][:50]]
    first_caption = {}
    for ann in data["annotations"]:
        first_caption.setdefault(ann["image_id"], ann["caption"])
    assert sum(r.prompt != first_caption[r.id] for r in records) > 1000
    with pytest.raises(BenchError, match="5000 images"):
        coco_captions_from_json(VAL2017, n=5001)


@needs_shared(VAL2017)
def test_coco30k_can_be_built_from_a_captions_json():
    records = load_dataset("coco30k", limit=20, path=str(VAL2017), caption_seed=3)
    assert records == coco_captions_from_json(VAL2017, n=20, seed=3)
    with pytest.raises(BenchError, match="dataset.limit"):
        load_dataset("coco30k", path=str(VAL2017))  # 30,000 asked, 5,000 images in val2017
    with pytest.raises(BenchError, match="coco30k"):
        load_dataset("coco5k", path=str(VAL2017))
    protocol = caption_list_protocol("coco30k", str(VAL2017), caption_seed=3)
    assert protocol["caption_selection"] == COCO_JSON_SELECTION and protocol["caption_seed"] == 3


def test_an_invalid_captions_json_names_the_line(tmp_path):
    path = tmp_path / "captions_val2014.json"
    path.write_text('{"images": [],\n "annotations": [,]}', encoding="utf-8")
    with pytest.raises(BenchError, match=re.escape(f"{path}:2:")):
        coco_captions_from_json(path)


# ---- COCO reference images ------------------------------------------------------------------------------------


def _coco_folder(folder: Path, image_ids: list[int]) -> dict[str, bytes]:
    """A val2014-like folder: real photos renamed COCO_val2014_<id>.jpg; returns name -> bytes."""
    folder.mkdir(parents=True, exist_ok=True)
    written = {}
    for image_id, source in zip(image_ids, CC_IMAGES):
        name = f"COCO_val2014_{image_id:012d}.jpg"
        shutil.copyfile(source, folder / name)
        written[name] = source.read_bytes()
    return written


def _coco_cfg(folder: Path, **options) -> dict:
    return {"name": "coco30k", "reference_dir": str(folder), **options}


def test_coco_matched_references_are_the_selected_captions_images(tmp_path):
    records = load_dataset("coco30k", limit=4)
    written = _coco_folder(tmp_path / "val2014", [r.id for r in records] + [9, 10])
    refs = open_references(_coco_cfg(tmp_path / "val2014", reference_set="matched"), records)
    assert [i.key for i in refs.images] == [r.metadata["file_name"] for r in records]
    assert [i.read() for i in refs.images] == [written[r.metadata["file_name"]] for r in records]
    assert refs.stats == {"expected": 4, "found": 4, "unreachable": 0, "unreachable_fraction": 0.0}
    assert refs.protocol.pop("content")["images"] == 4
    assert refs.protocol == {
        "dataset": "coco30k", "split": "val2014", "reference_set": "matched", "count": 4, "reference_limit": None,
        "source": "val2014", "listing": "file_name of each caption", "source_format": "image folder",
        "caption_list": "MS-COCO_val2014_30k_captions.csv", "caption_list_sha256": "96abd3116ee2",
    }


def test_coco_all_references_are_every_image_of_the_folder(tmp_path):
    records = load_dataset("coco30k", limit=4)
    _coco_folder(tmp_path / "val2014", [r.id for r in records] + [9, 10])
    (tmp_path / "val2014" / "notes.txt").write_text("not an image")
    refs = open_references(_coco_cfg(tmp_path / "val2014"), records)
    expected = sorted(f"COCO_val2014_{i:012d}.jpg" for i in [r.id for r in records] + [9, 10])
    assert [i.key for i in refs.images] == expected and refs.protocol["count"] == 6
    assert refs.protocol["listing"] == "*.jpg in reference_dir" and refs.protocol["reference_set"] == "all"
    capped = open_references(_coco_cfg(tmp_path / "val2014", reference_limit=2), records)
    assert [i.key for i in capped.images] == expected[:2] and capped.protocol["reference_limit"] == 2


def test_coco_references_listed_by_a_captions_file(tmp_path):
    records = load_dataset("coco30k", limit=3)
    ids = [r.id for r in records] + [9]
    _coco_folder(tmp_path / "val2014", ids)
    captions = tmp_path / "captions_val2014.json"
    images = [{"id": i, "file_name": f"COCO_val2014_{i:012d}.jpg"} for i in ids]
    captions.write_text(json.dumps({"images": images, "annotations": []}))
    refs = open_references(_coco_cfg(tmp_path / "val2014", captions_file=str(captions)), records)
    assert [i.key for i in refs.images] == [f"COCO_val2014_{i:012d}.jpg" for i in sorted(ids)]
    assert refs.protocol["listing"] == "captions_val2014.json"
    # An image the captions file lists but the folder lacks: an incomplete extraction is an error.
    captions.write_text(json.dumps({"images": images + [{"id": 11, "file_name": "COCO_val2014_000000000011.jpg"}],
                                    "annotations": []}))
    with pytest.raises(BenchError, match="1 of 5 reference images are missing"):
        open_references(_coco_cfg(tmp_path / "val2014", captions_file=str(captions)), records)


def test_missing_coco_images_are_counted_named_and_explained(tmp_path):
    records = load_dataset("coco30k", limit=6)
    _coco_folder(tmp_path / "val2014", [r.id for r in records[:4]])
    with pytest.raises(BenchError) as err:
        open_references(_coco_cfg(tmp_path / "val2014", reference_set="matched"), records)
    message = str(err.value)
    assert "2 of 6 reference images are missing" in message and records[4].metadata["file_name"] in message
    assert "python -m bench.download coco30k" in message and "dataset.reference_dir" in message
    # "all" over a folder that lacks the captions' images: a folder of another split.
    with pytest.raises(BenchError, match="another split"):
        open_references(_coco_cfg(tmp_path / "val2014"), records)
    with pytest.raises(BenchError, match="python -m bench.download coco30k"):
        open_references({"name": "coco30k"}, records)
    with pytest.raises(BenchError, match="python -m bench.download coco30k"):
        open_references(_coco_cfg(tmp_path / "absent"), records)
    with pytest.raises(BenchError, match="reference_set"):
        open_references(_coco_cfg(tmp_path / "val2014", reference_set="some"), records)


@pytest.mark.parametrize("preset", ["coco30k", "coco5k"])
def test_dataset_presets_drive_the_references(tmp_path, preset):
    cfg = OmegaConf.load(REPO / "conf" / "dataset" / f"{preset}.yaml")
    records = load_dataset(cfg.name, limit=2, path=cfg.path)
    _coco_folder(tmp_path / "val2014", [r.id for r in records])
    cfg.reference_dir = str(tmp_path / "val2014")
    refs = open_references(cfg, records)
    names = [r.metadata["file_name"] for r in records]
    if preset == "coco30k":  # all: every image of the folder, in image id order
        assert refs.protocol["reference_set"] == "all" and [i.key for i in refs.images] == sorted(names)
    else:  # matched: the captions' images, in caption order
        assert refs.protocol["reference_set"] == "matched" and [i.key for i in refs.images] == names


# ---- CC3M reference images (img2dataset output) ---------------------------------------------------------------


def _img2dataset_samples(
    records: list[PromptRecord], downloaded: list[int], extra_url: str
) -> list[tuple[str, dict, bytes]]:
    """(key, json sidecar, image bytes) as img2dataset writes them for the rows that downloaded."""
    samples = []
    sources = {row: CC_IMAGES[k].read_bytes() for k, row in enumerate(downloaded)}
    for row in downloaded:
        meta = {"url": records[row].metadata["url"], "caption": records[row].prompt, "key": f"{row:09d}",
                "status": "success", "error_message": None, "width": 256, "height": 256}
        samples.append((f"{row:09d}", meta, sources[row]))
    meta = {"url": extra_url, "caption": "not ours", "key": "000000099", "status": "success"}
    samples.append(("000000099", meta, PHOTO.read_bytes()))
    return samples


def _write_files_layout(folder: Path, samples) -> None:
    shard = folder / "00000"
    shard.mkdir(parents=True)
    for key, meta, data in samples:
        (shard / f"{key}.jpg").write_bytes(data)
        (shard / f"{key}.txt").write_text(meta["caption"])
        (shard / f"{key}.json").write_text(json.dumps(meta, indent=4))


def _write_tar_layout(folder: Path, samples) -> None:
    folder.mkdir(parents=True)
    with tarfile.open(folder / "00000.tar", "w") as tar:
        for key, meta, data in samples:
            for ext, payload in (("jpg", data), ("txt", meta["caption"].encode()), ("json", json.dumps(meta).encode())):
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size = len(payload)
                tar.addfile(info, io.BytesIO(payload))


@pytest.mark.parametrize("layout", ["files", "webdataset"])
def test_cc3m_references_match_urls_and_count_the_unreachable(tmp_path, layout):
    records = load_dataset("cc3m", limit=6)
    samples = _img2dataset_samples(records, downloaded=[0, 1, 3, 5], extra_url="http://example.com/other.jpg")
    folder = tmp_path / "cc3m_validation"
    (_write_files_layout if layout == "files" else _write_tar_layout)(folder, samples)
    (folder / "00000_stats.json").write_text(json.dumps(
        {"count": 7, "successes": 5, "failed_to_download": 2, "failed_to_resize": 0, "status_dict": {}}))

    refs = open_references({"name": "cc3m", "reference_dir": str(folder), "reference_set": "matched"}, records)
    assert [i.key for i in refs.images] == ["000000000", "000000001", "000000003", "000000005"]
    assert [i.read() for i in refs.images] == [data for key, _, data in samples[:4]]
    assert refs.stats == {
        "expected": 6, "found": 4, "unreachable": 2, "unreachable_fraction": pytest.approx(2 / 6),
        "not_in_caption_list": 1,
        "img2dataset": {"count": 7, "successes": 5, "failed_to_download": 2, "failed_to_resize": 0},
    }
    assert refs.protocol["source_format"] == f"img2dataset {layout}"
    assert (refs.protocol["expected"], refs.protocol["found"], refs.protocol["unreachable"]) == (6, 4, 2)
    assert refs.protocol["caption_list"] == "Validation_GCC-1.1.0-Validation.tsv"
    # A reader travels to DataLoader workers: it must pickle, and still read the same bytes.
    assert pickle.loads(pickle.dumps(refs.images[2])).read() == samples[2][2]

    everything = open_references({"name": "cc3m", "reference_dir": str(folder)}, records[:1])
    assert everything.stats["expected"] == 15840 and everything.stats["found"] == 4
    capped = open_references({"name": "cc3m", "reference_dir": str(folder), "reference_limit": 3}, records)
    assert len(capped.images) == 3 and capped.protocol["count"] == 3


def test_cc3m_without_any_matching_image_says_how_to_download(tmp_path):
    records = load_dataset("cc3m", limit=3)
    folder = tmp_path / "out"
    _write_files_layout(folder, _img2dataset_samples(records, downloaded=[], extra_url="http://example.com/x.jpg"))
    with pytest.raises(BenchError, match="None of the 3 CC3M caption rows") as err:
        open_references({"name": "cc3m", "reference_dir": str(folder), "reference_set": "matched"}, records)
    assert "python -m bench.download cc3m" in str(err.value)
    with pytest.raises(BenchError, match="dataset.reference_dir is not set"):
        open_references({"name": "cc3m"}, records)


def test_a_reference_image_is_a_key_and_a_reader():
    image = ReferenceImage("a", lambda: b"bytes")
    assert image.key == "a" and image.read() == b"bytes"


# ---- the prepare step: downloads from a local HTTP server -----------------------------------------------------


class _Server:
    """A local HTTP server of in-memory files that honours Range requests (or ignores them) and logs them."""

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.ranges: list[str | None] = []
        self.honour_range = True
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's naming)
                data = server.files.get(self.path)
                server.ranges.append(self.headers.get("Range"))
                if data is None:
                    self.send_error(404)
                    return
                start = 0
                match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
                if match and server.honour_range:
                    start = int(match.group(1))
                    if start >= len(data):
                        self.send_error(416)
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(data) - start))
                self.end_headers()
                self.wfile.write(data[start:])

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    srv = _Server()
    yield srv
    srv.close()


def _zip(entries: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return buffer.getvalue()


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_download_resumes_a_partial_file_with_a_range_request(server, tmp_path):
    data = PHOTO.read_bytes() * 3
    server.files["/a.zip"] = data
    dest = tmp_path / "a.zip"
    (tmp_path / "a.zip.part").write_bytes(data[:1000])
    info = download_file(server.url + "/a.zip", dest, sha256=_sha(data), progress=False, chunk_size=4096)
    assert server.ranges == ["bytes=1000-"]
    assert dest.read_bytes() == data and not (tmp_path / "a.zip.part").exists()
    assert info == {"url": server.url + "/a.zip", "path": str(dest), "bytes": len(data), "sha256": _sha(data),
                    "verified": True}
    # Complete already: verified, not downloaded again.
    assert download_file(server.url + "/a.zip", dest, sha256=_sha(data), progress=False)["verified"]
    assert len(server.ranges) == 1


def test_a_server_that_ignores_range_restarts_the_file(server, tmp_path):
    data = bytes(range(256)) * 40
    server.files["/b.bin"] = data
    server.honour_range = False
    (tmp_path / "b.bin.part").write_bytes(b"stale bytes that must not stay")
    info = download_file(server.url + "/b.bin", tmp_path / "b.bin", progress=False)
    assert (tmp_path / "b.bin").read_bytes() == data
    assert info["verified"] is False and info["sha256"] == _sha(data)  # no checksum given: recorded, not verified


def test_a_checksum_mismatch_deletes_the_download(server, tmp_path):
    server.files["/c.zip"] = b"not what was expected" * 100
    with pytest.raises(BenchError, match="expected " + "0" * 64) as err:
        download_file(server.url + "/c.zip", tmp_path / "c.zip", sha256="0" * 64, progress=False)
    assert "deleted" in str(err.value)
    assert not (tmp_path / "c.zip").exists() and not (tmp_path / "c.zip.part").exists()


def test_a_download_shows_a_progress_bar(server, tmp_path, capsys):
    server.files["/d.zip"] = b"x" * 50_000
    download_file(server.url + "/d.zip", tmp_path / "d.zip", progress=True, chunk_size=10_000)
    err = capsys.readouterr().err
    assert "d.zip" in err and "100%" in err and "48.8k/48.8k" in err


def test_offline_names_the_url_and_the_manual_route(tmp_path):
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/zips/val2014.zip"
    with pytest.raises(BenchError) as err:
        download_file(url, tmp_path / "val2014.zip", sha256="ab" * 32, progress=False, timeout=5)
    message = str(err.value)
    assert url in message and str(tmp_path / "val2014.zip") in message and "ab" * 32 in message


def test_the_pinned_archive_size_is_checked_before_downloading(server, tmp_path):
    server.files[COCO_ARCHIVES["val2014"].url_path] = b"tiny"
    with pytest.raises(BenchError, match="expected 6645013297"):
        prepare_dataset("coco30k", tmp_path, mirror=server.url, progress=False)


@needs_shared(VAL2017)
def test_prepare_coco_downloads_verifies_and_extracts(server, tmp_path):
    ids = [139, 285, 632]
    photos = {f"val2014/COCO_val2014_{i:012d}.jpg": CC_IMAGES[k].read_bytes() for k, i in enumerate(ids)}
    images = [{"id": i, "file_name": f"COCO_val2014_{i:012d}.jpg"} for i in ids]
    annotations = [{"id": 10 * i + j, "image_id": i, "caption": f"photo {i}, caption {j}"}
                   for i in ids for j in range(2)]
    captions = json.dumps({"images": images, "annotations": annotations}).encode()
    archives = {
        "val2014": _zip(photos),
        "annotations_trainval2014": _zip({"annotations/captions_val2014.json": captions,
                                          "annotations/instances_val2014.json": b"{}"}),
    }
    for key, data in archives.items():
        server.files[COCO_ARCHIVES[key].url_path] = data
    checksums = {key: _sha(data) for key, data in archives.items()}
    root = tmp_path / "coco"
    result = prepare_dataset("coco30k", root, mirror=server.url, checksums=checksums, progress=False)

    assert result["reference_dir"] == str(root / "val2014")
    assert result["captions_file"] == str(root / "annotations" / "captions_val2014.json")
    assert sorted(p.name for p in (root / "val2014").iterdir()) == sorted(Path(n).name for n in photos)
    assert not (root / "annotations" / "instances_val2014.json").exists()  # only the captions are extracted
    assert not (root / "val2014.zip").exists()  # archives are deleted once extracted
    assert [a["verified"] for a in result["archives"]] == [True, True]
    assert result["overrides"] == [f"dataset.reference_dir={root / 'val2014'}",
                                   f"dataset.captions_file={root / 'annotations' / 'captions_val2014.json'}"]
    requests = len(server.ranges)
    again = prepare_dataset("coco30k", root, mirror=server.url, checksums=checksums, progress=False)
    assert len(server.ranges) == requests and all(a["skipped"] for a in again["archives"])

    # The prepared folder is what open_references needs, here for a COCO-30K built from its captions file.
    cfg = {"name": "coco30k", "path": result["captions_file"], "reference_dir": result["reference_dir"],
           "captions_file": result["captions_file"], "reference_set": "matched"}
    records = load_dataset("coco30k", limit=3, path=cfg["path"])
    refs = open_references(cfg, records)
    assert sorted(i.key for i in refs.images) == sorted(img["file_name"] for img in images)
    assert refs.protocol["listing"] == "captions_val2014.json" and refs.protocol["split"] == "val2014"


def test_prepare_cc3m_downloads_at_the_resolution_the_same_settings_evaluate(tmp_path):
    """img2dataset resizes as it downloads: the prepare job asks for the evaluation's resolution (here 512, the
    cascade), not a fixed 256 that would leave every reference upsampled."""
    from bench.cli import compose_config
    from bench.jobs.prepare import run_prepare

    cfg = compose_config(["experiment=cc3m", "job=prepare", "resolutions=[512]", f"data_root={tmp_path / 'data'}"])
    written = run_prepare(cfg, run_dir=tmp_path / "run", experiment="cc3m")
    prepared = json.loads(Path(written).read_text())
    options = dict(zip(prepared["command"][1::2], prepared["command"][2::2]))
    assert prepared["image_size"] == 512 and options["--image_size"] == "512"


def test_prepare_cc3m_writes_the_headed_list_and_the_img2dataset_command(tmp_path, capsys):
    result = prepare_dataset("cc3m", tmp_path)
    url_list = Path(result["url_list"])
    command = result["command"]
    assert command[0] == "img2dataset"
    options = dict(zip(command[1::2], command[2::2]))
    assert options["--url_list"] == str(url_list) and options["--input_format"] == "tsv"
    assert (options["--url_col"], options["--caption_col"]) == ("url", "caption")
    assert options["--output_folder"] == result["reference_dir"]
    assert (options["--image_size"], options["--resize_mode"]) == ("256", "center_crop")
    # As img2dataset reads it (column names from the first line), and as muse-bench reads it back.
    df = pd.read_csv(url_list, sep="\t", dtype=str, keep_default_na=False)
    assert list(df.columns) == ["caption", "url"] and len(df) == 15840
    assert read_cc3m(url_list) == load_dataset("cc3m")
    assert main(["cc3m", "--root", str(tmp_path)]) == 0
    assert "img2dataset --url_list" in capsys.readouterr().out
    with pytest.raises(BenchError, match="no reference images"):
        prepare_dataset("partiprompts", tmp_path)
