"""Sharded checkpoint folders and background writes in one process: the folder format (round trip, atomic
replacement, completeness, safe loading, removal), background writes (AsyncCheckpointIO), and ModelCheckpoint's
`async_save` through the Trainer (exact resume, versions of names still being written, a failed write surfacing).
The multi-process behaviour is in tests/distributed/test_sharded_checkpoints.py."""
import logging
import os
import pickle
import warnings

import pytest
import torch

import volt
from helpers import BoringModel, loader, trainer
from volt.callbacks import ModelCheckpoint
from volt.checkpoint import (CheckpointError, checkpoint_exists, load_checkpoint, remove_checkpoint,
                             save_checkpoint)
from volt.plugins import AsyncCheckpointIO
from volt.sharded_checkpoint import ShardedCheckpoint, load, main, save_sharded
from volt.strategies import SingleDeviceStrategy


def _equal(actual, expected, where="checkpoint"):
    if isinstance(expected, torch.Tensor):
        assert torch.equal(actual, expected), where
    elif isinstance(expected, dict):
        assert actual.keys() == expected.keys(), where
        for key in expected:
            _equal(actual[key], expected[key], f"{where}[{key!r}]")
    elif isinstance(expected, (list, tuple)):
        assert len(actual) == len(expected), where
        for i, (a, e) in enumerate(zip(actual, expected)):
            _equal(a, e, f"{where}[{i}]")
    else:
        assert actual == expected, where


def _checkpoint(seed: int = 0) -> dict:
    """A checkpoint as the Trainer's sharded form holds it: weights, an optimizer by parameter name, pending
    gradients, the loop's plain state and a callback's."""
    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 1))
    optimizer = torch.optim.Adam(net.parameters())
    net(torch.randn(2, 3)).sum().backward()
    optimizer.step()
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    return {"state_dict": dict(net.state_dict()), "epoch": 1, "global_step": 7,
            "optimizer_states": [get_optimizer_state_dict(net, optimizer)],
            "loops": {"fit_loop": {"epoch": 1, "rng": {"torch": torch.get_rng_state()},
                                   "grads": {name: p.grad.clone() for name, p in net.named_parameters()}}},
            "callbacks": {"Counter": {"seen": 3, "best": torch.tensor(0.5)}},
            "hyper_parameters": {"hidden": 4}}


def test_a_folder_holds_what_a_file_holds(tmp_path):
    checkpoint, own = _checkpoint(), {"rng": {"torch": torch.get_rng_state()}}
    save_sharded(checkpoint, tmp_path / "a.ckpt", own=own)
    assert checkpoint_exists(tmp_path / "a.ckpt") and sorted(os.listdir(tmp_path)) == ["a.ckpt"]
    loaded = load(tmp_path / "a.ckpt")
    # the single-file layout: optimizer parameters numbered in param-group order
    expected = dict(checkpoint, optimizer_states=[{
        "state": dict(enumerate(checkpoint["optimizer_states"][0]["state"].values())),
        "param_groups": [{**checkpoint["optimizer_states"][0]["param_groups"][0], "params": [0, 1, 2, 3]}]}])
    _equal(loaded, expected)
    # read in parts, into shapes given by a template (here plain tensors; a DTensor reads its own shard)
    folder = ShardedCheckpoint(tmp_path / "a.ckpt")
    parts = folder.read([0])
    assert parts["state_dict"] == {}  # the weights come with read_model
    assert parts["loops"]["fit_loop"]["grads"].keys() == {"0.weight", "0.bias", "1.weight", "1.bias"}
    template = {name: torch.zeros_like(value) for name, value in checkpoint["state_dict"].items()}
    folder.read_model(parts, template)
    _equal(parts["state_dict"], checkpoint["state_dict"])
    assert all(value.data_ptr() != template[name].data_ptr() for name, value in parts["state_dict"].items())


def test_a_checkpoint_folder_is_replaced_whole_and_a_plain_folder_never(tmp_path):
    path = tmp_path / "last.ckpt"
    save_sharded(_checkpoint(0), path)
    save_sharded(_checkpoint(1), path)  # swapped in atomically, the old one deleted
    _equal(load(path)["state_dict"], _checkpoint(1)["state_dict"])
    assert os.listdir(tmp_path) == ["last.ckpt"]
    save_checkpoint(_checkpoint(2), path)  # a file may replace a folder, and the reverse
    _equal(load_checkpoint(path)["state_dict"], _checkpoint(2)["state_dict"])
    save_sharded(_checkpoint(0), path)
    assert path.is_dir() and os.listdir(tmp_path) == ["last.ckpt"]

    plain = tmp_path / "data.ckpt"
    plain.mkdir()
    (plain / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="is a folder but not a volt checkpoint; not replacing it"):
        save_sharded(_checkpoint(), plain)
    with pytest.raises(FileExistsError, match="is a folder but not a volt checkpoint; not replacing it"):
        save_checkpoint(_checkpoint(), plain)
    assert os.listdir(plain) == ["notes.txt"] and not [p for p in os.listdir(tmp_path) if p.startswith(".")]


