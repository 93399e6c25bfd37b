"""Distributed data parallel training: two CPU processes (gloo) launched by torchrun through the real CLI end with
identical weights, and the global batch and its forced-foreground share are split across ranks as in nnU-Net.

Run as a script, this module is the torchrun worker: ``python -m torch.distributed.run ... test_distributed.py OUT
<covtransfer_train arguments>``.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from covtransfer.cli.train import main
from covtransfer.network.build import build_from_spec, unwrap_network
from covtransfer.network.checkpoint import Checkpoint
from covtransfer.training.distributed import DistributedContext, init_distributed, local_batch
from covtransfer.training.trainer import Trainer
from tiny_data import preprocessed_roots

REPO = Path(__file__).resolve().parents[1]
DATASET = "Dataset001_Blob"


def _worker(out: Path, argv: list[str]) -> int:
    """One torchrun process: the real command line, saving this rank's final weights when the trainer closes."""
    close = Trainer.close

    def save_and_close(self: Trainer) -> None:
        torch.save(unwrap_network(self.model).state_dict(), out / f"rank{self.context.rank}.pt")
        (out / f"rank{self.context.rank}.txt").write_text(f"{self.context.world_size} {self.context.local_rank}")
        close(self)

    Trainer.close = save_and_close
    return main(argv)


@pytest.fixture(scope="module")
def roots(tmp_path_factory):
    return preprocessed_roots(tmp_path_factory.mktemp("data"), {1: ("Blob", 6, 0)})


def test_two_gloo_processes_end_with_identical_weights(roots, tmp_path):
    out = tmp_path / "ranks"
    out.mkdir()
    results = tmp_path / "results"
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
              "--max-restarts", "0", __file__, str(out)]  # standalone: torchrun binds a free port itself
    argv = ["-d", "1", "-f", "0", "--epochs", "2", "--iters-per-epoch", "2", "--val-iters", "1", "--device", "cpu",
            "--save-every", "1", "--preprocessed", str(roots.preprocessed), "--results", str(results)]
    env = dict(os.environ, OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    finished = subprocess.run(launch + argv, env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert finished.returncode == 0, (finished.stdout + finished.stderr)[-4000:]

    assert (out / "rank0.txt").read_text() == "2 0" and (out / "rank1.txt").read_text() == "2 1"
    rank0, rank1 = torch.load(out / "rank0.pt"), torch.load(out / "rank1.pt")
    assert rank0.keys() == rank1.keys() and not any(k.startswith("module.") for k in rank0)
    for name in rank0:
        assert torch.equal(rank0[name], rank1[name]), name

    folder = results / DATASET / "scratch" / "fold_0"
    checkpoint = torch.load(folder / "checkpoint_final.pt", weights_only=True)
    assert all(torch.equal(checkpoint["state_dict"][k], rank0[k]) for k in rank0)
    assert checkpoint["epoch"] == 2 and [r["epoch"] for r in checkpoint["history"]] == [0, 1]

    with torch.random.fork_rng():  # the trainer's initial weights, to show what training moved
        torch.manual_seed(checkpoint["settings"]["seed"])
        initial = build_from_spec(Checkpoint.from_dict(checkpoint).network_spec).state_dict()
    kept = sorted(k for k in rank0 if torch.equal(rank0[k], initial[k]))
    lowest = len(checkpoint["plans"]["configurations"]["3d_fullres"]["strides"]) - 2  # the zero-weight deep-supervision head
    assert kept == [f"heads.{DATASET}.{lowest}.bias", f"heads.{DATASET}.{lowest}.weight"]  # all else trained

    log = (folder / "training_log.txt").read_text()
    assert "2 process(es)" in log and log.count("epoch 1: train loss") == 1  # only rank 0 writes
    assert (folder / "validation" / "summary.json").is_file()  # final validation on rank 0


@pytest.mark.parametrize("batch, world, expected", [
    (2, 2, [(1, 0.0), (1, 1.0)]),  # global: sample 1 of 2 forced; it lives on rank 1
    (5, 2, [(3, 0.0), (2, 1.0)]),  # round(5 × 0.67) = 3: samples 3, 4 forced
    (12, 4, [(3, 0.0), (3, 0.0), (3, 1 / 3), (3, 1.0)]),
    (2, 4, [(1, 0.0), (1, 0.0), (1, 0.0), (1, 1.0)]),  # fewer samples than ranks: one each
])
def test_local_batch_keeps_the_global_forced_foreground_share(batch, world, expected):
    shares = [local_batch(batch, 0.33, DistributedContext(rank, world, rank)) for rank in range(world)]
    assert [size for size, _ in shares] == [size for size, _ in expected]
    assert [share for _, share in shares] == pytest.approx([share for _, share in expected])


def test_single_process_without_torchrun(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    context = init_distributed("cpu")
    assert context == DistributedContext() and context.is_main and not context.enabled
    assert local_batch(2, 0.33, context) == (2, 0.33)


if __name__ == "__main__":
    sys.exit(_worker(Path(sys.argv[1]), sys.argv[2:]))
