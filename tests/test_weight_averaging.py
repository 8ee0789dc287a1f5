"""StochasticWeightAveraging, WeightAveraging and EMAWeightAveraging through `Trainer.fit`: arguments, what ends in
the model and in checkpoints, and the BatchNorm pass. (Agreement with Lightning: tests/differential; exact resume:
tests/fault_tolerance.)"""
import pytest
import torch

from volt.callbacks import (EMAWeightAveraging, LambdaCallback, ModelCheckpoint, StochasticWeightAveraging,
                            WeightAveraging)
from volt.utilities.exceptions import MisconfigurationException

from helpers import BoringModel, trainer

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


class NormModel(BoringModel):
    """BoringModel with a BatchNorm layer; counts training_step calls and the gradient mode they ran in."""

    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3), torch.nn.Linear(3, 1))
        self.calls = []

    def training_step(self, batch, batch_idx):
        self.calls.append(torch.is_grad_enabled())
        return super().training_step(batch, batch_idx)


def weights(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


# ------------------------------------------------------------------------------------------ SWA
@pytest.mark.parametrize("kwargs, match", [
    (dict(swa_lrs=0.1, swa_epoch_start=0), "swa_epoch_start should be a >0 integer or a float between 0 and 1"),
    (dict(swa_lrs=0.1, swa_epoch_start=1.5), "swa_epoch_start should be a >0 integer"),
    (dict(swa_lrs=-0.1), "should a positive float, or a list of positive floats"),
    (dict(swa_lrs=[0.1, 1]), "should a positive float, or a list of positive floats"),
    (dict(swa_lrs=0.1, annealing_strategy="exp"), "`annealing_strategy` should be 'cos' or 'linear'"),
    (dict(swa_lrs=0.1, annealing_epochs=-1), "`annealing_epochs` should be an int >= 0"),
    (dict(swa_lrs=0.1, avg_fn=3), "The `avg_fn` should be callable"),
    (dict(swa_lrs=0.1, device=3), "device is expected to be a torch.device or a str"),
])
def test_swa_bad_arguments(kwargs, match):
    with pytest.raises(MisconfigurationException, match=match):
        StochasticWeightAveraging(**kwargs)


def test_swa_refuses_two_schedulers_and_float_start_without_max_epochs(tmp_path):
    class TwoSchedulers(BoringModel):
        def configure_optimizers(self):
            opt = torch.optim.SGD(self.parameters(), lr=0.1)
            return [opt], [torch.optim.lr_scheduler.StepLR(opt, 1), torch.optim.lr_scheduler.StepLR(opt, 2)]

    with pytest.raises(MisconfigurationException, match="more than 1 `lr_scheduler`"):
        trainer(tmp_path, callbacks=[StochasticWeightAveraging(swa_lrs=0.1)]).fit(TwoSchedulers())
    with pytest.raises(MisconfigurationException, match="`swa_epoch_start` as a float is not supported when "
                                                        "`max_epochs=-1`"):
        trainer(tmp_path, max_epochs=-1, max_steps=3,
                callbacks=[StochasticWeightAveraging(swa_lrs=0.1, swa_epoch_start=0.5)]).fit(BoringModel())


def test_swa_batchnorm_pass_runs_training_step_without_optimizing_or_logging(tmp_path, one_torch_thread):
    """With BatchNorm, the model ends as the average with statistics from one extra no_grad pass of training_step
    over the 4 training batches: no optimizer step, nothing logged, momentum restored."""
    model = NormModel()
    seen = {}
    record = LambdaCallback(
        on_train_batch_end=lambda t, m, out, batch, idx: seen.update(last=t.callback_metrics["train_loss"].clone()),
        on_train_end=lambda t, m: seen.update(at_end=t.callback_metrics["train_loss"].clone(), step=t.global_step))
    swa = StochasticWeightAveraging(swa_lrs=0.05, swa_epoch_start=2)
    fit = trainer(tmp_path, max_epochs=3, callbacks=[swa, record])
    fit.fit(model)
    assert model.calls == [True] * 12 + [False] * 4
    assert seen["step"] == fit.global_step == 12 and fit.current_epoch == 3
    assert torch.equal(seen["at_end"], seen["last"])  # the pass's losses were not logged
    average = dict(swa._average_model.named_parameters())
    assert all(torch.equal(p, average[n]) for n, p in model.named_parameters())
    norm = model.layer[1]
    assert norm.momentum == 0.1 and int(norm.num_batches_tracked) == 4  # statistics of the pass alone


def test_swa_checkpoint_state_is_plain_and_holds_the_average(tmp_path):
    swa = StochasticWeightAveraging(swa_lrs=0.05, swa_epoch_start=1)
    fit = trainer(tmp_path, max_epochs=2, enable_checkpointing=True, callbacks=[swa, ModelCheckpoint(tmp_path)])
    fit.fit(BoringModel())
    saved = torch.load(fit.checkpoint_callback.best_model_path, weights_only=True)
    state = saved["callbacks"]["StochasticWeightAveraging"]
    assert state["n_averaged"] == 2 and state["latest_update_epoch"] == 1
    assert state["scheduler_state"]["anneal_epochs"] == 10
    assert set(state["average_model_state"]) == {"layer.weight", "layer.bias"}


def test_swa_starting_after_the_last_epoch_warns_and_leaves_the_model(tmp_path):
    model = BoringModel()
    initial = model.layer.weight.detach().clone()
    with pytest.warns(UserWarning, match="after the last epoch"):
        trainer(tmp_path, max_epochs=2, callbacks=[StochasticWeightAveraging(swa_lrs=0.1, swa_epoch_start=5)]).fit(
            model)
    assert not torch.equal(model.layer.weight, initial)  # trained, not reset to the never-updated copy


# ------------------------------------------------------------------------------------------ weight averaging
def test_ema_checkpoint_holds_the_average_as_state_dict(tmp_path):
    """Lightning's layout: `state_dict` is the average (so load_from_checkpoint gives the averaged model), the
    current weights are `current_model_state`, the averaging counter `averaging_state`; all plain data."""
    ema = EMAWeightAveraging(decay=0.5)
    fit = trainer(tmp_path, max_epochs=1, enable_checkpointing=True,
                  callbacks=[ema, ModelCheckpoint(tmp_path, filename="last")])
    model = BoringModel()
    fit.fit(model)  # the model ends as the average
    saved = torch.load(tmp_path / "last.ckpt", weights_only=True)
    assert saved["averaging_state"]["n_averaged"] == 4
    assert saved["callbacks"]["EMAWeightAveraging"] == {"latest_update_step": 4, "latest_update_epoch": -1}
    assert all(torch.equal(saved["state_dict"][k], v) for k, v in weights(model).items())
    assert not torch.equal(saved["current_model_state"]["layer.weight"], model.layer.weight)
    loaded = BoringModel.load_from_checkpoint(tmp_path / "last.ckpt")
    assert torch.equal(loaded.layer.weight, model.layer.weight)


def test_ema_update_schedule_options(tmp_path):
    updates = []

    class Counting(EMAWeightAveraging):
        def should_update(self, step_idx=None, epoch_idx=None):
            decision = super().should_update(step_idx, epoch_idx)
            if decision:
                updates.append((step_idx, epoch_idx))
            return decision

    callback = Counting(update_every_n_steps=2, update_starting_at_step=3, update_starting_at_epoch=1)
    trainer(tmp_path, max_epochs=2, callbacks=[callback]).fit(BoringModel())
    assert updates == [(4, None), (6, None), (None, 1)]
    assert int(callback._average_model.n_averaged) == 3


def test_validation_runs_on_the_average_and_training_continues_from_the_current_weights(tmp_path):
    """During validation the model holds the average; after it, the current weights are back bit for bit."""
    class Recording(BoringModel):
        def __init__(self):
            super().__init__()
            self.at_validation = []

        def on_validation_epoch_start(self):
            self.at_validation.append(self.layer.weight.detach().clone())

    model = Recording()
    before = {}
    ema = EMAWeightAveraging(decay=0.5)
    probe = LambdaCallback(on_validation_start=lambda t, m: before.update(w=m.layer.weight.detach().clone()),
                           on_validation_end=lambda t, m: before.update(after=m.layer.weight.detach().clone()))
    trainer(tmp_path, max_epochs=1, num_sanity_val_steps=0, callbacks=[probe, ema]).fit(model)
    assert torch.equal(model.at_validation[0], ema._average_model.module.layer.weight)  # ended as the average too
    assert torch.equal(before["after"], before["w"]) and not torch.equal(before["w"], model.at_validation[0])


def test_weight_averaging_custom_average_function(tmp_path):
    """kwargs go to AveragedModel: an average that keeps the newest weights equals the final weights."""
    keep_newest = WeightAveraging(avg_fn=lambda averaged, current, count: current)
    torch.manual_seed(0)
    model = BoringModel()
    torch.manual_seed(0)
    plain = BoringModel()
    trainer(tmp_path, max_epochs=1, callbacks=[keep_newest]).fit(model)
    trainer(tmp_path, max_epochs=1).fit(plain)
    assert torch.equal(model.layer.weight, plain.layer.weight)


def test_weight_averaging_copies_the_model_not_the_trainer(tmp_path):
    ema = EMAWeightAveraging()
    fit = trainer(tmp_path, max_epochs=1, callbacks=[ema])
    fit.fit(BoringModel())
    assert ema._average_model.module._trainer is None
