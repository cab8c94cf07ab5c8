"""The one downloader (bench/core/download.py), used by the prepare step and by FID's Inception weights: a file
arrives whole and verified or not at all, and an unreachable server says how to supply the file instead.
(The HTTP details, resuming with Range requests and the progress bar, are tested through the prepare step in
tests/test_datasets.py.)"""

from __future__ import annotations

import hashlib
import socket

import pytest

from bench.core.download import DownloadError, download_file
from bench.core.errors import BenchError


def test_a_file_arrives_whole_and_verified(tmp_path):
    source = tmp_path / "source.bin"
    source.write_bytes(bytes(range(256)) * 64)
    sha = hashlib.sha256(source.read_bytes()).hexdigest()
    dest = tmp_path / "out" / "weights.bin"
    info = download_file(source.as_uri(), dest, sha256=sha, progress=False, timeout=5)
    assert dest.read_bytes() == source.read_bytes() and info["verified"] and info["sha256"] == sha
    assert sorted(p.name for p in dest.parent.iterdir()) == ["weights.bin"]  # no .part left behind


def test_a_wrong_sha256_leaves_nothing(tmp_path):
    source = tmp_path / "source.bin"
    source.write_bytes(b"another file" * 100)
    dest = tmp_path / "out" / "weights.bin"
    with pytest.raises(BenchError, match="expected " + "0" * 64):
        download_file(source.as_uri(), dest, sha256="0" * 64, progress=False)
    assert list(dest.parent.iterdir()) == []


def test_an_unreachable_server_gives_the_reason_and_the_other_way(tmp_path):
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/weights.bin"
    with pytest.raises(DownloadError) as err:
        download_file(url, tmp_path / "weights.bin", sha256="ab" * 32, progress=False, timeout=5,
                      hint="or set eval.fid.inception_path")
    message = str(err.value)
    assert url in message and "ab" * 32 in message and message.endswith("or set eval.fid.inception_path.")
    assert err.value.reason and err.value.reason in message
    assert not (tmp_path / "weights.bin").exists()
