"""The results writer, provenance, the PartiPrompts parser and sample naming."""

from __future__ import annotations

import json
import math
import os
import re
import signal
import stat
import subprocess
import sys
from datetime import datetime, timezone
from importlib import metadata

import pytest

from bench.core.errors import BenchError
from bench.core.provenance import collect_provenance
from bench.core.results import (
    SCHEMA_VERSION,
    atomic_write_bytes,
    build_results,
    evaluation,
    read_jsonl,
    remove_stale_temporaries,
    write_csv,
    write_json,
    write_jsonl,
    write_results,
)
from bench.data.partiprompts import read_partiprompts
from bench.data.prompts import DATASET_NAMES, PromptRecord, load_dataset
from bench.jobs.generation import manifest_row, sample_file_name

HEADER = "Prompt\tCategory\tChallenge\tNote\n"


# ---- atomic writes and the results document ------------------------------------------------------------


def test_atomic_write_replaces_the_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "deep" / "file.bin"
    atomic_write_bytes(path, b"first")
    atomic_write_bytes(path, b"second")
    assert path.read_bytes() == b"second"
    assert [p.name for p in path.parent.iterdir()] == ["file.bin"]


def test_a_failed_write_keeps_the_previous_file(tmp_path):
    path = tmp_path / "results.json"
    write_json(path, {"value": 1.0})
    with pytest.raises(ValueError):
        write_json(path, {"value": math.nan})  # NaN is not JSON
    assert json.loads(path.read_text()) == {"value": 1.0}
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002], ids=["022", "077", "002"])
def test_written_files_get_the_mode_a_plain_open_gives_under_the_umask(tmp_path, umask):
    previous = os.umask(umask)
    try:
        with open(tmp_path / "plain", "wb"):
            pass
        written = [atomic_write_bytes(tmp_path / "sample.png", b"png"), write_json(tmp_path / "results.json", {}),
                   write_csv(tmp_path / "latency.csv", [{"a": 1}])]
    finally:
        os.umask(previous)
    expected = 0o666 & ~umask
    assert stat.S_IMODE((tmp_path / "plain").stat().st_mode) == expected
    assert {p.name: stat.S_IMODE(p.stat().st_mode) for p in written} == {p.name: expected for p in written}


# A process killed between writing its temporary file and moving it into place: SIGKILL at os.replace.
_KILLED_WRITE = """
import os, signal, sys
from bench.core import results
results.os.replace = lambda src, dst: os.kill(os.getpid(), signal.SIGKILL)
results.atomic_write_bytes(sys.argv[1], b"half a run")
"""


def killed_write(path) -> None:
    """Run an atomic write of `path` in a child process that is SIGKILLed before the file is moved into place."""
    done = subprocess.run([sys.executable, "-c", _KILLED_WRITE, str(path)], capture_output=True, timeout=120)
    assert done.returncode == -signal.SIGKILL, done.stderr


def test_stale_temporaries_of_killed_writes_are_removed_and_nothing_else(tmp_path):
    killed_write(tmp_path / "results.json")
    killed_write(tmp_path / "samples" / "m" / "d" / "00000.png")
    leftovers = sorted(p for p in tmp_path.rglob(".*.tmp"))
    assert {p.parent.name for p in leftovers} == {"d", tmp_path.name} and not (tmp_path / "results.json").exists()
    keep = [tmp_path / ".notes.tmp", tmp_path / "x.abcdefgh.tmp", tmp_path / ".hydra" / ".config.yaml.abcdefgh.tmp",
            tmp_path / "samples" / "00000.png"]
    for path in keep:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")
    assert remove_stale_temporaries(tmp_path) == leftovers
    assert sorted(p for p in tmp_path.rglob("*") if p.is_file()) == sorted(keep)


def test_jsonl_round_trip_keeps_unicode(tmp_path):
    rows = [{"index": 0, "prompt": "a café \"sign\""}, {"index": 1, "prompt": "日本の城"}]
    path = write_jsonl(tmp_path / "manifest.jsonl", rows)
    assert read_jsonl(path) == rows
    assert len(path.read_text(encoding="utf-8").splitlines()) == 2


