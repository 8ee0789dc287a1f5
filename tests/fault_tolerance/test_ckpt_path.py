"""`ckpt_path`: "last" (newest; a notice and a fresh start when there is none), "best", a path; and what happens
when the file is hostile or damaged, through the Trainer and `load_from_checkpoint`."""
import os
import pathlib

import pytest
import torch

import volt
from volt.callbacks import ModelCheckpoint
from volt.checkpoint import CheckpointError
from volt.utilities.exceptions import MisconfigurationException

from . import run_training

pytestmark = pytest.mark.filterwarnings("ignore:.*(exists and is not empty|lr_scheduler.step).*:UserWarning")


def _trainer(root, **kwargs):
    options = dict(default_root_dir=root, max_epochs=1, enable_progress_bar=False, enable_model_summary=False,
                   logger=False)
    options.update(kwargs)
    return volt.Trainer(**options)


def _fit(trainer, ckpt_path=None):
    model = run_training.Net()
    train, val = run_training.loaders(dict(run_training.DEFAULTS))
    trainer.fit(model, train, val, ckpt_path=ckpt_path)
    return model


def test_last_without_any_checkpoint_starts_fresh_with_a_notice(tmp_path):
    trainer = _trainer(tmp_path)
    with pytest.warns(UserWarning, match=r'ckpt_path="last"\)` is set, but there is no last checkpoint available. '
                                         "No checkpoint will be loaded"):
        _fit(trainer, ckpt_path="last")
    assert trainer.ckpt_path is None and trainer.global_step == 6


def test_last_picks_the_newest_last_file(tmp_path):
    callback = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True, every_n_train_steps=2)
    _fit(_trainer(tmp_path, callbacks=[callback]))
    older, newer = tmp_path / "ckpt" / "last.ckpt", tmp_path / "ckpt" / "last-v1.ckpt"
    newer.write_bytes(older.read_bytes())
    os.utime(older, (1_000_000, 1_000_000))
    trainer = _trainer(tmp_path, max_epochs=2,
                       callbacks=[ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True, every_n_train_steps=2)])
    _fit(trainer, ckpt_path="last")
    assert trainer.ckpt_path == str(newer)


