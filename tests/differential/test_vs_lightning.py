"""Differential tests: one LightningModule's code, run by pytorch-lightning 2.6.6 and by volt.

Same seed, same data, same model code (built on each framework's base class, see `scenarios.py`): the final weights
must agree to 1e-6 and the metrics (`trainer.callback_metrics` and every `log_metrics` call an in-memory Logger
receives: steps, keys, values) must agree. Where volt differs on purpose (see lightning-semantics.md, "volt differs"),
the test asserts the difference is exactly the documented one, against a hand-written PyTorch loop.
"""
import csv
import glob
import os

import pytest
import torch
from torch.testing import assert_close
from torch.utils.data import DataLoader

pytest.importorskip("pytorch_lightning")

from .scenarios import FRAMEWORKS, dataset, fit, framework, hand_loop, model_class  # noqa: E402

pytestmark = [
    pytest.mark.lightning,
    pytest.mark.filterwarnings("ignore:.*does not have many workers"),
    pytest.mark.filterwarnings("ignore:.*LeafSpec"),
    pytest.mark.filterwarnings("ignore:Be aware that when using `ckpt_path`"),  # resuming without the callbacks
]

EXACT = dict(atol=1e-6, rtol=0)


def fit_both(tmp_path, **kwargs):
    """(lightning_run, volt_run) for the same scenario, each in its own root folder."""
    return tuple(fit(name, tmp_path / name, **kwargs) for name in FRAMEWORKS)


def assert_same_weights(a, b):
    assert list(a) == list(b)
    assert_close(a, b, **EXACT)


def assert_same_records(lightning_records, volt_records):
    """Two lists of (step, metrics) logger calls agree: steps, keys and values."""
    assert [(step, sorted(metrics)) for step, metrics in volt_records] == \
        [(step, sorted(metrics)) for step, metrics in lightning_records]
    for (step, want), (_, got) in zip(lightning_records, volt_records):
        assert got == pytest.approx(want, abs=1e-6), f"step {step}"


def assert_same_metric_dict(lightning_metrics, volt_metrics, what):
    want = {k: float(v) for k, v in lightning_metrics.items()}
    assert {k: float(v) for k, v in volt_metrics.items()} == pytest.approx(want, abs=1e-6), what


def assert_same_metrics(lightning, volt):
    """The trainer's three metric dicts and the logger's records agree."""
    for what in ("callback_metrics", "logged_metrics", "progress_bar_metrics"):
        assert_same_metric_dict(getattr(lightning.trainer, what), getattr(volt.trainer, what), what)
    assert_same_records(lightning.logger.records, volt.logger.records)


def assert_same_run(lightning, volt):
    assert_same_weights(lightning.weights, volt.weights)
    assert_same_metrics(lightning, volt)
    assert (volt.trainer.global_step, volt.trainer.current_epoch) == \
        (lightning.trainer.global_step, lightning.trainer.current_epoch)


def weights_differ(a, b) -> bool:
    return any(not torch.allclose(a[k], b[k], atol=1e-6, rtol=0) for k in a)


# ---------------------------------------------------------------------- the training loop
def test_plain_training(tmp_path):
    lightning, volt = fit_both(tmp_path, model_kwargs=dict(hidden=6))
    assert_same_run(lightning, volt)
    assert len(volt.logger.records) == 20  # 16 steps, then val and train epoch values after each of 2 epochs
    assert volt.logger.hparams == lightning.logger.hparams == dict(
        lr=0.02, hidden=6, dropout=0.0, scheduler=None, manual=False, log_lr=False)


@pytest.mark.parametrize("accumulate", [1, 2])
def test_log_every_n_steps(tmp_path, accumulate):
    """Only every third optimizer step reaches the logger, but `logged_metrics` holds the latest values."""
    lightning, volt = fit_both(tmp_path, log_every_n_steps=3, accumulate_grad_batches=accumulate)
    assert_same_run(lightning, volt)
    assert len([m for _, m in volt.logger.records if "train_loss_step" in m]) == 16 // accumulate // 3


def test_accumulation_with_whole_windows_matches(tmp_path):
    lightning, volt = fit_both(tmp_path, accumulate_grad_batches=2)  # 8 batches: 4 windows of 2
    assert_same_run(lightning, volt)
    assert volt.trainer.global_step == 8


