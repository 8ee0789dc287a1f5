"""Exact resume: a run resumed from any checkpoint ends bit-identical to a run never interrupted.

"Bit-identical" covers every parameter, the optimizer state (momentum buffers, learning rates), the schedulers,
the GradScaler, EarlyStopping's counters, the global RNG states at the end, `callback_metrics`/`logged_metrics`,
and the metrics.csv the logger wrote. The training run (run_training.py) draws randomness everywhere it can.
"""
import copy
import csv
import glob
import os
import random
import shutil
import signal
from datetime import timedelta

import numpy as np
import pytest
import torch

from . import run_training
from .harness import assert_same, load_final, read_text, run_script

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

METRICS = os.path.join("logs", "version_0", "metrics.csv")


def _resume_from_each(tmp_path, **cfg):
    """Train once writing a checkpoint at every point a ModelCheckpoint can save (each batch end, also inside
    accumulation windows, each validation end and epoch end); resume from each; compare with the full run."""
    reference = tmp_path / "reference"
    run_training.run(dict(root=str(reference), save_everywhere=True, **cfg))
    expected, expected_log = load_final(reference), read_text(reference / METRICS)
    # each resumed run has its own folder, so ModelCheckpoint drops the rankings of the reference's folder;
    # the killed-run tests below, which resume in place, compare them
    del expected["checkpoints"]
    checkpoints = sorted(glob.glob(str(reference / "all" / "*.ckpt")))
    assert len(checkpoints) > 10
    for path in checkpoints:
        root = tmp_path / os.path.basename(path)
        # the resumed run logs into a copy of the interrupted run's log, which holds points past the checkpoint
        shutil.copytree(reference / "logs", root / "logs")
        run_training.run(dict(root=str(root), ckpt_path=path, **cfg))
        resumed = load_final(root)
        del resumed["checkpoints"]
        assert_same(resumed, expected, where=os.path.basename(path))
        assert read_text(root / METRICS) == expected_log, f"metrics.csv differs after resuming from {path}"
    return checkpoints


def test_resume_from_every_checkpoint(tmp_path):
    """Shuffled loader without a generator, dropout, numpy and `random` in the model and the dataset, step and
    epoch schedulers, three epochs: every batch end, validation end and epoch end resumes exactly."""
    checkpoints = _resume_from_each(tmp_path)
    names = [os.path.basename(p) for p in checkpoints]
    assert any("-val-" in n for n in names) and any("-epochend-" in n for n in names)


def test_resume_inside_accumulation_and_after_in_epoch_validation(tmp_path):
    """accumulate_grad_batches=3 (checkpoints inside a window keep the summed gradients), validation twice per
    epoch, fp16 autocast with a GradScaler, and EarlyStopping, whose stop must survive the resume too."""
    _resume_from_each(tmp_path, accumulate=3, val_check_interval=0.5, precision="16-mixed", max_epochs=4,
                      early_stopping={"patience": 1, "min_delta": 0.2})  # stops at the second epoch's validation


def test_resume_with_worker_processes(tmp_path):
    """num_workers=2 with persistent workers: the dataset's randomness runs in the workers."""
    _resume_from_each(tmp_path, num_workers=2, persistent_workers=True, n=16, max_epochs=2, val_check_interval=0.5)


def test_resume_with_worker_streams_seeded_as_in_lightning(tmp_path):
    """num_workers=2, workers started each epoch, a loader generator and `seed_everything(workers=True)`: each
    worker draws from its own stream, as in Lightning, and a mid-epoch resume makes the new workers replay the
    consumed batches of the streams they continue."""
    _resume_from_each(tmp_path, num_workers=2, generator=True, seed_workers=True, n=16, max_epochs=2)


class _Draws(torch.utils.data.Dataset):
    def __len__(self):
        return 10

    def __getitem__(self, i):
        return torch.tensor([float(i), torch.rand(()).item(), float(np.random.rand()), random.random()])


