"""BaseFinetuning, BackboneFinetuning and GradientAccumulationScheduler through `Trainer.fit`. (Agreement with
Lightning: tests/differential; exact resume: tests/fault_tolerance.)"""
import pytest
import torch

from volt.callbacks import BackboneFinetuning, BaseFinetuning, GradientAccumulationScheduler, LambdaCallback
from volt.utilities.exceptions import MisconfigurationException

from helpers import BoringModel, trainer

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


class TwoPart(BoringModel):
    """A backbone (with a BatchNorm layer) and a head; the optimizer gets the trainable parameters only."""

    def __init__(self):
        super().__init__()
        self.backbone = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3))
        self.layer = torch.nn.Linear(3, 1)

    def forward(self, x):
        return self.layer(self.backbone(x))

    def configure_optimizers(self):
        return torch.optim.SGD(filter(lambda p: p.requires_grad, self.parameters()), lr=0.1)


# ------------------------------------------------------------------------------------------ fine-tuning
def test_backbone_frozen_then_trained_in_its_own_group(tmp_path, one_torch_thread):
    model = TwoPart()
    first = model.backbone[0].weight.detach().clone()
    seen = []
    probe = LambdaCallback(on_train_epoch_end=lambda t, m: seen.append(
        (t.current_epoch, m.backbone[0].weight.requires_grad, len(t.optimizers[0].param_groups),
         torch.equal(m.backbone[0].weight, first), t.optimizers[0].param_groups[-1]["lr"])))
    finetuning = BackboneFinetuning(unfreeze_backbone_at_epoch=1, lambda_func=lambda epoch: 1.5,
                                    backbone_initial_lr=0.01)
    trainer(tmp_path, max_epochs=3, callbacks=[finetuning, probe]).fit(model)
    assert seen == [(0, False, 1, True, 0.1), (1, True, 2, False, 0.01), (2, True, 2, False, pytest.approx(0.015))]
    assert finetuning.previous_backbone_lr == pytest.approx(0.015)
    # the BatchNorm layer of the backbone stays trainable while the rest is frozen (train_bn in `freeze`)
    state = finetuning.state_dict()
    assert state["frozen_parameters"] == [] and state["finetuned_epoch"] == 2
    assert [g["params"] for g in state["internal_optimizer_metadata"][0]] == [
        ["layer.weight", "layer.bias", "backbone.1.weight", "backbone.1.bias"],
        ["backbone.0.weight", "backbone.0.bias"]]


def test_backbone_finetuning_needs_a_backbone(tmp_path):
    with pytest.raises(MisconfigurationException, match="should have a nn.Module `backbone` attribute"):
        trainer(tmp_path, callbacks=[BackboneFinetuning()]).fit(BoringModel())


def test_base_finetuning_subclass_with_frozen_batchnorm(tmp_path, one_torch_thread):
    """`freeze(train_bn=False)` stops BatchNorm from tracking statistics; `unfreeze_and_add_param_group` without
    a learning rate uses the first group's divided by `initial_denom_lr`."""
    class Schedule(BaseFinetuning):
        def freeze_before_training(self, pl_module):
            self.freeze(pl_module.backbone, train_bn=False)

        def finetune_function(self, pl_module, epoch, optimizer):
            if epoch == 1:
                self.unfreeze_and_add_param_group(pl_module.backbone, optimizer, initial_denom_lr=4.0)

    model = TwoPart()
    norm = model.backbone[1]
    tracked = []
    probe = LambdaCallback(on_train_epoch_end=lambda t, m: tracked.append((norm.track_running_stats,
                                                                            int(norm.num_batches_tracked))))
    fit = trainer(tmp_path, max_epochs=2, callbacks=[Schedule(), probe])
    fit.fit(model)
    assert tracked == [(False, 0), (True, 4)]
    assert fit.optimizers[0].param_groups[1]["lr"] == 0.1 / 4.0
    assert len(fit.optimizers[0].param_groups[1]["params"]) == 4  # both layers of the backbone