def test_accumulation_partial_window_is_divided_by_its_own_size(tmp_path):
    """8 batches with accumulate_grad_batches=3 leave a final window of k=2 batches. Lightning divides its loss by
    N=3 (so that window's gradient is 2/3 of a mean; Lightning issue #19987); volt divides by k=2 on purpose."""
    lightning, volt = fit_both(tmp_path, accumulate_grad_batches=3)
    assert_close(lightning.weights, hand_loop("lightning", accumulate=3, partial_divisor="N"), **EXACT)
    assert_close(volt.weights, hand_loop("volt", accumulate=3, partial_divisor="k"), **EXACT)
    assert weights_differ(lightning.weights, volt.weights)
    assert volt.trainer.global_step == lightning.trainer.global_step == 6
    # the first window of the first epoch is the same in both, so its logged step losses agree
    assert_same_records(lightning.logger.records[:3], volt.logger.records[:3])


@pytest.mark.parametrize("clip", [dict(gradient_clip_val=0.1), dict(gradient_clip_val=0.01,
                                                                   gradient_clip_algorithm="value")])
def test_gradient_clipping(tmp_path, clip):
    lightning, volt = fit_both(tmp_path, **clip)
    assert_same_run(lightning, volt)
    assert weights_differ(volt.weights, fit("volt", tmp_path / "unclipped").weights)  # the clipping did bite


@pytest.mark.parametrize("scheduler", ["step_epoch", "step_epoch_freq2", "onecycle_step", "onecycle_step_freq2",
                                       "plateau"])
def test_lr_schedulers(tmp_path, scheduler):
    """StepLR per epoch, OneCycleLR per step (each also at frequency 2), ReduceLROnPlateau on val_loss; the
    learning rate is logged every step, so the whole schedule is compared."""
    lightning, volt = fit_both(tmp_path, max_epochs=3, model_kwargs=dict(scheduler=scheduler, log_lr=True))
    assert_same_run(lightning, volt)
    final_lr = volt.trainer.optimizers[0].param_groups[0]["lr"]
    assert final_lr == lightning.trainer.optimizers[0].param_groups[0]["lr"]
    assert len({metrics["lr"] for _, metrics in volt.logger.records if "lr" in metrics}) > 1


@pytest.mark.parametrize("max_steps", [5, 11])
def test_max_steps(tmp_path, max_steps):
    lightning, volt = fit_both(tmp_path, max_steps=max_steps, max_epochs=None)
    assert_same_run(lightning, volt)
    assert volt.trainer.global_step == max_steps


@pytest.mark.parametrize("interval", [dict(val_check_interval=0.5), dict(val_check_interval=3),
                                      dict(val_check_interval=5, check_val_every_n_epoch=None)])
def test_val_check_interval(tmp_path, interval):
    lightning, volt = fit_both(tmp_path, **interval)
    assert_same_run(lightning, volt)
    assert sum("val_loss" in metrics for _, metrics in volt.logger.records) > 2  # validated inside epochs


@pytest.mark.parametrize("timing", [dict(), dict(val_check_interval=0.5)])
def test_early_stopping(tmp_path, timing):
    """mode="max" on a falling val_loss: no check after the first improves, so patience=2 stops the run early
    (at epoch end, or at a mid-epoch validation end with val_check_interval)."""
    lightning, volt = fit_both(tmp_path, max_epochs=10, **timing, callbacks=lambda pl: [
        pl.callbacks.EarlyStopping("val_loss", mode="max", patience=2)])
    assert_same_run(lightning, volt)
    stop_l, stop_v = lightning.trainer.early_stopping_callback, volt.trainer.early_stopping_callback
    assert (stop_v.stopped_epoch, stop_v.wait_count) == (stop_l.stopped_epoch, stop_l.wait_count)
    assert float(stop_v.best_score) == pytest.approx(float(stop_l.best_score), abs=1e-6)
    assert volt.trainer.current_epoch < 10


@pytest.mark.parametrize("limits", [dict(limit_train_batches=0.5, limit_val_batches=2),
                                    dict(limit_train_batches=3, limit_val_batches=0.5)])
def test_limit_batches(tmp_path, limits):
    lightning, volt = fit_both(tmp_path, **limits)
    assert_same_run(lightning, volt)
    assert volt.trainer.num_training_batches == lightning.trainer.num_training_batches


def test_manual_optimization_with_two_optimizers(tmp_path):
    lightning, volt = fit_both(tmp_path, model_kwargs=dict(manual=True))
    assert_same_run(lightning, volt)
    assert volt.trainer.global_step == 32  # each optimizer.step() counts: 2 per batch