@pytest.mark.parametrize("seed_workers", ["0", "1"])
def test_resumed_workers_continue_the_streams_of_the_interrupted_ones(monkeypatch, seed_workers):
    """After k consumed batches, the resumed epoch gives batch k to worker 0, which fetched batches 0, 2, 4 ... in
    the interrupted run only when k is even: resumed batches match whatever k, with PyTorch's worker seeding or
    Lightning's (`seed_everything(workers=True)`)."""
    from volt.trainer.data import resumable_sampler, wrap_loader
    from volt.utilities.seed import get_rng_states, set_rng_states

    monkeypatch.setenv("PL_SEED_WORKERS", seed_workers)

    def loader():
        return wrap_loader(torch.utils.data.DataLoader(_Draws(), batch_size=2, shuffle=True, num_workers=2,
                                                       generator=torch.Generator().manual_seed(3)))

    torch.manual_seed(0)
    interrupted, epoch_rng = loader(), get_rng_states()
    expected = list(interrupted)
    order_rng = resumable_sampler(interrupted).order_rng
    for skip in (1, 2, 3):
        resumed = loader()
        set_rng_states(epoch_rng)
        resumable_sampler(resumed).resume(skip, copy.deepcopy(order_rng))
        got = list(resumed)
        assert len(got) == len(expected) - skip
        assert all(torch.equal(a, b) for a, b in zip(got, expected[skip:])), f"resumed after {skip} batches"


def test_resume_with_a_loader_generator(tmp_path):
    """`DataLoader(shuffle=True, generator=g)`: the order comes from the loader's generator, whose state is
    replayed as well."""
    _resume_from_each(tmp_path, generator=True, num_workers=2, persistent_workers=True, n=16, max_epochs=2)


# Callbacks with state of their own: a weight average, a fine-tuning schedule, an accumulation schedule. 12 samples
# (3 batches an epoch) keep the number of checkpoints, each resumed once, small.
def test_resume_with_ema_and_an_accumulation_schedule(tmp_path):
    """EMAWeightAveraging (validation on the average, the average in checkpoints) with a
    GradientAccumulationScheduler going 1 -> 2 -> 3 batches: checkpoints inside accumulation windows, at validation
    and epoch ends resume to the same weights, average and optimizer state."""
    checkpoints = _resume_from_each(tmp_path, n=12, callbacks={
        "EMAWeightAveraging": {"decay": 0.8}, "GradientAccumulationScheduler": {"scheduling": {1: 2, 2: 3}}})
    saved = torch.load(checkpoints[-1], weights_only=True)
    assert set(saved) >= {"current_model_state", "averaging_state"}  # Lightning's layout


def test_resume_with_swa_and_batchnorm(tmp_path, one_torch_thread):
    """StochasticWeightAveraging from the second epoch (SWALR replacing the epoch scheduler) on a model with
    BatchNorm: every checkpoint, including the last one, resumes to the same average, the same recomputed
    BatchNorm statistics and the same learning rate."""
    _resume_from_each(tmp_path, n=12, batchnorm=True, schedulers=["epoch"], callbacks={
        "StochasticWeightAveraging": {"swa_lrs": 0.01, "swa_epoch_start": 2, "annealing_epochs": 1}})


def test_resume_with_backbone_finetuning(tmp_path):
    """BackboneFinetuning unfreezing the first layer at the second epoch: a resumed run has the same optimizer
    parameter groups, trainable parameters and backbone learning rate schedule (Lightning's resumed run leaves the
    backbone frozen)."""
    _resume_from_each(tmp_path, n=12, callbacks={
        "BackboneFinetuning": {"unfreeze_backbone_at_epoch": 1, "backbone_initial_lr": 0.01}})


def test_worker_randomness_differs_between_epochs_without_other_randomness():
    """Augmentations are fresh every epoch, even when nothing else draws from the global RNG (no shuffling, no
    dropout): each epoch's workers get a new base seed."""
    from volt.trainer.data import wrap_loader

    class Random(torch.utils.data.Dataset):
        def __len__(self):
            return 8

        def __getitem__(self, i):
            return torch.rand(())

    loader = wrap_loader(torch.utils.data.DataLoader(Random(), batch_size=4, num_workers=2))
    first, second = torch.cat(list(loader)), torch.cat(list(loader))
    assert len(set(first.tolist()) | set(second.tolist())) == 16


def test_resume_iterable_dataset_replays(tmp_path):
    """An IterableDataset has no sampler to skip in: the consumed batches are replayed (loaded and dropped), which
    reproduces the stream exactly (its randomness comes from a generator seeded when iteration starts)."""
    _resume_from_each(tmp_path, iterable=True, accumulate=2, max_epochs=2)


