"""Sharded checkpoint folders on gloo ranks, through the Trainer as a user's script uses it (scripts/sharded.py):
written by 4 ranks and resumed on 4 (bit for bit), on 2 and on 1; a save killed midway (synchronous and in the background) leaves the
previous checkpoint in place and loadable; ModelCheckpoint's top-k, versions and `last` link on folders; conversion
to one file and back, and `load_from_checkpoint` on a folder."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import volt
from distributed.helpers import SCRIPTS, finish, running, script_env
from volt.sharded_checkpoint import load, shard

pytestmark = pytest.mark.distributed
SCRIPT = SCRIPTS / "sharded.py"


def start(out: Path, **options) -> subprocess.Popen:
    out.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen([sys.executable, str(SCRIPT), str(out), json.dumps(options)], env=script_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)


def launch(out: Path, **options) -> tuple:
    """Run the script to the end: (every rank's report by rank, the job's output)."""
    proc = start(out, **options)
    output = finish(proc, timeout=60)
    assert proc.returncode == 0, output[-6000:]
    return {int(p.stem[4:]): torch.load(p, weights_only=False) for p in out.glob("rank*.pt")}, output


def assert_equal(actual, expected, where: str) -> None:
    if isinstance(expected, torch.Tensor):
        assert torch.equal(actual, expected), where
    elif isinstance(expected, dict):
        assert actual.keys() == expected.keys(), where
        for key in expected:
            assert_equal(actual[key], expected[key], f"{where}/{key}")
    elif isinstance(expected, (list, tuple)):
        assert len(actual) == len(expected), where
        for i, (a, e) in enumerate(zip(actual, expected)):
            assert_equal(a, e, f"{where}/{i}")
    else:
        assert actual == expected, where


class Net(volt.LightningModule):
    """The script's model, as a user's other program would define it to load a checkpoint."""

    def __init__(self, hidden: int = 4) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.l1 = torch.nn.Linear(8, hidden)
        self.l2 = torch.nn.Linear(hidden, 1)


# DDP lays its gradient buckets out anew after its first step, so on 3 or more ranks the first step of a resumed run
# sums the ranks' gradients in another order than the uninterrupted run did (float rounding); find_unused_parameters
# keeps the first layout, and the resume on the same ranks is bit for bit (README: what a resume keeps).
DDP_KEEPS_ITS_BUCKETS = {"find_unused_parameters": True}


@pytest.fixture(scope="module", params=["ddp", "fsdp"])
def written_by_4_ranks(request, tmp_path_factory):
    """A 2-epoch run on 4 ranks (global batch 8) with a sharded checkpoint at each epoch end."""
    out = tmp_path_factory.mktemp(f"four-{request.param}")
    reports, _ = launch(out, strategy=request.param, devices=4, checkpoints=[{"every_n_epochs": 1, "save_top_k": -1}],
                        ddp_kwargs=DDP_KEEPS_ITS_BUCKETS)
    return request.param, out, reports


@pytest.mark.timeout(240)
def test_written_by_4_ranks_resumes_on_4_2_and_1(written_by_4_ranks, tmp_path):
    strategy, out, uninterrupted = written_by_4_ranks
    folder = out / "ckpt" / "epoch=0-step=8.ckpt"
    # every rank wrote its own file (its shards; DDP's replicated tensors spread over the ranks) and its own state
    assert sorted(p.name for p in folder.glob("*.distcp")) == [f"__{rank}_0.distcp" for rank in range(4)]
    saved = load(folder)
    assert [sorted(rank) for rank in saved["loops"]["fit_loop"]["per_rank"]] == [
        ["epoch_rng", "results", "rng", "sampler_rng", "stream"]] * 4
    for devices, resumed_strategy in ((4, strategy), (2, strategy), (1, "auto")):
        reports, output = launch(tmp_path / f"on{devices}", strategy=resumed_strategy, devices=devices,
                                 resume_from=str(folder), ddp_kwargs=DDP_KEEPS_ITS_BUCKETS)
        assert ("Resuming a checkpoint written by 4 process(es)" in output) == (devices != 4)
        start, end, expected = reports[0]["start"], reports[0]["end"], uninterrupted[0]["end"]
        # restored exactly: weights and optimizer state as saved, on any number of ranks
        assert start["global_step"] == 8
        assert_equal(start["weights"], saved["state_dict"], f"{devices} rank(s): weights")
        assert_equal(start["optimizer"], saved["optimizer_states"][0], f"{devices} rank(s): optimizer")
        assert end["global_step"] == expected["global_step"] == 16
        if devices == 4:  # the same ranks: bit for bit
            assert_equal(end["weights"], expected["weights"], "resumed on 4 ranks")
            continue
        # the same global batches follow (8 samples each, split differently): equal to float rounding
        for name, value in expected["weights"].items():
            torch.testing.assert_close(end["weights"][name], value, rtol=1e-5, atol=1e-6, msg=name)


@pytest.mark.timeout(120)
def test_hybrid_sharding_replicates_over_the_mesh_and_resumes_on_one_process(tmp_path):
    """FSDPStrategy(sharding_strategy="HYBRID_SHARD", device_mesh=(2, 1)): 2 copies of the model, each sharded over 1
    rank (a config file's list is taken as the tuple). Its checkpoint folder resumes on one process exactly, and the
    resumed run ends where the hybrid one did (to float rounding): the replicas averaged their gradients."""
    hybrid = {"sharding_strategy": "HYBRID_SHARD", "device_mesh": [2, 1]}
    reports, _ = launch(tmp_path / "hybrid", strategy="fsdp", fsdp_kwargs=hybrid,
                        checkpoints=[{"every_n_epochs": 1, "save_top_k": -1}])
    assert set(reports[0]["placements"].values()) == {"(Replicate(), Shard(dim=0))"}
    folder = tmp_path / "hybrid" / "ckpt" / "epoch=0-step=8.ckpt"
    resumed, _ = launch(tmp_path / "resumed", strategy="auto", devices=1, resume_from=str(folder))
    start, end, expected = resumed[0]["start"], resumed[0]["end"], reports[0]["end"]
    assert_equal(start["weights"], load(folder)["state_dict"], "restored weights")
    assert end["global_step"] == expected["global_step"] == 16
    for name, value in expected["weights"].items():
        torch.testing.assert_close(end["weights"][name], value, rtol=1e-5, atol=1e-6, msg=name)


@pytest.mark.parametrize("written_by_4_ranks", ["fsdp"], indirect=True)  # shards to merge
def test_consolidate_and_shard_round_trip_and_load_from_checkpoint(written_by_4_ranks, tmp_path):
    _, out, _ = written_by_4_ranks
    folder = out / "ckpt" / "epoch=1-step=16.ckpt"
    saved = load(folder)
    single = tmp_path / "single.ckpt"
    result = subprocess.run([sys.executable, "-m", "volt", "checkpoint", "consolidate", str(folder), str(single)],
                            env=script_env(), capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    as_file = torch.load(single, weights_only=True)  # one ordinary checkpoint file, plain data
    assert_equal(as_file, saved, "consolidated file")
    assert len(as_file["loops"]["fit_loop"]["per_rank"]) == 4  # every rank's own state, as a 4-rank file holds it
    shard(single, tmp_path / "back.ckpt")
    assert_equal(load(tmp_path / "back.ckpt"), saved, "file sharded again")

    model = Net.load_from_checkpoint(folder)
    assert model.hparams.hidden == 16  # the saved hyperparameters build the model
    assert_equal(model.state_dict(), saved["state_dict"], "load_from_checkpoint")


def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


@pytest.mark.timeout(150)
@pytest.mark.parametrize("async_save", [False, True], ids=["sync", "async"])
def test_a_save_killed_midway_leaves_the_previous_checkpoint(tmp_path, async_save):
    """The second save hangs in its writes (sync: a new top-k folder; async: the new last.ckpt, which replaces the
    old one, while training goes on) and the job is killed there."""
    run, ckpt = tmp_path / "run", tmp_path / "ckpt"
    every_2_steps = {"dirpath": str(ckpt), "every_n_train_steps": 2, "save_top_k": 0 if async_save else -1,
                     "save_last": True, "async_save": async_save}
    proc = start(run, strategy="fsdp", max_epochs=50, checkpoints=[every_2_steps], stall_after=str(ckpt / "last.ckpt"))
    try:
        wait_for(lambda: (run / "stalled0").exists() and (run / "stalled1").exists(), 50, "the stalled save")
        if async_save:  # the write is in a thread: training went on past the save
            wait_for(lambda: all(int((run / f"step{r}").read_text() or 0) >= 5 for r in (0, 1)), 20,
                     "training to go on during the background write")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        output = finish(proc, timeout=20)
    wait_for(lambda: not running(proc.pid), 10, "the job to end")
    visible = sorted(p.name for p in ckpt.iterdir() if not p.name.startswith("."))
    assert visible == (["last.ckpt"] if async_save else ["epoch=0-step=2.ckpt", "last.ckpt"]), output[-3000:]
    killed = ".last.ckpt.tmp-" if async_save else ".epoch=0-step=4.ckpt.tmp-"
    assert [p.name for p in ckpt.iterdir() if p.name.startswith(killed)]  # the killed write's hidden folder
    last = load(ckpt / "last.ckpt")
    assert last["global_step"] == 2
    if not async_save:
        assert_equal(last["state_dict"], load(ckpt / "epoch=0-step=2.ckpt")["state_dict"], "last.ckpt")

    # `ckpt_path="last"` finds the folder; the next saves of those names clear the killed write's leftovers
    reports, _ = launch(tmp_path / "resumed", strategy="fsdp", max_epochs=1, resume_from="last",
                        checkpoints=[every_2_steps])
    assert reports[0]["start"]["global_step"] == 2
    assert_equal(reports[0]["start"]["weights"], last["state_dict"], "resumed weights")
    assert not [p.name for p in ckpt.iterdir() if p.name.startswith(".")]
    assert load(ckpt / "last.ckpt")["global_step"] == 8


@pytest.mark.timeout(120)
def test_model_checkpoint_keeps_top_k_versions_and_last_link_of_folders(tmp_path):
    run = tmp_path / "run"
    top_2 = {"dirpath": "top", "monitor": "loss", "save_top_k": 2, "every_n_train_steps": 2, "save_last": "link"}
    versions = {"dirpath": "versions", "filename": "model", "monitor": "loss", "save_top_k": -1, "every_n_train_steps": 4,
                "async_save": True}
    reports, _ = launch(run, strategy="ddp", checkpoints=[top_2, versions])
    top = sorted(p.name for p in (run / "top").iterdir())
    assert len(top) == 3 and "last.ckpt" in top, top  # the 2 best, and the link; the others were removed
    assert os.path.islink(run / "top" / "last.ckpt")
    newest = Path(os.path.realpath(run / "top" / "last.ckpt"))  # the newest checkpoint the callback saved
    assert newest.parent == run / "top" and newest.name in top
    linked = load(run / "top" / "last.ckpt")
    # a name taken (even by a write still in flight) gets the next version, folders as files
    assert sorted(p.name for p in (run / "versions").iterdir()) == [
        "model-v1.ckpt", "model-v2.ckpt", "model-v3.ckpt", "model.ckpt"]
    assert [load(run / "versions" / name)["global_step"] for name in
            ("model.ckpt", "model-v1.ckpt", "model-v2.ckpt", "model-v3.ckpt")] == [4, 8, 12, 16]

    resumed, _ = launch(run, strategy="ddp", max_epochs=3, resume_from="last", checkpoints=[top_2])
    assert resumed[0]["start"]["global_step"] == linked["global_step"]
    assert_equal(resumed[0]["start"]["weights"], linked["state_dict"], "resumed from last.ckpt")
