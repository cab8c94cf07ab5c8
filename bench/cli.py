"""The `muse-bench` command: one Hydra app over the repository's conf/ folder.

Expected errors (bench.core.errors.BenchError, muse.errors.MuseError) are printed as one paragraph on
stderr with exit status 2 and no traceback; Hydra reports its own composition errors (an unknown
preset, an override of the wrong type) the same way, with exit status 1.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from bench.core.config import register_configs
from bench.core.errors import BenchError
from bench.core.paths import CONF_DIR

EXIT_EXPECTED_ERROR = 2

register_configs()


def _one_paragraph(message: str) -> str:
    return " ".join(line.strip() for line in message.splitlines() if line.strip())


def _is_expected(err: Exception) -> bool:
    if isinstance(err, BenchError):
        return True
    # No MuseError can be raised before muse is imported, so look it up only if it was: importing muse
    # (and diffusers with it) takes seconds that a config error found earlier need not wait for.
    muse_errors = sys.modules.get("muse.errors")
    return muse_errors is not None and isinstance(err, muse_errors.MuseError)


@hydra.main(config_path=str(CONF_DIR), config_name="config", version_base="1.3")
def app(cfg: DictConfig) -> None:
    """Run the experiment the composed config describes and print where its results are."""
    # Imported here, not at module level, so that --help and --cfg do not pay for importing torch.
    from bench.core.results import remove_stale_temporaries
    from bench.core.rundir import promote_record, settle_failed_record
    from bench.jobs import JOBS
    from bench.jobs.distributed import init_world

    hydra_cfg = HydraConfig.get()
    run_dir = hydra_cfg.runtime.output_dir
    world = init_world()
    if world.is_main:
        # Leftovers of atomic writes a killed run could not finish. Removed before the barrier: no process of
        # this run writes before it, so no file in flight is taken for a leftover.
        remove_stale_temporaries(run_dir)
    world.barrier()
    try:
        results = JOBS[cfg.job](
            cfg,
            run_dir=run_dir,
            experiment=hydra_cfg.runtime.choices.get("experiment") or "default",
            overrides=list(hydra_cfg.overrides.task),
        )
    except BaseException as err:
        # A refused or failed run leaves the folder's .hydra/ record as it was (bench/core/rundir.py).
        if world.is_main:
            settle_failed_record(run_dir)
        if not isinstance(err, Exception) or not _is_expected(err):
            raise
        print(f"muse-bench: error: {_one_paragraph(str(err))}", file=sys.stderr)
        sys.exit(EXIT_EXPECTED_ERROR)
    if world.is_main:
        promote_record(run_dir)
    print(f"results: {results}")


def compose_config(overrides: Sequence[str] = ()) -> DictConfig:
    """The config `muse-bench OVERRIDES` runs with, composed in-process with Hydra's compose API (no run directory,
    no `hydra` node): for tests and notebooks. Composition errors are Hydra's, as on the command line."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3", job_name="muse-bench"):
        return compose(config_name="config", overrides=list(overrides))


def main() -> None:
    """Entry point of the `muse-bench` console script (arguments from sys.argv)."""
    if not (CONF_DIR / "config.yaml").is_file():
        print(
            f"muse-bench: error: no Hydra configs at {CONF_DIR}. muse-bench runs from its source checkout: "
            "install it there with `pip install -e .` (make run does).",
            file=sys.stderr,
        )
        sys.exit(EXIT_EXPECTED_ERROR)
    # Several torchrun ranks must share one run directory (see bench/jobs/distributed.py).
    from bench.jobs.distributed import pin_run_dir

    sys.argv += pin_run_dir(sys.argv[1:])
    app()


if __name__ == "__main__":
    main()
