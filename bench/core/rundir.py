"""Hydra's record of a run (.hydra/) describes the run whose files are in the folder, not a run that was refused.

Hydra writes config.yaml, hydra.yaml and overrides.yaml before the job starts, so a rerun that is then refused
(a resume under other settings, a bad setting) would overwrite the record of the samples and results already
there. conf/config.yaml therefore points hydra.output_subdir at PENDING_DIR, and the job moves that record to
RECORD_DIR (.hydra, which bench.report.runs reads) only:

- when it commits to writing into the folder (the generate job: once every check has passed, just before
  sampling.json and the first sample), or when it ends successfully (every job);
- when it fails, only if the folder holds no output of an earlier run: a failed sweep member keeps its record
  and log, so the report still lists it with its overrides.

Otherwise the pending record is removed and .hydra/ stays as it was. Only the main process of a run moves or
removes the record: with several processes (torchrun, SLURM tasks) they share one run directory.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

RECORD_DIR = ".hydra"
PENDING_DIR = ".hydra-pending"
# What a run leaves in its folder before it writes anything of its own: Hydra's record and log files.
_NOT_OUTPUTS = {RECORD_DIR, PENDING_DIR}


def promote_record(run_dir: str | Path) -> bool:
    """Move the run's pending Hydra record into .hydra/, each file atomically (os.replace); returns whether
    there was one. Call it on the main process only."""
    pending = Path(run_dir) / PENDING_DIR
    if not pending.is_dir():
        return False
    record = Path(run_dir) / RECORD_DIR
    record.mkdir(exist_ok=True)
    for file in pending.iterdir():
        os.replace(file, record / file.name)
    pending.rmdir()
    return True


def holds_outputs(run_dir: str | Path) -> bool:
    """Whether the folder holds anything a run wrote besides Hydra's record and log files."""
    folder = Path(run_dir)
    return folder.is_dir() and any(p.name not in _NOT_OUTPUTS and p.suffix != ".log" for p in folder.iterdir())


def settle_failed_record(run_dir: str | Path) -> None:
    """After a run failed: keep its pending record (promote it) when the folder holds no output of an earlier
    run, else drop it so that .hydra/ still describes that run's files. Call it on the main process only."""
    if holds_outputs(run_dir):
        shutil.rmtree(Path(run_dir) / PENDING_DIR, ignore_errors=True)
    else:
        promote_record(run_dir)