def test_time_triggered_checkpoints_resume_exactly(tmp_path):
    """ModelCheckpoint(train_time_interval=...) saves where the clock says; those files resume exactly too."""
    cfg = dict(max_epochs=2, checkpoint={"train_time_interval": timedelta(0), "save_top_k": -1, "filename": "{step}"})
    run_training.run(dict(root=str(tmp_path / "reference"), **cfg))
    expected = load_final(tmp_path / "reference")
    for step in (2, 6, 9):  # inside the first epoch, at its end, inside the second
        root = tmp_path / f"from-{step}"
        run_training.run(dict(root=str(root), ckpt_path=str(tmp_path / "reference" / "ckpt" / f"step={step}.ckpt"),
                              **cfg))
        assert_same(load_final(root)["params"], expected["params"])
        assert_same(load_final(root)["optimizer"], expected["optimizer"])


def test_resume_skips_consumed_batches_without_loading_them(tmp_path, monkeypatch):
    """Map-style data: resuming in the middle of an epoch loads only the batches that are left."""
    run_training.run(dict(root=str(tmp_path / "a"), max_epochs=1, save_everywhere=True))
    checkpoint = glob.glob(str(tmp_path / "a" / "all" / "003-batch3-*.ckpt"))[0]
    loaded = []

    class Counting(run_training.NoisyData):
        def __getitem__(self, i):
            if len(self) == 24:  # the training set (validation uses 8 samples)
                loaded.append(i)
            return super().__getitem__(i)

    monkeypatch.setattr(run_training, "NoisyData", Counting)
    run_training.run(dict(root=str(tmp_path / "b"), max_epochs=1, ckpt_path=checkpoint))
    assert len(loaded) == 2 * 4  # batches 4 and 5 of 6, four samples each


# ---------------------------------------------------------------------------------------------- killed runs

# 4 epochs of 8 batches, 4 optimizer steps each; validation after every 4 batches; EarlyStopping stops the run
# in its last epoch (global step 14). ModelCheckpoint keeps the best 2 by val_loss every 2 steps, and last.ckpt.
KILLED_CONFIG = dict(n=32, max_epochs=4, num_workers=2, accumulate=2, val_check_interval=0.5, precision="16-mixed",
                     early_stopping={"patience": 1, "min_delta": 0.2},
                     checkpoint={"every_n_train_steps": 2, "save_last": True, "save_top_k": 2, "monitor": "val_loss"})


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("reference")
    result = run_script(dict(root=str(root), **KILLED_CONFIG))
    assert result.returncode == 0, result.stderr
    return root


@pytest.mark.parametrize("kill, logged_past_checkpoint", [
    ({"hook": "on_before_optimizer_step", "step": 3}, True),  # first epoch, in the middle of an optimizer step
    ({"hook": "on_validation_batch_end", "step": 10}, True),  # a later epoch, inside the in-epoch validation
    ({"hook": "on_train_epoch_start", "step": 12}, False),  # between epochs
], ids=["first-epoch-mid-step", "later-epoch-in-validation", "epoch-start"])
def test_sigkill_then_resume_from_last(tmp_path, reference_run, kill, logged_past_checkpoint):
    """SIGKILL at a chosen point (nothing gets to clean up), then `fit(ckpt_path="last")` in a new process: the
    same weights, optimizer state, scaler, EarlyStopping and ModelCheckpoint state, the same checkpoint files, RNG
    and metrics.csv as the run never killed."""
    cfg = dict(root=str(tmp_path), **KILLED_CONFIG)
    killed = run_script(dict(cfg, signal=kill))
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert not os.path.exists(tmp_path / "final.pt")
    last = torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=True)
    logged_steps = [int(row["step"]) for row in csv.DictReader(open(tmp_path / METRICS))]
    marker_step = last["loops"]["fit_loop"]["loggers"][0]["step"]
    assert (max(logged_steps) > marker_step) == logged_past_checkpoint  # points the resumed run must replace

    resumed = run_script(dict(cfg, ckpt_path="last"))
    assert resumed.returncode == 0, resumed.stderr
    assert_same(load_final(tmp_path), load_final(reference_run))
    assert read_text(tmp_path / METRICS) == read_text(reference_run / METRICS)
    for path in glob.glob(str(tmp_path / "ckpt" / "*.ckpt")):  # every file ModelCheckpoint left loads safely
        torch.load(path, weights_only=True)
