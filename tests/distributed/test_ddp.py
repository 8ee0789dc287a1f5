"""Multi-process training on gloo, 2 processes: scripts run as files with volt's launcher, spawn and torchrun.

The reference is one process with the whole batch (batch 8); N=2 ranks with batch 4 must end with the same
weights (to 1e-5) with accumulation and clipping, for DDP and FSDP.
"""
import subprocess
import sys

import pytest
import torch

from distributed.helpers import SCRIPTS, finish, free_port, reports, run, script_env, start, torchrun

pytestmark = pytest.mark.distributed
TRAINING = {"batch_size": 4, "accumulate": 2, "clip": 0.5}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """One process, batch 8: what two ranks with batch 4 must reproduce."""
    out = tmp_path_factory.mktemp("reference")
    run(out, {**TRAINING, "strategy": "auto", "devices": 1, "batch_size": 8})
    return reports(out)[0]


def assert_same_weights(actual: dict, expected: dict) -> None:
    for name, value in expected.items():
        torch.testing.assert_close(actual[name], value, rtol=0, atol=1e-5, msg=name)


@pytest.mark.timeout(60)
def test_ddp_matches_one_process_and_agrees_across_ranks(tmp_path, reference):
    run(tmp_path, {**TRAINING, "strategy": "ddp", "phases": ["equiv", "sampler", "resume", "agree"]})
    ranks = reports(tmp_path)
    assert sorted(ranks) == [0, 1] and ranks[0]["world_size"] == 2

    # equivalence: same weights as one process with the whole batch, identical on both ranks
    assert_same_weights(ranks[0]["weights"], reference["weights"])
    for name, value in ranks[0]["weights"].items():
        assert torch.equal(value, ranks[1]["weights"][name]), name
    assert ranks[0]["global_step"] == reference["global_step"]
    # accumulation: one gradient all-reduce per optimizer step, none on the accumulating batches (no_sync)
    assert ranks[0]["gradient_syncs"] == ranks[0]["global_step"] == 8

    # sync_dist: weighted mean, sum, max, min over ranks equal the one-process values (no padded duplicates)
    for key in ("val_loss", "val_sum", "val_max", "val_min", "train_loss"):
        assert ranks[0]["metrics"][key] == pytest.approx(reference["metrics"][key], rel=1e-5, abs=1e-6), key
        assert ranks[1]["metrics"][key] == ranks[0]["metrics"][key], key

    # evaluation sampler: 63 validation samples split 32/31, none twice
    val0, val1 = ranks[0]["val_indices"], ranks[1]["val_indices"]
    assert (len(val0), len(val1)) == (32, 31) and sorted(val0 + val1) == list(range(63))

    # all_gather: a new leading dimension of world size, in rank order
    for rank in (0, 1):
        assert torch.equal(ranks[rank]["gathered"]["rank"], torch.tensor([0.0, 1.0]))
        assert torch.equal(ranks[rank]["gathered"]["pair"], torch.tensor([[0.0, 0.0], [1.0, 1.0]]))

    # checkpoints: written by rank 0 only, through the CheckpointIO plugin, which every rank tears down at the end of
    # fit; both ranks agree on the best one
    assert ranks[0]["checkpoint_writers"] and set(ranks[0]["checkpoint_writers"]) == {0}
    assert ranks[1]["checkpoint_writers"] == []
    assert ranks[0]["checkpoint_io_teardowns"] == ranks[1]["checkpoint_io_teardowns"] == 1
    assert ranks[0]["best_model_path"] == ranks[1]["best_model_path"] != ""

    # training sampler: the user's shuffle is kept, every epoch reshuffles (set_epoch), ranks split the data
    for epoch in (0, 1):
        seen = [[i for e, batch in ranks[r]["train_indices"] if e == epoch for i in batch] for r in (0, 1)]
        assert sorted(seen[0] + seen[1]) == list(range(64)), epoch
        assert seen[0] != sorted(seen[0])
    first = [batch for e, batch in ranks[0]["train_indices"] if e == 0]
    second = [batch for e, batch in ranks[0]["train_indices"] if e == 1]
    assert first != second

    # exact resume under DDP: resumed mid-epoch from the step-3 checkpoint == never interrupted, bit for bit
    for rank in (0, 1):
        for name, value in ranks[rank]["uninterrupted"].items():
            assert torch.equal(ranks[rank]["resumed"][name], value), (rank, name)

    # EarlyStopping: only rank 1's metric stopped improving, yet both ranks stopped after the same epoch
    assert ranks[0]["stopped_epoch"] == ranks[1]["stopped_epoch"] == 2