def test_last_finds_the_previous_process_run_and_continues_its_log_version(tmp_path):
    """Default logger and default checkpoint folder (`lightning_logs/version_N/checkpoints`): a new process has a
    logger that would open version_1, yet "last" finds version_0's checkpoint and the log continues version_0."""
    def fresh_trainer(*callbacks):
        return volt.Trainer(default_root_dir=tmp_path, max_epochs=2, enable_progress_bar=False,
                            enable_model_summary=False, callbacks=list(callbacks))

    with pytest.raises(SystemExit, match="Training stopped by SIGTERM"):
        _fit(fresh_trainer(run_training.SendSignal("on_train_batch_start", 3, "SIGTERM")))
    assert sorted(os.listdir(tmp_path / "lightning_logs")) == ["version_0"]

    trainer = fresh_trainer()
    _fit(trainer, ckpt_path="last")
    assert trainer.ckpt_path == str(tmp_path / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt")
    assert trainer.logger.version == 0 and sorted(os.listdir(tmp_path / "lightning_logs")) == ["version_0"]
    assert trainer.global_step == 12


def test_best_and_explicit_paths(tmp_path):
    callback = ModelCheckpoint(dirpath=tmp_path / "ckpt", monitor="val_loss", save_top_k=2)
    trainer = _trainer(tmp_path, max_epochs=3, callbacks=[callback])
    _fit(trainer)
    best = callback.best_model_path
    trainer.save_checkpoint(tmp_path / "end.ckpt")  # epoch 3: past what max_epochs=2 allows (Lightning's rule)
    with pytest.raises(MisconfigurationException, match=r"You restored a checkpoint with current_epoch=3, but you "
                                                        r"have set Trainer\(max_epochs=2\).*Raise max_epochs"):
        _fit(_trainer(tmp_path, max_epochs=2), ckpt_path=tmp_path / "end.ckpt")
    _fit(trainer, ckpt_path="best")  # continues from the end of the best epoch
    assert trainer.ckpt_path == best

    trainer = _trainer(tmp_path, max_epochs=3)
    with pytest.warns(UserWarning, match=r"callbacks used to create the checkpoint need to be provided during `Trainer`"
                                         r" instantiation.*Please add the following callbacks: \[\"ModelCheckpoint"
                                         r"\{'monitor': 'val_loss'"):  # this Trainer has the default ModelCheckpoint
        _fit(trainer, ckpt_path=pathlib.Path(best))  # os.PathLike works
    assert trainer.ckpt_path == best and trainer.current_epoch == 3

    with pytest.raises(ValueError, match=r'ckpt_path="best"\)` is set but `ModelCheckpoint` is not configured'):
        _fit(_trainer(tmp_path, enable_checkpointing=False), ckpt_path="best")


class _Hostile:
    """Unpickling this runs a shell command: what a malicious checkpoint does."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_hostile_checkpoint_is_refused_by_fit_and_load_from_checkpoint(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "hostile.ckpt"
    torch.save({"state_dict": {}, "payload": _Hostile(marker)}, path)
    with pytest.raises(CheckpointError, match=r"Refused to load .*hostile\.ckpt: it references Python code .*"
                                              r"posix\.system.*Nothing in the file was executed"):
        _fit(_trainer(tmp_path), ckpt_path=path)
    with pytest.raises(CheckpointError, match="Refused to load"):
        run_training.Net.load_from_checkpoint(path)
    assert not marker.exists()


def test_truncated_checkpoint_error_names_the_file_and_the_fix(tmp_path):
    callback = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    _fit(_trainer(tmp_path, callbacks=[callback]))
    path = tmp_path / "ckpt" / "last.ckpt"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    message = rf"Checkpoint file {path} is damaged \(truncated or corrupt.*Resume from an earlier checkpoint"
    with pytest.raises(CheckpointError, match=message):
        _fit(_trainer(tmp_path), ckpt_path=path)
    with pytest.raises(CheckpointError, match=message):
        run_training.Net.load_from_checkpoint(path)


def test_every_checkpoint_volt_writes_loads_with_weights_only(tmp_path):
    with pytest.raises(SystemExit):  # a stop checkpoint too
        run_training.run(dict(root=str(tmp_path), max_epochs=2, save_everywhere=True, num_workers=2,
                              signal={"hook": "on_train_batch_start", "step": 8, "signum": "SIGTERM"}))
    paths = list((tmp_path / "all").glob("*.ckpt")) + list((tmp_path / "ckpt").glob("*.ckpt"))
    assert len(paths) > 10
    for path in paths:
        checkpoint = torch.load(path, weights_only=True)
        assert checkpoint["hyper_parameters"] == {"lr": 0.05}


def test_under_slurm_a_call_without_ckpt_path_restores_the_hpc_checkpoint(tmp_path, monkeypatch):
    """As Lightning: in a SLURM job step, `fit`/`validate` without ckpt_path restore the newest hpc_ckpt_<N>.ckpt of
    default_root_dir; a SLURM detection without SLURM_NTASKS (a wrapper's) is one task, not an error."""
    from volt.demos.boring_classes import BoringModel
    from volt.distributed.environments import SLURMEnvironment

    monkeypatch.setattr(SLURMEnvironment, "detect", staticmethod(lambda: True))
    monkeypatch.delenv("SLURM_NTASKS", raising=False)
    trainer = _trainer(tmp_path, max_steps=1, enable_checkpointing=False)
    trainer.fit(BoringModel())
    assert trainer.ckpt_path is None and trainer.world_size == 1
    trainer.save_checkpoint(tmp_path / "hpc_ckpt_3.ckpt")
    trainer.save_checkpoint(tmp_path / "hpc_ckpt_12.ckpt")
    trainer = _trainer(tmp_path, max_steps=2, enable_checkpointing=False)
    trainer.fit(BoringModel())
    assert trainer.ckpt_path == str(tmp_path / "hpc_ckpt_12.ckpt")
    trainer.validate(BoringModel())
    assert trainer.ckpt_path == str(tmp_path / "hpc_ckpt_12.ckpt")
    monkeypatch.setattr(SLURMEnvironment, "detect", staticmethod(lambda: False))
    trainer.validate(BoringModel())
    assert trainer.ckpt_path is None