def _shuffled(generator: bool):
    def data():
        order = torch.Generator().manual_seed(7) if generator else None
        return (DataLoader(dataset(32), batch_size=4, shuffle=True, generator=order),
                DataLoader(dataset(16, seed=99), batch_size=4))
    return data


@pytest.mark.parametrize("case", ["sanity_check", "no_sanity_check", "mid_epoch_validation",
                                  "shuffle_generator", "shuffle_global_rng"])
def test_dropout_consumes_the_global_rng_identically(tmp_path, case):
    """With dropout the weights depend on every draw from the global torch RNG, so equal weights and an equal
    RNG state after fit mean both frameworks draw the same numbers at the same points. Both run the sanity check
    under an isolated RNG, and each `iter(DataLoader)` draws its base seed (and a RandomSampler without a
    generator its order seed) from the global RNG, once per epoch for training and once per validation run."""
    options = {"no_sanity_check": dict(num_sanity_val_steps=0), "mid_epoch_validation": dict(val_check_interval=0.5)}
    data = {"shuffle_generator": _shuffled(True), "shuffle_global_rng": _shuffled(False)}.get(case)
    runs, rng_after = [], []
    for name in FRAMEWORKS:
        runs.append(fit(name, tmp_path / name, model_kwargs=dict(dropout=0.5), data=data() if data else None,
                        **options.get(case, {})))
        rng_after.append(torch.get_rng_state())
    assert_same_run(*runs)
    assert torch.equal(*rng_after)
    assert weights_differ(runs[1].weights, fit("volt", tmp_path / "no_dropout").weights)


class _Augmented(torch.utils.data.Dataset):
    """Every sample draws from torch, numpy and `random`, as random augmentations do."""

    def __len__(self):
        return 12

    def __getitem__(self, i):
        import random

        import numpy as np

        return torch.tensor([float(i), torch.rand(()).item(), float(np.random.rand()), random.random()])