def test_results_document_has_the_schema_fields(tmp_path):
    entry = evaluation(
        model="muse-tiny", dataset="partiprompts", weights="random", requested=10, effective=8,
        protocol={"resolution": 256, "steps": 24, "guidance": 4.0, "seed": 0},
    )
    created = datetime(2024, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    results = build_results(
        experiment="default", config={"seed": 0}, provenance={"torch": "x"}, evaluations=[entry], created=created
    )
    assert results == {
        "schema_version": SCHEMA_VERSION,
        "experiment": "default",
        "created": "2024-01-02T03:04:05+00:00",
        "overrides": [],
        "provenance": {"torch": "x"},
        "config": {"seed": 0},
        "evaluations": [
            {
                "model": "muse-tiny",
                "dataset": "partiprompts",
                "weights": "random",
                "n_samples": {"requested": 10, "effective": 8},
                "metrics": {},
                "protocol": {"resolution": 256, "steps": 24, "guidance": 4.0, "seed": 0},
            }
        ],
        "latency": [],
    }
    path = write_results(tmp_path, results)
    assert path == tmp_path / "results.json"
    assert json.loads(path.read_text()) == results


def test_evaluation_refuses_unknown_weights():
    with pytest.raises(ValueError, match="weights"):
        evaluation(model="m", dataset="d", weights="finetuned", requested=1, effective=1, protocol={})


def test_provenance_names_code_libraries_and_device():
    provenance = collect_provenance("cpu")
    assert provenance["packages"]["torch"] == metadata.version("torch")
    assert provenance["packages"]["hydra-core"] == metadata.version("hydra-core")
    assert provenance["device"] == "cpu" and provenance["device_name"]
    commit = provenance["git_commit"]
    assert commit is None or re.fullmatch(r"[0-9a-f]{40}", commit)
    json.dumps(provenance, allow_nan=False)  # it must go into results.json as it is


# ---- PartiPrompts -------------------------------------------------------------------------------------


def test_packaged_partiprompts_is_the_full_benchmark():
    records = load_dataset("partiprompts")
    assert len(records) == 1632
    assert records[0] == PromptRecord(
        index=0, prompt="bond", id=0,
        metadata={"category": "Abstract", "challenge": "Basic", "note": "Biology-inspired concepts with multiple meanings"},
    )
    assert [r.index for r in records] == list(range(1632))
    assert len({r.metadata["category"] for r in records}) == 12
    assert len({r.metadata["challenge"] for r in records}) == 11


def test_a_prompt_that_starts_with_a_quote_is_kept_verbatim():
    # The TSV has no CSV quoting: this prompt (line 1562) would lose its quotes under csv's default dialect.
    record = load_dataset("partiprompts")[1560]
    assert record.prompt.startswith('"G I G G L E" painted in thick colorful lettering')


def test_limit_keeps_the_first_records_with_their_indices():
    full = load_dataset("partiprompts")
    assert load_dataset("partiprompts", limit=5) == full[:5]
    assert load_dataset("partiprompts", limit=5000) == full


@pytest.mark.parametrize("limit", [0, -1])
def test_a_limit_below_one_is_refused(limit):
    with pytest.raises(BenchError, match="dataset.limit"):
        load_dataset("partiprompts", limit=limit)


def test_an_unknown_dataset_lists_the_known_ones():
    with pytest.raises(BenchError) as err:
        load_dataset("coco-31k")
    assert all(name in str(err.value) for name in DATASET_NAMES)


@pytest.mark.parametrize(
    ("body", "line"),
    [
        ("a cat\tAnimals\tBasic\t\na dog\tAnimals\tBasic\n", 3),   # three fields
        ("a cat\tAnimals\tBasic\t\n\tAnimals\tBasic\t\n", 3),      # empty prompt
        ("a\tb\tc\td\te\n", 2),                                   # five fields
    ],
)
def test_a_malformed_line_is_reported_with_file_and_line_number(tmp_path, body, line):
    path = tmp_path / "parti.tsv"
    path.write_text(HEADER + body, encoding="utf-8")
    with pytest.raises(BenchError) as err:
        read_partiprompts(path)
    assert f"{path}:{line}:" in str(err.value)


def test_a_wrong_header_is_reported_on_line_one(tmp_path):
    path = tmp_path / "captions.tsv"
    path.write_text("caption\turl\na cat\thttp://x\n", encoding="utf-8")
    with pytest.raises(BenchError, match=re.escape(f"{path}:1:")):
        read_partiprompts(path)


def test_a_local_file_replaces_the_packaged_one(tmp_path):
    path = tmp_path / "mini.tsv"
    path.write_text(HEADER + "a cat\tAnimals\tBasic\t\n\nan owl\tAnimals\tSimple Detail\tnight\n", encoding="utf-8")
    records = load_dataset("partiprompts", path=str(path))
    assert [(r.index, r.prompt, r.metadata["note"]) for r in records] == [(0, "a cat", ""), (1, "an owl", "night")]


# ---- sample files and manifest rows ---------------------------------------------------------------------


def test_sample_names_depend_only_on_index_and_resolution():
    assert sample_file_name(7, 256) == "00007.png"
    assert sample_file_name(7, 512) == "00007-512.png"
    assert sample_file_name(12345, 256) == "12345.png"


def test_manifest_row_carries_the_dataset_id_and_metadata():
    record = PromptRecord(index=3, prompt="an owl", id=3, metadata={"category": "Animals", "challenge": "Basic"})
    assert manifest_row(record, seed=2, resolution=256, file="00003.png") == {
        "index": 3, "id": 3, "prompt": "an owl", "seed": 2, "replica": 0, "resolution": 256, "file": "00003.png",
        "category": "Animals", "challenge": "Basic",
    }
    with pytest.raises(ValueError, match="seed"):
        manifest_row(PromptRecord(0, "x", 0, {"seed": "1"}), seed=0, resolution=256, file="00000.png")