@pytest.mark.timeout(60)
def test_fsdp_matches_one_process_and_writes_full_checkpoints(tmp_path, reference):
    run(tmp_path, {**TRAINING, "strategy": "fsdp_full", "phases": ["equiv", "resume"]})
    ranks = reports(tmp_path)
    assert_same_weights(ranks[0]["weights"], reference["weights"])  # the full state dict lands on rank 0
    assert ranks[1]["weights"] == {}
    assert ranks[0]["metrics"]["val_loss"] == pytest.approx(reference["metrics"]["val_loss"], rel=1e-5)
    assert ranks[0]["checkpoint_loads"]  # the checkpoint loads into a plain, unsharded module
    assert set(ranks[0]["checkpoint_writers"]) == {0} and ranks[1]["checkpoint_writers"] == []
    assert ranks[0]["checkpoint_io_teardowns"] == ranks[1]["checkpoint_io_teardowns"] == 1
    for name, value in ranks[0]["uninterrupted"].items():  # resume restores sharded weights and optimizer state
        assert torch.equal(ranks[0]["resumed"][name], value), name


@pytest.mark.timeout(60)
def test_ddp_spawn_returns_weights_and_results_to_the_main_process(tmp_path, reference):
    # a parameter that takes no part in the loss needs find_unused_parameters=True
    # ModelCheckpoint first, EarlyStopping and the model summary after it: the ranks reorder the callbacks
    run(tmp_path, {**TRAINING, "strategy": "ddp_spawn_find_unused", "unused": True, "checkpoint_not_last": True})
    main = reports(tmp_path)[0]  # written by the main process, which ran no training itself
    assert_same_weights(main["weights"], reference["weights"])
    assert main["metrics"]["val_loss"] == pytest.approx(reference["metrics"]["val_loss"], rel=1e-5)
    assert main["best_model_path"].endswith(".ckpt") and main["global_step"] == reference["global_step"]
    assert main["best_model_score"] == pytest.approx(
        torch.load(main["best_model_path"], weights_only=True)["callbacks"][
            "ModelCheckpoint{'monitor': 'val_loss', 'mode': 'min', 'every_n_train_steps': 0, 'every_n_epochs': 1, "
            "'train_time_interval': None}"]["best_model_score"].item())


@pytest.mark.timeout(90)
def test_lightning_cli_with_ddp_spawn(tmp_path):
    """The spawned ranks get the CLI's Trainer (its config-saving callback holds the parser) and model by pickle."""
    proc = subprocess.Popen([sys.executable, str(SCRIPTS / "cli_spawn.py"), str(tmp_path)], env=script_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    output = finish(proc, timeout=80)
    assert proc.returncode == 0, output[-6000:]
    result = torch.load(tmp_path / "result.pt", weights_only=True)
    assert result["global_step"] == 2  # 8 samples, batch 2, 2 ranks
    assert (tmp_path / "lightning_logs" / "version_0" / "config.yaml").is_file()
    assert not torch.equal(result["weight"], torch.nn.Linear(4, 1).weight)  # rank 0's trained weights came back


@pytest.mark.timeout(60)
def test_two_nodes_on_one_machine_with_volts_launcher(tmp_path, reference):
    port = str(free_port())
    options = {**TRAINING, "devices": 1, "num_nodes": 2}
    nodes = [start(tmp_path, options, MASTER_ADDR="127.0.0.1", MASTER_PORT=port, NODE_RANK=str(n)) for n in (0, 1)]
    for node in nodes:
        output = finish(node, timeout=50)
        assert node.returncode == 0, output[-4000:]
    ranks = reports(tmp_path)
    assert ranks[0]["world_size"] == ranks[1]["world_size"] == 2
    assert_same_weights(ranks[0]["weights"], reference["weights"])
    assert_same_weights(ranks[1]["weights"], reference["weights"])
    assert set(ranks[0]["checkpoint_writers"]) == {0} and ranks[1]["checkpoint_writers"] == []


@pytest.mark.timeout(60)
def test_torchrun_two_nodes(tmp_path, reference):
    port = str(free_port())
    options = {**TRAINING, "devices": 1, "num_nodes": 2}
    nodes = [start(tmp_path, options, torchrun() + ["--nnodes", "2", "--nproc-per-node", "1", "--node-rank", str(n),
                                                    "--master-addr", "127.0.0.1", "--master-port", port])
             for n in (0, 1)]
    for node in nodes:
        output = finish(node, timeout=55)
        assert node.returncode == 0, output[-4000:]
    ranks = reports(tmp_path)
    assert ranks[0]["world_size"] == ranks[1]["world_size"] == 2
    assert_same_weights(ranks[1]["weights"], reference["weights"])