def _drawn_in_workers(name, root, seed_workers, generator):
    """The batches `training_step` sees over two epochs of 2-worker loading, with framework `name`."""
    pl = framework(name)
    seen = []

    class Model(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.layer = torch.nn.Linear(4, 1)

        def training_step(self, batch, batch_idx):
            seen.append(batch)
            return self.layer(batch).sum()

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.0)

    pl.seed_everything(5, workers=seed_workers, verbose=False)
    loader = DataLoader(_Augmented(), batch_size=3, shuffle=True, num_workers=2,
                        generator=torch.Generator().manual_seed(9) if generator else None)
    trainer = pl.Trainer(default_root_dir=root, max_epochs=2, logger=False, enable_checkpointing=False,
                         accelerator="cpu", devices=1, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(Model(), loader)
    return torch.cat(seen)


@pytest.mark.parametrize("seed_workers, generator", [(False, False), (True, False), (True, True)])
def test_worker_processes_draw_the_same_augmentations(tmp_path, monkeypatch, seed_workers, generator):
    """A dataset drawing from torch, numpy and `random` in 2 worker processes: the same order and the same drawn
    values, with PyTorch's worker seeding, with `seed_everything(workers=True)`, and with a loader generator."""
    monkeypatch.delenv("PL_GLOBAL_SEED", raising=False)
    monkeypatch.delenv("PL_SEED_WORKERS", raising=False)
    lightning, volt = (_drawn_in_workers(name, tmp_path / name, seed_workers, generator) for name in FRAMEWORKS)
    assert lightning.shape == (24, 4) and len(set(lightning[:, 1].tolist())) == 24  # fresh draws every epoch
    assert torch.equal(volt, lightning)


def test_16_mixed_on_cpu_is_real_fp16_in_volt(tmp_path):
    """Deliberate difference: on CPU, Lightning turns precision="16-mixed" into "bf16-mixed" with a warning; volt
    runs what was asked, fp16 autocast with a GradScaler (torch supports both on CPU). Each framework's weights
    equal a hand-written loop of its own kind, and the two differ."""
    with pytest.warns(UserWarning, match="AMP with fp16 is not supported on CPU"):
        lightning = fit("lightning", tmp_path / "lightning", precision="16-mixed")
    volt = fit("volt", tmp_path / "volt", precision="16-mixed")
    assert lightning.trainer.precision == "bf16-mixed"
    assert volt.trainer.precision == "16-mixed"
    assert isinstance(volt.trainer.scaler, torch.amp.GradScaler)
    assert_close(lightning.weights, hand_loop("lightning", autocast_dtype=torch.bfloat16), **EXACT)
    assert_close(volt.weights, hand_loop("volt", autocast_dtype=torch.float16), **EXACT)
    assert weights_differ(lightning.weights, volt.weights)


# ---------------------------------------------------------------------- files: logs and checkpoints
def _files(root) -> list:
    """Files under `root`, relative, with the TensorBoard events file name (time, host, pid) reduced."""
    names = []
    for path in glob.glob(os.path.join(root, "**", "*"), recursive=True):
        if os.path.isfile(path):
            rel = os.path.relpath(path, root)
            head, base = os.path.split(rel)
            names.append(os.path.join(head, "events.out.tfevents.*") if base.startswith("events.out.tfevents.")
                         else rel)
    return sorted(names)


def _scalars(log_dir) -> dict:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(log_dir)
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def test_default_logger_and_checkpoint_layout(tmp_path):
    """Trainer defaults (TensorBoard logger, ModelCheckpoint()): the same files, hparams.yaml, scalars, checkpoint
    name and checkpoint keys. volt's checkpoint has one extra top-level key, `volt_version`; the loop state volt
    needs for exact resume lives inside `loops`."""
    import yaml

    runs = {}
    for name in FRAMEWORKS:
        runs[name] = fit(name, tmp_path / name, memory=False, enable_checkpointing=True,
                         model_kwargs=dict(hidden=6))
    expected = ["lightning_logs/version_0/checkpoints/epoch=1-step=16.ckpt",
                "lightning_logs/version_0/events.out.tfevents.*", "lightning_logs/version_0/hparams.yaml"]
    assert _files(tmp_path / "lightning") == _files(tmp_path / "volt") == expected
    assert runs["volt"].trainer.log_dir == str(tmp_path / "volt" / "lightning_logs" / "version_0")

    log_dirs = {name: tmp_path / name / "lightning_logs" / "version_0" for name in FRAMEWORKS}
    hparams = [yaml.safe_load((log_dirs[name] / "hparams.yaml").read_text()) for name in FRAMEWORKS]
    assert hparams[0] == hparams[1] and hparams[1]["hidden"] == 6
    scalars = [_scalars(str(log_dirs[name])) for name in FRAMEWORKS]
    assert sorted(scalars[1]) == sorted(scalars[0])
    for tag, points in scalars[0].items():  # the same steps exactly, the same values to 1e-6
        assert [step for step, _ in scalars[1][tag]] == [step for step, _ in points], tag
        assert [value for _, value in scalars[1][tag]] == pytest.approx([value for _, value in points], abs=1e-6), tag

    lightning_ckpt, volt_ckpt = (torch.load(log_dirs[name] / "checkpoints" / "epoch=1-step=16.ckpt",
                                            weights_only=False) for name in FRAMEWORKS)
    assert set(volt_ckpt) == set(lightning_ckpt) | {"volt_version"}
    for key in ("epoch", "global_step", "hparams_name", "hyper_parameters", "pytorch-lightning_version"):
        assert volt_ckpt[key] == lightning_ckpt[key], key
    assert list(volt_ckpt["callbacks"]) == list(lightning_ckpt["callbacks"])
    assert_close(volt_ckpt["state_dict"], lightning_ckpt["state_dict"], **EXACT)


def test_csv_logger_versions_and_metrics(tmp_path):
    def read(path):
        with open(path, newline="") as f:
            return list(csv.reader(f))

    for name in FRAMEWORKS:
        for _ in range(2):
            fit(name, tmp_path / name, memory=False,
                logger=framework(name).loggers.CSVLogger(str(tmp_path / name)))
    assert _files(tmp_path / "lightning") == _files(tmp_path / "volt") == [
        f"lightning_logs/version_{v}/{f}" for v in (0, 1) for f in ("hparams.yaml", "metrics.csv")]
    rows = [read(tmp_path / name / "lightning_logs" / "version_1" / "metrics.csv") for name in FRAMEWORKS]
    assert rows[1][0] == rows[0][0] == ["epoch", "step", "train_loss_epoch", "train_loss_step", "val_loss"]
    assert len(rows[1]) == len(rows[0])
    for want, got in zip(rows[0][1:], rows[1][1:]):
        assert [c == "" for c in got] == [c == "" for c in want]
        assert [float(c) for c in got if c] == pytest.approx([float(c) for c in want if c], abs=1e-6)


def test_volt_checkpoint_loads_in_lightning(tmp_path):
    volt = fit("volt", tmp_path, enable_checkpointing=True, model_kwargs=dict(hidden=6, scheduler="step_epoch"))
    path = volt.trainer.checkpoint_callback.best_model_path
    assert path.endswith(os.path.join("memory", "version_0", "checkpoints", "epoch=1-step=16.ckpt"))
    restored = model_class("lightning").load_from_checkpoint(path)
    assert dict(restored.hparams) == dict(volt.model.hparams)
    assert restored.hparams.hidden == 6
    assert_close(restored.state_dict(), volt.weights, **EXACT)


def test_lightning_checkpoint_loads_and_resumes_in_volt(tmp_path):
    """A Lightning checkpoint taken at the end of epoch 0 rebuilds the model in volt, and volt's
    fit(ckpt_path=...) continues from it (weights, momentum, scheduler, counters) to the same end as Lightning's
    uninterrupted run and as Lightning's own resume."""
    options = dict(model_kwargs=dict(hidden=6, scheduler="step_epoch"))
    lightning = fit("lightning", tmp_path / "full", enable_checkpointing=True,
                    callbacks=lambda pl: [pl.callbacks.ModelCheckpoint(save_top_k=-1)], **options)
    path = os.path.join(lightning.trainer.checkpoint_callback.dirpath, "epoch=0-step=8.ckpt")

    restored = model_class("volt").load_from_checkpoint(path)
    assert restored.hparams.hidden == 6 and restored.hparams.scheduler == "step_epoch"
    assert_close(restored.state_dict(), torch.load(path, weights_only=False)["state_dict"], **EXACT)

    volt = fit("volt", tmp_path / "volt_resumed", ckpt_path=path, **options)
    lightning_resumed = fit("lightning", tmp_path / "lightning_resumed", ckpt_path=path, **options)
    assert_same_weights(lightning.weights, volt.weights)
    assert_same_run(lightning_resumed, volt)
    assert volt.logger.records[0][0] == 8  # logging continues at the restored step
    assert volt.trainer.optimizers[0].param_groups[0]["lr"] == lightning.trainer.optimizers[0].param_groups[0]["lr"]


@pytest.mark.filterwarnings("ignore:You're resuming from a checkpoint that ended before the epoch ended")
@pytest.mark.parametrize("name", ["epoch=0-step=3.ckpt", "epoch=1-step=12.ckpt"])
def test_mid_epoch_lightning_checkpoint_resumes_as_lightning_does(tmp_path, name):
    """A Lightning checkpoint taken inside an epoch (every_n_train_steps=3): volt continues that epoch with the
    same batch counts, steps, logging and weights as Lightning's own resume (both draw the rest of the epoch
    from the loader's start, since a Lightning checkpoint holds no sampler position)."""
    options = dict(val_check_interval=0.5, model_kwargs=dict(scheduler="onecycle_step"))
    first = fit("lightning", tmp_path / "first", enable_checkpointing=True, callbacks=lambda pl: [
        pl.callbacks.ModelCheckpoint(save_top_k=-1, every_n_train_steps=3)], **options)
    path = os.path.join(first.trainer.checkpoint_callback.dirpath, name)
    lightning, volt = (fit(n, tmp_path / n, ckpt_path=path, **options) for n in FRAMEWORKS)
    assert_same_run(lightning, volt)
    assert volt.logger.records[0][0] == int(name.split("step=")[1].split(".")[0])


def test_lightning_resumes_a_volt_checkpoint_at_the_next_epoch(tmp_path):
    """volt writes Lightning's progress counters in `loops` beside its own cursor (it restarted at epoch 0)."""
    volt = fit("volt", tmp_path / "volt", enable_checkpointing=True,
               callbacks=lambda pl: [pl.callbacks.ModelCheckpoint(save_top_k=-1)])
    path = os.path.join(volt.trainer.checkpoint_callback.dirpath, "epoch=0-step=8.ckpt")
    lightning = fit("lightning", tmp_path / "lightning", ckpt_path=path)
    assert lightning.logger.records[0][0] == 8
    assert_same_weights(volt.weights, lightning.weights)