def test_incomplete_and_unknown_folders_are_clear_errors(tmp_path):
    save_sharded(_checkpoint(), tmp_path / "a.ckpt")
    os.remove(tmp_path / "a.ckpt" / "volt_checkpoint.json")  # as an interrupted save leaves its folder
    with pytest.raises(CheckpointError, match="not a complete volt checkpoint: it has no volt_checkpoint.json"):
        load(tmp_path / "a.ckpt")
    assert not checkpoint_exists(tmp_path / "a.ckpt")
    save_sharded(_checkpoint(), tmp_path / "b.ckpt")
    with pytest.raises(IsADirectoryError, match="sharded checkpoint folder: read it with volt.sharded_checkpoint"):
        load_checkpoint(tmp_path / "b.ckpt")
    (tmp_path / "b.ckpt" / "volt_checkpoint.json").write_text('{"format": "volt sharded checkpoint", "version": 9}')
    with pytest.raises(CheckpointError, match="written in a newer format"):
        load(tmp_path / "b.ckpt")
    with pytest.raises(FileNotFoundError, match="Checkpoint folder not found"):
        ShardedCheckpoint(tmp_path / "missing.ckpt")


class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_loading_a_folder_never_runs_code_from_it(tmp_path):
    """DCP itself unpickles `.metadata` and its non-tensor entries with full pickle: volt's reader does not."""
    marker = tmp_path / "ran"
    save_sharded(_checkpoint(), tmp_path / "a.ckpt")
    with open(tmp_path / "a.ckpt" / ".metadata", "wb") as f:
        pickle.dump(_RunsCode(str(marker)), f)
    with pytest.raises(CheckpointError, match="references io.open, which DCP metadata never holds. Nothing in it was"):
        load(tmp_path / "a.ckpt")

    import torch.distributed.checkpoint as dcp

    folder = tmp_path / "b.ckpt"
    with warnings.catch_warnings():  # DCP's note that it saves in a single process
        warnings.simplefilter("ignore")
        dcp.save({"volt/common": _RunsCode(str(marker))}, checkpoint_id=str(folder), no_dist=True)
    (folder / "volt_checkpoint.json").write_text('{"format": "volt sharded checkpoint", "version": 1, "world_size": 1}')
    with pytest.raises(CheckpointError, match=r"Refused to load the entry 'volt/common' of .*b.ckpt: it is not plain "
                                              r"data \(it references io.open\)\. Nothing in it was executed"):
        load(folder)
    assert not marker.exists()


def test_removing_a_folder_checkpoint(tmp_path):
    save_sharded(_checkpoint(), tmp_path / "a.ckpt")
    remove_checkpoint(tmp_path / "a.ckpt")
    assert os.listdir(tmp_path) == []
    (tmp_path / "mine").mkdir()
    with pytest.warns(UserWarning, match="Not removing .*mine: it is a folder but not a complete volt checkpoint"):
        remove_checkpoint(tmp_path / "mine")
    assert os.listdir(tmp_path) == ["mine"]


def test_a_background_write_is_a_copy_and_runs_follow_ups_once_durable(tmp_path):
    weights = torch.zeros(3)
    pending = AsyncCheckpointIO().save_checkpoint({"w": weights, "steps": [1]}, tmp_path / "a.ckpt")
    weights += 1  # training goes on: the checkpoint holds the value at the save
    seen = []
    pending.then(lambda: seen.append(checkpoint_exists(tmp_path / "a.ckpt")))
    pending.wait()
    assert seen == [True]
    assert torch.equal(torch.load(tmp_path / "a.ckpt", weights_only=True)["w"], torch.zeros(3))
    pending.then(lambda: seen.append("at once"))  # already durable
    assert seen == [True, "at once"]


def test_a_failed_background_write_is_logged_at_once_and_raised_by_wait(tmp_path, caplog):
    (tmp_path / "taken.ckpt").mkdir()  # a plain folder: never replaced
    with caplog.at_level(logging.ERROR, logger="volt"):
        pending = AsyncCheckpointIO().save_checkpoint({"w": torch.zeros(1)}, tmp_path / "taken.ckpt")
        pending.then(lambda: pytest.fail("a follow-up ran after a failed write"))
        with pytest.raises(RuntimeError, match="taken.ckpt in the background .* failed: FileExistsError") as error:
            pending.wait()
    assert isinstance(error.value.__cause__, FileExistsError)
    assert "taken.ckpt in the background (or the file work after it) failed" in caplog.text


def _fit(tmp_path, callbacks, ckpt_path=None, max_epochs=2):
    volt.seed_everything(0)
    model = BoringModel()
    fit = trainer(tmp_path, max_epochs=max_epochs, callbacks=callbacks, enable_checkpointing=True)
    fit.fit(model, loader(n=16, seed=0), ckpt_path=ckpt_path)
    return {name: value.clone() for name, value in model.state_dict().items()}


