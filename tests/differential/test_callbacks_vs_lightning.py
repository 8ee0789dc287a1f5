"""Differential tests of the averaging, accumulation and fine-tuning callbacks: one model's code run by
pytorch-lightning 2.6.6 and by volt, with each framework's own callback; the weights must agree.

volt differs from Lightning on purpose in one place (stochastic_weight_avg.py): with BatchNorm layers, Lightning's
extra epoch ends with one more optimizer step on stale gradients, so its model ends near, not at, the average. volt
ends exactly at the average, with the same BatchNorm statistics as Lightning's pass; the test asserts both.
"""
import importlib

import pytest
import torch
from torch.testing import assert_close
from torch.utils.data import DataLoader, TensorDataset

pytestmark = [pytest.mark.lightning, pytest.mark.filterwarnings("ignore::UserWarning")]

EXACT = dict(atol=0, rtol=0)


def module_class(pl, batchnorm: bool = False, scheduler: bool = False, backbone_lr: bool = False):
    """Linear -> (BatchNorm) -> ReLU -> Linear regression on `pl`'s LightningModule; `backbone` is the first layer."""

    class Net(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.backbone = torch.nn.Sequential(torch.nn.Linear(4, 8),
                                                torch.nn.BatchNorm1d(8) if batchnorm else torch.nn.Identity())
            self.head = torch.nn.Linear(8, 1)

        def forward(self, x):
            return self.head(torch.relu(self.backbone(x)))

        def training_step(self, batch, batch_idx):
            loss = torch.nn.functional.mse_loss(self(batch[0]), batch[1])
            self.log("train_loss", loss)
            return loss

        def validation_step(self, batch, batch_idx):
            self.log("val_loss", torch.nn.functional.mse_loss(self(batch[0]), batch[1]))

        def configure_optimizers(self):
            params = [p for p in self.parameters() if p.requires_grad]
            optimizer = torch.optim.SGD(params, lr=0.05, momentum=0.9)
            if not scheduler:
                return optimizer
            return [optimizer], [torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.7)]

    return Net


def fit(name, tmp_path, callbacks, *, model_options=None, validate=False, **trainer_options):
    """Seeded fit of the Net with `callbacks(pl)`; returns (model, callbacks, trainer)."""
    pl = importlib.import_module({"lightning": "pytorch_lightning", "volt": "volt"}[name])
    pl.seed_everything(3, verbose=False)
    model = module_class(pl, **(model_options or {}))()
    made = callbacks(pl)
    options = dict(max_epochs=4, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                   enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                   default_root_dir=str(tmp_path / name))
    options.update(trainer_options)
    trainer = pl.Trainer(callbacks=made, **options)
    generator = torch.Generator().manual_seed(0)
    data = TensorDataset(torch.randn(32, 4, generator=generator), torch.randn(32, 1, generator=generator))
    train = DataLoader(data, batch_size=4, shuffle=True)  # both frameworks draw the order from the global RNG
    val = DataLoader(data, batch_size=8) if validate else None
    trainer.fit(model, train, val)
    return model, made, trainer


def both(tmp_path, callbacks, **options):
    return fit("lightning", tmp_path, callbacks, **options), fit("volt", tmp_path, callbacks, **options)