def test_finetuning_subclass_must_say_what_to_freeze(tmp_path):
    with pytest.raises(NotImplementedError, match="must override `freeze_before_training`"):
        trainer(tmp_path, callbacks=[BaseFinetuning()]).fit(BoringModel())


def test_parameters_already_in_the_optimizer_are_compared_by_identity():
    """Two distinct parameters with equal values: the one not in the optimizer is added (Lightning compares values
    and would skip it); one already there is skipped with a hint."""
    inside, outside = torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(2))
    optimizer = torch.optim.SGD([inside], lr=0.1)
    assert BaseFinetuning.filter_on_optimizer(optimizer, [outside]) == [outside]
    with pytest.warns(UserWarning, match="already exist within another group"):
        assert BaseFinetuning.filter_on_optimizer(optimizer, [inside, outside]) == [outside]


def test_flatten_and_filter_params():
    block = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Sequential(torch.nn.BatchNorm1d(2)))
    assert [type(m).__name__ for m in BaseFinetuning.flatten_modules(torch.nn.ModuleDict({"a": block}))] == [
        "Linear", "BatchNorm1d"]
    assert len(list(BaseFinetuning.filter_params(block, train_bn=False))) == 2
    BaseFinetuning.freeze(block, train_bn=True)
    assert [p.requires_grad for p in block.parameters()] == [False, False, True, True]


# ------------------------------------------------------------------------------------------ accumulation schedule
def test_accumulation_follows_the_schedule(tmp_path):
    """Epoch 0 steps every batch, epoch 1 every 2, epoch 2 every 3 (4 batches: windows of 3 and 1)."""
    steps = []
    probe = LambdaCallback(on_train_epoch_end=lambda t, m: steps.append((t.accumulate_grad_batches, t.global_step)))
    schedule = {1: 2, 2: 3}
    trainer(tmp_path, max_epochs=3, callbacks=[GradientAccumulationScheduler(schedule), probe]).fit(BoringModel())
    assert steps == [(1, 4), (2, 6), (3, 8)]
    assert schedule == {1: 2, 2: 3}  # the caller's dict is not changed


@pytest.mark.parametrize("scheduling, error, match", [
    ({}, TypeError, "pass a non-empty dict"),
    ({-1: 2}, MisconfigurationException, r"Epoch should be an int greater than or equal to 0. Got \[-1\]"),
    ({1.5: 2}, MisconfigurationException, "Epoch should be an int"),
    ({0: 0}, MisconfigurationException, r"Accumulation factor should be an int greater than 0. Got \[0\]"),
])
def test_accumulation_schedule_bad_arguments(scheduling, error, match):
    with pytest.raises(error, match=match):
        GradientAccumulationScheduler(scheduling)


def test_accumulation_schedule_conflicts(tmp_path):
    class Manual(BoringModel):
        def __init__(self):
            super().__init__()
            self.automatic_optimization = False

        def training_step(self, batch, batch_idx):
            self.manual_backward(self.loss(batch))

    with pytest.raises(RuntimeError, match="not supported for manual optimization"):
        trainer(tmp_path, callbacks=[GradientAccumulationScheduler({1: 2})]).fit(Manual())
    with pytest.raises(ValueError, match="Either remove `accumulate_grad_batches` from the Trainer"):
        trainer(tmp_path, accumulate_grad_batches=2, callbacks=[GradientAccumulationScheduler({1: 2})]).fit(
            BoringModel())

    class OwnStep(BoringModel):
        def optimizer_step(self, *args, **kwargs):
            super().optimizer_step(*args, **kwargs)

    with pytest.warns(UserWarning, match="the hooks will not be called on every batch"):
        trainer(tmp_path, callbacks=[GradientAccumulationScheduler({0: 2})]).fit(OwnStep())