def test_async_model_checkpoint_saves_the_same_checkpoints_and_resumes_exactly(tmp_path):
    def every_3_steps(folder, async_save):
        return ModelCheckpoint(dirpath=tmp_path / folder, every_n_train_steps=3, save_top_k=2, monitor="train_loss",
                               save_last="link", async_save=async_save)

    expected = _fit(tmp_path, [every_3_steps("sync", False)])
    _equal(_fit(tmp_path, [every_3_steps("async", True)]), expected)
    # the same files, top-k removals and link, once every background write is done
    assert sorted(os.listdir(tmp_path / "async")) == sorted(os.listdir(tmp_path / "sync"))
    assert os.readlink(tmp_path / "async" / "last.ckpt") == os.readlink(tmp_path / "sync" / "last.ckpt")
    for name in os.listdir(tmp_path / "sync"):
        _equal(torch.load(tmp_path / "async" / name, weights_only=True)["state_dict"],
               torch.load(tmp_path / "sync" / name, weights_only=True)["state_dict"], name)
    earliest = min((torch.load(tmp_path / "async" / name, weights_only=True)["global_step"], name)
                   for name in os.listdir(tmp_path / "async") if name != "last.ckpt")
    assert earliest[0] < 16
    resumed = _fit(tmp_path, [every_3_steps("resumed", True)], ckpt_path=tmp_path / "async" / earliest[1])
    _equal(resumed, expected, "resumed from a background-written checkpoint")


def test_a_name_still_being_written_counts_as_taken(tmp_path, monkeypatch):
    real_fsync = os.fsync

    def slow_fsync(fd):  # slow storage: each background write is still going when the next save is named
        import time

        time.sleep(0.05)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", slow_fsync)
    same_name = ModelCheckpoint(dirpath=tmp_path / "ckpt", filename="model", monitor="train_loss", save_top_k=-1,
                                every_n_train_steps=1, async_save=True)
    _fit(tmp_path, [same_name], max_epochs=1)  # 8 steps: 8 saves
    assert sorted(os.listdir(tmp_path / "ckpt")) == sorted(["model.ckpt"] + [f"model-v{i}.ckpt" for i in range(1, 8)])


def test_a_failed_background_write_fails_the_fit(tmp_path):
    (tmp_path / "ckpt").mkdir()
    (tmp_path / "ckpt" / "epoch=0-step=2.ckpt").mkdir()  # a folder that is not a checkpoint takes the first name
    every_2_steps = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=2, save_top_k=-1,
                                    enable_version_counter=False, async_save=True)
    with pytest.raises(RuntimeError, match=r"epoch=0-step=2.ckpt in the background .* failed: FileExistsError"):
        _fit(tmp_path, [every_2_steps])


def test_volt_checkpoint_command_errors(tmp_path, capsys):
    save_sharded(_checkpoint(), tmp_path / "a.ckpt")
    main(["consolidate", str(tmp_path / "a.ckpt"), str(tmp_path / "a.pt")])
    _equal(torch.load(tmp_path / "a.pt", weights_only=True)["state_dict"], _checkpoint()["state_dict"])
    with pytest.raises(SystemExit) as exit_info:
        main(["consolidate", str(tmp_path / "a.ckpt"), str(tmp_path / "a.pt")])
    assert exit_info.value.code == 2 and "a.pt exists; pass --overwrite to replace it" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["shard", str(tmp_path / "missing.pt"), str(tmp_path / "b.ckpt")])
    assert exit_info.value.code == 1 and "Checkpoint file not found" in capsys.readouterr().err


class _ShardedOneDevice(SingleDeviceStrategy):
    """One process writing its checkpoints as sharded folders (what FSDP does on several ranks)."""

    state_dict_type = "sharded"


def test_folders_in_one_process_and_remote_folders_refused(tmp_path):
    every_4_steps = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=4, save_top_k=-1)
    expected = _fit(tmp_path, [every_4_steps])
    volt.seed_everything(0)
    model = BoringModel()
    trainer(tmp_path, max_epochs=2, strategy=_ShardedOneDevice(), callbacks=[
        ModelCheckpoint(dirpath=tmp_path / "folders", every_n_train_steps=4, save_top_k=-1)],
        enable_checkpointing=True).fit(model, loader(n=16, seed=0))
    _equal(model.state_dict(), expected, "the same training, saving folders")
    assert sorted(os.listdir(tmp_path / "folders")) == sorted(os.listdir(tmp_path / "ckpt"))
    for name in os.listdir(tmp_path / "ckpt"):
        file, folder = torch.load(tmp_path / "ckpt" / name, weights_only=True), load(tmp_path / "folders" / name)
        _equal(folder["state_dict"], file["state_dict"], name)
        _equal(folder["optimizer_states"], file["optimizer_states"], name)
    resumed = _fit(tmp_path, [], ckpt_path=tmp_path / "folders" / "epoch=0-step=4.ckpt")
    _equal(resumed, expected, "resumed from a folder")

    remote = ModelCheckpoint(dirpath="memory://bucket/ckpt", every_n_train_steps=4)
    with pytest.raises(ValueError, match="Sharded checkpoints are folders .*got dirpath='memory://bucket/ckpt'"):
        trainer(tmp_path, strategy=_ShardedOneDevice(), callbacks=[remote], enable_checkpointing=True).fit(
            BoringModel(), loader(n=16, seed=0))
