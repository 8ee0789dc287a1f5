"""Exact resume on 2 gloo ranks from checkpoints written inside a gradient-accumulation window.

Each rank's pending gradients (accumulating batches skip the all-reduce), RNG streams (dropout seeded per rank) and
epoch metric (logged without sync_dist) differ; a resumed run of the same script must end bit-identical to the
uninterrupted one on every rank, from a checkpoint file or a sharded checkpoint folder. Script:
scripts/resume_in_window.py.
"""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from distributed.helpers import SCRIPTS, finish, script_env
from volt.sharded_checkpoint import load

pytestmark = pytest.mark.distributed
SCRIPT = SCRIPTS / "resume_in_window.py"


def launch(out: Path, **options) -> tuple:
    """Run the script in fresh processes: (every rank's report by rank, the job's output)."""
    out.mkdir()
    proc = subprocess.Popen([sys.executable, str(SCRIPT), str(out), json.dumps(options)], env=script_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    output = finish(proc, timeout=50)
    assert proc.returncode == 0, output[-6000:]
    reports = {int(p.stem[4:]): torch.load(p, weights_only=False)["runs"] for p in sorted(out.glob("rank*.pt"))}
    return reports, output


def assert_equal_tensors(actual, expected, where) -> None:
    if isinstance(expected, torch.Tensor):
        assert torch.equal(actual, expected), where
    elif isinstance(expected, dict):
        assert actual.keys() == expected.keys(), where
        for key in expected:
            assert_equal_tensors(actual[key], expected[key], f"{where}/{key}")
    elif isinstance(expected, (list, tuple)):
        assert len(actual) == len(expected), where
        for i, (a, e) in enumerate(zip(actual, expected)):
            assert_equal_tensors(a, e, f"{where}/{i}")
    else:
        assert actual == expected, where


@pytest.mark.timeout(120)
@pytest.mark.parametrize("strategy,state_dict_type", [("ddp", "full"), ("fsdp", "full"), ("fsdp", "sharded")])
def test_resume_inside_an_accumulation_window_is_exact_on_every_rank(tmp_path, strategy, state_dict_type):
    options = {"strategy": strategy, "state_dict_type": state_dict_type}
    full, _ = launch(tmp_path / "full", **options)
    # inside a window: ModelCheckpoint after an in-epoch validation (which frees the gradients, as in Lightning),
    # and trainer.save_checkpoint from a batch hook, where each rank has summed gradients of its own
    checkpoints = [tmp_path / "full" / "ckpt" / "epoch=0-step=1.ckpt", tmp_path / "full" / "in_window.ckpt"]
    for path in checkpoints:
        assert path.is_dir() == (state_dict_type == "sharded"), path
        fit_loop = load(path)["loops"]["fit_loop"]
        assert fit_loop["grads"] is not None and len(fit_loop["per_rank"]) == 2, path
        assert all("grads" not in rank for rank in fit_loop["per_rank"]), path
    # the ranks' pending gradients are stored once: their average, from which every rank continues
    assert fit_loop["grads"].keys() == {"net.0.weight", "net.0.bias", "net.3.weight", "net.3.bias"}
    resumed, output = launch(tmp_path / "resumed", resume_from=[str(p) for p in checkpoints], **options)
    assert "Resuming a checkpoint written by" not in output

    assert sorted(full) == sorted(resumed) == [0, 1]
    uninterrupted = {rank: full[rank]["uninterrupted"] for rank in (0, 1)}
    # the test's premise: what each rank logs and draws differs
    assert not torch.equal(uninterrupted[0]["epoch_metric"][1], uninterrupted[1]["epoch_metric"][1])
    assert not torch.equal(uninterrupted[0]["rng"], uninterrupted[1]["rng"])
    for rank in (0, 1):
        for path in checkpoints:
            run, expected = resumed[rank][path.name], uninterrupted[rank]
            where = f"rank {rank}, {path.name}"
            assert run["global_step"] == expected["global_step"] == 4, where
            # under FSDP the full weights and optimizer state land on rank 0 only (rank 1 reports empty dicts)
            assert_equal_tensors(run["weights"], expected["weights"], f"{where}: weights")
            assert_equal_tensors(run["optimizer"], expected["optimizer"], f"{where}: optimizer")
            assert torch.equal(run["rng"], expected["rng"]), f"{where}: RNG"
            assert run["epoch_metric"].keys() == ({0, 1} if path.name.startswith("epoch=0") else {1}), where
            for epoch, value in run["epoch_metric"].items():
                assert torch.equal(value, expected["epoch_metric"][epoch]), f"{where}: epoch {epoch} rank_loss"
    if strategy == "ddp":  # another world size: one process loads the checkpoint and continues from rank 0's state
        single, output = launch(tmp_path / "single", devices=1, strategy="auto", resume_from=[str(checkpoints[1])])
        assert single[0]["in_window.ckpt"]["world_size"] == 1
        # the user is told what a resume on another number of processes keeps exactly
        assert "Resuming a checkpoint written by 2 process(es) on 1: weights, optimizer" in output
        assert "remaining samples are not exactly the ones no rank had seen" in output
        assert single[0]["in_window.ckpt"]["epoch_metric"].keys() == {1}
