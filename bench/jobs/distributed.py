"""Scale-out: one command sharded over processes (torchrun) or SLURM tasks (hydra-submitit-launcher).

Every process makes a disjoint shard of the samples (bench.jobs.generation.shard); images depend only on
(seed, replica, index), so the files are the same as a one-process run's. Coordination goes through
torch.distributed on a gloo group (it carries Python objects between CPU processes, and works beside NCCL):
barriers after the main process has removed the run folder's stale temporaries (bench/cli.py) and written
sampling.json, and before it writes the manifest, and a gather of each shard's streamed features.

torchrun starts N copies of the script and Hydra would give each its own timestamped output directory (a
known pitfall), so before Hydra starts, `pin_run_dir` has rank 0 choose the directory and every rank use it.
Under SLURM the submitit launcher has already chosen one directory for all tasks of a job.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class World:
    """This process's place among the processes of one run."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        """Wait until every process gets here (no-op alone)."""
        if self.world_size > 1:
            import torch.distributed as dist

            dist.barrier()

    def gather(self, obj: Any) -> list[Any]:
        """Every process's `obj`, in rank order, on every process (just [obj] alone)."""
        if self.world_size == 1:
            return [obj]
        import torch.distributed as dist

        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out


def _env_world() -> World:
    env = os.environ
    if "RANK" in env and "WORLD_SIZE" in env:  # torchrun, or anything that sets the env:// variables
        return World(int(env["RANK"]), int(env["WORLD_SIZE"]), int(env.get("LOCAL_RANK", 0)))
    if env.get("SUBMITIT_EXECUTOR"):  # a task of hydra-submitit-launcher (SLURM, or its local executor)
        import submitit

        job = submitit.JobEnvironment()
        return World(job.global_rank, job.num_tasks, job.local_rank)
    if int(env.get("SLURM_NTASKS", "1")) > 1 and "SLURM_PROCID" in env:  # plain srun
        return World(int(env["SLURM_PROCID"]), int(env["SLURM_NTASKS"]), int(env.get("SLURM_LOCALID", 0)))
    return World()


def init_world() -> World:
    """Join the run's process group (gloo) when this process is one of several; return its World.

    Under torchrun the env:// variables are set. Under SLURM (srun or the submitit launcher), submitit's
    TorchDistributedEnvironment derives them from the job's variables (the first node hosts the rendezvous).
    """
    world = _env_world()
    if world.world_size == 1:
        return world
    import torch.distributed as dist

    if not dist.is_initialized():
        if "MASTER_ADDR" not in os.environ:
            try:
                from submitit.helpers import TorchDistributedEnvironment
            except ImportError as err:
                from bench.core.errors import BenchError

                raise BenchError(
                    "This process is one of several SLURM tasks, but MASTER_ADDR is not set and submitit is not "
                    "installed to derive it: pip install hydra-submitit-launcher (muse-bench[slurm]), or launch "
                    "with torchrun."
                ) from err
            TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
        dist.init_process_group(backend="gloo", rank=world.rank, world_size=world.world_size)
    return world


def process_device(device: str, world: World) -> str:
    """The device of this process: with several processes on one machine, "cuda" means its own GPU."""
    if world.world_size > 1 and device == "cuda":
        return f"cuda:{world.local_rank}"
    return device


def pin_run_dir(argv: list[str]) -> list[str]:
    """Under torchrun with several ranks, the Hydra overrides that make every rank use rank 0's run directory.

    Returns the extra command-line overrides (empty when alone, when hydra.run.dir is already given, or for a
    multirun / --cfg / --help invocation, which write no run directory of their own here).
    """
    world = _env_world()
    passive = {"-m", "--multirun", "--cfg", "-c", "--help", "-h", "--hydra-help", "--info"}
    if world.world_size == 1 or "RANK" not in os.environ or passive & set(argv):
        return []
    extra = []
    if not any(arg.startswith(("hydra.run.dir=", "+hydra.run.dir=")) for arg in argv):
        import torch.distributed as dist

        init_world()
        # Hydra's default pattern, with rank 0's clock.
        chosen = [datetime.now().strftime("outputs/%Y-%m-%d/%H-%M-%S")] if world.is_main else [None]
        dist.broadcast_object_list(chosen, src=0)
        extra.append(f"hydra.run.dir={chosen[0]}")
    if not world.is_main:
        # One copy of .hydra/ and one log per run directory: the other ranks log to their own file.
        extra += ["hydra.output_subdir=null", f"hydra.job.name=muse-bench-rank{world.rank}"]
    return extra
