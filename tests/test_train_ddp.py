"""The training loop under torchrun: two processes (gloo on CPU) train the same weights as one.

Each process takes every other example of a step's global batch and DistributedDataParallel averages the
gradients, so with equal halves and a mean loss the two-process step is the one-process step; only the order of
float sums differs. Rank 0 alone writes the checkpoint, and a one-process run resumes from it.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import torch
from safetensors.torch import load_file

SCRIPT = textwrap.dedent("""
    import sys
    from pathlib import Path

    import torch
    from torch import nn
    from safetensors.torch import save_file

    from bench.jobs.distributed import init_world
    from bench.train.loop import Ranks, run_stage
    from bench.train.recipe import Stage

    out, steps, die_at = Path(sys.argv[1]), 12, int(sys.argv[2])
    init_world()  # a process group under torchrun; nothing for one plain process
    ranks = Ranks.current()
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1))
    data = torch.randn(256, 4, generator=torch.Generator().manual_seed(1))
    target = data.sum(1, keepdim=True).sin()

    def loss(step, shared, local):
        if step == die_at:
            raise SystemExit(3)  # every process killed at the same step, as a stopped job is
        idx = ranks.part(torch.randint(len(data), (16,), generator=shared))
        return (net(data[idx]) - target[idx]).pow(2).mean(), {}

    run_stage("toy", {"net": net}, loss, Stage(steps=steps, batch=16, lr=1e-2, warmup=2),
              checkpoint=out / "toy.safetensors", seed=3, meta={"toy": 1}, checkpoint_every=4, progress=False)
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(out / f"rank{ranks.rank}.safetensors"))
""")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(tmp_path: Path, folder: str, *, processes: int | None = None, die_at: int = -1) -> Path:
    """Run the toy stage in tmp_path/folder: one plain process, or `processes` under torchrun; killed at step
    `die_at` (-1: never)."""
    out = tmp_path / folder
    out.mkdir(exist_ok=True)
    script = tmp_path / "train_toy.py"
    script.write_text(SCRIPT, encoding="utf-8")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    launcher = [sys.executable, str(script)] if processes is None else [
        sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={processes}", "--master_addr=127.0.0.1",
        f"--master_port={_free_port()}", str(script)]
    done = subprocess.run([*launcher, str(out), str(die_at)], env=env, capture_output=True, text=True, timeout=600)
    assert (done.returncode != 0) == (die_at >= 0), done.stderr[-3000:]
    return out


def test_two_processes_train_the_weights_one_process_trains(tmp_path):
    # Catches: each process drawing its own batch (the shared generator not shared), both processes training on
    # the whole batch (Ranks.part not applied: same result only by accident of the loss), gradients not averaged
    # (no DDP wrap: the ranks' weights diverge), a process group never initialised under torchrun.
    one = load_file(str(_run(tmp_path, "one") / "rank0.safetensors"))
    two = _run(tmp_path, "two", processes=2)
    rank0, rank1 = (load_file(str(two / f"rank{r}.safetensors")) for r in (0, 1))
    untrained = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
    for name, value in one.items():
        assert torch.equal(rank0[name], rank1[name]), name  # DDP keeps the replicas identical
        torch.testing.assert_close(rank0[name], value, rtol=1e-5, atol=1e-6)
    torch.manual_seed(0)
    untrained = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1)).state_dict()
    assert not torch.allclose(untrained["0.weight"], one["0.weight"], atol=1e-3)  # the compared weights did train


def test_a_stage_killed_under_torchrun_resumes_in_one_process(tmp_path):
    # Catches: rank 1 writing over rank 0's checkpoint (or neither writing it), a checkpoint written under DDP with
    # the wrapper's parameter names, which a single process could not load, a resumed stage that restarts.
    killed = _run(tmp_path, "resumed", processes=2, die_at=9)  # checkpoints at steps 4 and 8 on disk
    assert not (killed / "rank0.safetensors").exists()
    resumed = load_file(str(_run(tmp_path, "resumed") / "rank0.safetensors"))
    straight = load_file(str(_run(tmp_path, "straight") / "rank0.safetensors"))
    for name, value in straight.items():
        torch.testing.assert_close(resumed[name], value, rtol=1e-5, atol=1e-6)