def state(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def test_swa_same_average_and_schedule(quiet_lightning, tmp_path):
    """SWA from the second epoch, the model's StepLR swapped for SWALR (cosine): the same averaged weights, which
    both frameworks put into the model at the end, and the same learning rates."""
    def callbacks(pl):
        return [pl.callbacks.StochasticWeightAveraging(swa_lrs=0.02, swa_epoch_start=2, annealing_epochs=2)]

    (pl_model, pl_cbs, pl_trainer), (model, cbs, trainer) = both(tmp_path, callbacks,
                                                                  model_options=dict(scheduler=True))
    assert_close(state(model), state(pl_model), **EXACT)
    assert_close(state(cbs[0]._average_model), state(pl_cbs[0]._average_model), **EXACT)
    assert int(cbs[0].n_averaged) == int(pl_cbs[0].n_averaged) == 3
    assert [g["lr"] for g in trainer.optimizers[0].param_groups] == \
        [g["lr"] for g in pl_trainer.optimizers[0].param_groups]
    assert (trainer.current_epoch, trainer.global_step) == (pl_trainer.current_epoch, pl_trainer.global_step)


def test_swa_with_batchnorm_ends_exactly_at_the_average(quiet_lightning, tmp_path, one_torch_thread):
    """With BatchNorm: volt's model is exactly Lightning's average, with Lightning's recomputed BatchNorm
    statistics; Lightning's own model is one stale optimizer step off it (the documented difference)."""
    def callbacks(pl):
        return [pl.callbacks.StochasticWeightAveraging(swa_lrs=0.02, swa_epoch_start=3, annealing_strategy="linear",
                                                       annealing_epochs=1)]

    (pl_model, pl_cbs, pl_trainer), (model, cbs, trainer) = both(tmp_path, callbacks,
                                                                  model_options=dict(batchnorm=True))
    average = dict(pl_cbs[0]._average_model.named_parameters())
    for name, param in model.named_parameters():
        assert torch.equal(param, average[name]), name
    for name, buffer in model.named_buffers():
        assert torch.equal(buffer, dict(pl_model.named_buffers())[name]), name
    assert any(not torch.equal(p, average[n]) for n, p in pl_model.named_parameters())
    assert (trainer.current_epoch, trainer.global_step) == (4, 32)
    assert (pl_trainer.current_epoch, pl_trainer.global_step) == (5, 33)  # Lightning's extra epoch and step
    assert model.backbone[1].momentum == 0.1  # restored after the cumulative-average pass


def test_ema_same_average_and_validation_on_it(quiet_lightning, tmp_path, one_torch_thread):
    """EMAWeightAveraging with accumulation, BatchNorm buffers averaged, updates from the second step on: the same
    final (averaged) weights, the same average, and the same validation loss, measured on the average."""
    def callbacks(pl):
        return [pl.callbacks.EMAWeightAveraging(decay=0.7, update_starting_at_step=1)]

    (pl_model, pl_cbs, pl_trainer), (model, cbs, trainer) = both(
        tmp_path, callbacks, model_options=dict(batchnorm=True), validate=True, accumulate_grad_batches=2)
    assert_close(state(model), state(pl_model), **EXACT)
    assert_close(state(cbs[0]._average_model), state(pl_cbs[0]._average_model), **EXACT)
    assert_close(trainer.callback_metrics["val_loss"], pl_trainer.callback_metrics["val_loss"], **EXACT)


def test_weight_averaging_on_epochs(quiet_lightning, tmp_path):
    """A WeightAveraging subclass that averages at epoch ends only (equal weights): the same weights."""
    def callbacks(pl):
        class EpochAverage(pl.callbacks.WeightAveraging):
            def should_update(self, step_idx=None, epoch_idx=None):
                return epoch_idx is not None and epoch_idx >= 1

        return [EpochAverage(use_buffers=False)]

    (pl_model, pl_cbs, _), (model, cbs, _) = both(tmp_path, callbacks)
    assert_close(state(model), state(pl_model), **EXACT)
    assert int(cbs[0]._average_model.n_averaged) == int(pl_cbs[0]._average_model.n_averaged) == 3


def test_gradient_accumulation_scheduler_same_weights(quiet_lightning, tmp_path):
    """Factors 1, 2, then 4 from the third epoch (8 batches an epoch: whole windows, where both frameworks divide
    the loss alike): the same weights and optimizer steps."""
    def callbacks(pl):
        return [pl.callbacks.GradientAccumulationScheduler({1: 2, 2: 4})]

    (pl_model, _, pl_trainer), (model, _, trainer) = both(tmp_path, callbacks)
    assert_close(state(model), state(pl_model), **EXACT)
    assert trainer.global_step == pl_trainer.global_step == 8 + 4 + 2 + 2
    assert trainer.accumulate_grad_batches == pl_trainer.accumulate_grad_batches == 4


def test_backbone_finetuning_same_weights_and_groups(quiet_lightning, tmp_path):
    """BackboneFinetuning unfreezing at the second epoch, its learning rate doubling each epoch up to the head's:
    the same weights and the same parameter groups."""
    def callbacks(pl):
        return [pl.callbacks.BackboneFinetuning(unfreeze_backbone_at_epoch=1, backbone_initial_ratio_lr=0.1)]

    (pl_model, pl_cbs, pl_trainer), (model, cbs, trainer) = both(tmp_path, callbacks)
    assert_close(state(model), state(pl_model), **EXACT)
    groups = [{k: v for k, v in g.items() if k != "params"} for g in trainer.optimizers[0].param_groups]
    assert groups == [{k: v for k, v in g.items() if k != "params"} for g in pl_trainer.optimizers[0].param_groups]
    assert len(groups) == 2 and cbs[0].previous_backbone_lr == pl_cbs[0].previous_backbone_lr


def test_monitors_log_the_same_keys_at_the_same_steps(quiet_lightning, tmp_path):
    """ThroughputMonitor and DeviceStatsMonitor with accumulation and in-epoch validation: the same logger calls
    (steps and keys; the values are times and machine load)."""
    pytest.importorskip("psutil")
    from .scenarios import memory_logger

    def callbacks(pl):
        return [pl.callbacks.ThroughputMonitor(batch_size_fn=lambda batch: batch[0].size(0), window_size=2),
                pl.callbacks.DeviceStatsMonitor()]

    loggers = {}
    for name in ("lightning", "volt"):
        loggers[name] = memory_logger(name)
        fit(name, tmp_path, callbacks, validate=True, max_epochs=2, logger=loggers[name], log_every_n_steps=3,
            accumulate_grad_batches=2)
    calls = {name: [(step, sorted(metrics)) for step, metrics in logger.records] for name, logger in loggers.items()}
    assert calls["volt"] == calls["lightning"]
    keys = {key for _, names in calls["volt"] for key in names}
    assert {"train/device/samples_per_sec", "validate/device/batches_per_sec",
            "DeviceStatsMonitor.on_train_batch_start/cpu_percent"} <= keys
