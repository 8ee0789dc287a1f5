"""EarlyStopping: the stopping rules in their documented order, where checks happen, state, and (end to end) a real
`fit` that stops, compared with PyTorch Lightning 2.6.6 where it is installed."""
import logging
import math
from types import SimpleNamespace

import pytest
import torch

from volt.callbacks.early_stopping import EarlyStopping, EarlyStoppingReason
from volt.utilities.exceptions import MisconfigurationException


class _Strategy:
    """Single process, unless `others_stop` says another rank voted to stop."""

    def __init__(self, others_stop=False):
        self.others_stop = others_stop

    def reduce_boolean_decision(self, decision, all=True):
        assert all is False, "any rank must be able to stop every rank"
        return decision or self.others_stop


class StubTrainer:
    """The part of the Trainer surface EarlyStopping reads."""

    def __init__(self, **overrides):
        self.strategy = _Strategy()
        self.state = SimpleNamespace(fn="fit")
        self.sanity_checking = False
        self.fast_dev_run = False
        self.should_stop = False
        self.current_epoch = 0
        self.callback_metrics = {}
        self.val_check_interval = 1.0
        self.check_val_every_n_epoch = 1
        self.world_size = 1
        self.global_rank = 0
        self.__dict__.update(overrides)


def _checks(es, values, **overrides):
    """Run one check per value (after validation, as with check_on_train_epoch_end=False); return the trainer and
    the index of the check that stopped training (None if none did)."""
    trainer = StubTrainer(**overrides)
    es.setup(trainer, None, "fit")
    for i, value in enumerate(values):
        trainer.callback_metrics = {"val_loss": torch.tensor(float(value))}
        trainer.current_epoch = i
        es.on_validation_end(trainer, None)
        es.on_train_epoch_end(trainer, None)
        if trainer.should_stop:
            return trainer, i
    return trainer, None


def test_patience_counts_checks_without_improvement():
    es = EarlyStopping("val_loss", patience=2, check_on_train_epoch_end=False)
    trainer, stopped_at = _checks(es, [5, 4, 4, 4.5, 3])
    assert stopped_at == 3
    assert es.stopped_epoch == 3 and es.wait_count == 2 and es.best_score == torch.tensor(4.0)
    assert es.stopping_reason is EarlyStoppingReason.PATIENCE_EXHAUSTED
    assert es.stopping_reason_message == (
        "Monitored metric val_loss did not improve in the last 2 records. Best score: 4.000. Signaling Trainer to stop."
    )


def test_improvement_resets_the_wait():
    es = EarlyStopping("val_loss", patience=2, check_on_train_epoch_end=False)
    _, stopped_at = _checks(es, [5, 6, 4, 6, 3, 6])
    assert stopped_at is None and es.wait_count == 1


@pytest.mark.parametrize(
    ("mode", "min_delta", "values", "stopped_at"),
    [
        ("min", 0.5, [5, 4.6, 4.4], 1),  # 4.6 is not 0.5 below 5
        ("min", 0.5, [5, 4.4, 4.0], 2),
        ("max", 0.5, [5, 5.4, 5.6], 1),
        ("max", 0.5, [5, 5.6, 5.8], 2),
        ("max", 0.0, [5, 5, 5], 1),  # equal is not better
    ],
)
def test_min_delta_and_mode(mode, min_delta, values, stopped_at):
    es = EarlyStopping("val_loss", mode=mode, min_delta=min_delta, patience=1, check_on_train_epoch_end=False)
    assert _checks(es, values)[1] == stopped_at


def test_stopping_threshold():
    es = EarlyStopping("val_loss", stopping_threshold=1.0, check_on_train_epoch_end=False)
    _, stopped_at = _checks(es, [3, 2, 0.9, 0.5])
    assert stopped_at == 2 and es.stopping_reason is EarlyStoppingReason.STOPPING_THRESHOLD
    assert es.stopping_reason_message.startswith("Stopping threshold reached: val_loss = 0.8999")
    assert es.stopping_reason_message.endswith("< 1.0. Signaling Trainer to stop.")


def test_divergence_threshold():
    es = EarlyStopping("val_loss", divergence_threshold=10.0, check_on_train_epoch_end=False)
    _, stopped_at = _checks(es, [3, 9, 11])
    assert stopped_at == 2 and es.stopping_reason is EarlyStoppingReason.DIVERGENCE_THRESHOLD
    es = EarlyStopping("acc", mode="max", divergence_threshold=0.1, check_on_train_epoch_end=False)
    trainer = StubTrainer(callback_metrics={"acc": torch.tensor(0.05)})
    es.setup(trainer, None, "fit")
    es.on_validation_end(trainer, None)
    assert trainer.should_stop and "acc = 0.05" in es.stopping_reason_message and "> 0.1" in es.stopping_reason_message


@pytest.mark.parametrize("value", [math.nan, math.inf])
def test_non_finite_metric_stops_unless_check_finite_is_off(value):
    es = EarlyStopping("val_loss", check_on_train_epoch_end=False)
    assert _checks(es, [3, value])[1] == 1
    assert es.stopping_reason is EarlyStoppingReason.NON_FINITE_METRIC
    assert "is not finite. Previous best value was 3.000" in es.stopping_reason_message

    es = EarlyStopping("val_loss", check_finite=False, patience=3, check_on_train_epoch_end=False)
    assert _checks(es, [3, value])[1] is None


def test_order_of_checks_non_finite_before_thresholds():
    es = EarlyStopping("val_loss", stopping_threshold=5.0, divergence_threshold=-1.0, check_on_train_epoch_end=False)
    _checks(es, [math.nan])
    assert es.stopping_reason is EarlyStoppingReason.NON_FINITE_METRIC
    # below the stopping threshold and above the divergence threshold: the stopping threshold is checked first
    es = EarlyStopping("val_loss", stopping_threshold=5.0, divergence_threshold=-1.0, check_on_train_epoch_end=False)
    _checks(es, [2.0])
    assert es.stopping_reason is EarlyStoppingReason.STOPPING_THRESHOLD
    # a threshold stop does not update best_score or wait_count
    assert es.best_score == torch.tensor(math.inf) and es.wait_count == 0


def test_missing_metric_strict_lists_the_available_ones():
    es = EarlyStopping("val_acc", check_on_train_epoch_end=False)
    trainer = StubTrainer(callback_metrics={"val_loss": torch.tensor(1.0), "train_loss": torch.tensor(2.0)})
    with pytest.raises(RuntimeError, match=r"Early stopping conditioned on metric `val_acc` which is not available\."
                                           r" .* use any of the following: `val_loss`, `train_loss`"):
        es.on_validation_end(trainer, None)


def test_missing_metric_not_strict_skips_the_check():
    es = EarlyStopping("val_acc", strict=False, verbose=True, check_on_train_epoch_end=False)
    trainer = StubTrainer(callback_metrics={"val_loss": torch.tensor(1.0)})
    with pytest.warns(RuntimeWarning, match="not available"):
        es.on_validation_end(trainer, None)
    assert not trainer.should_stop and es.wait_count == 0


def test_invalid_mode():
    with pytest.raises(MisconfigurationException, match=r"`mode` can be min, max but got avg; use 'min' or 'max'"):
        EarlyStopping("val_loss", mode="avg")


@pytest.mark.parametrize(
    ("overrides", "at_train_epoch_end"),
    [({}, True), ({"val_check_interval": 0.5}, False), ({"check_val_every_n_epoch": 2}, False)],
)
def test_where_checks_happen(overrides, at_train_epoch_end):
    es = EarlyStopping("val_loss", patience=1)
    trainer = StubTrainer(callback_metrics={"val_loss": torch.tensor(1.0)}, **overrides)
    es.setup(trainer, None, "fit")
    es.on_validation_end(trainer, None)
    assert es.best_score == (math.inf if at_train_epoch_end else 1.0)
    es.on_train_epoch_end(trainer, None)
    assert es.best_score == 1.0


@pytest.mark.parametrize(
    "state", [{"sanity_checking": True}, {"fast_dev_run": 1}, {"state": SimpleNamespace(fn="validate")}]
)
def test_no_checks_in_sanity_check_fast_dev_run_or_outside_fit(state):
    es = EarlyStopping("val_loss", patience=1, check_on_train_epoch_end=False)
    assert _checks(es, [math.nan, 1, 2, 3], **state)[1] is None
    assert es.wait_count == 0


def test_any_rank_stops_every_rank():
    es = EarlyStopping("val_loss", check_on_train_epoch_end=False)
    trainer, stopped_at = _checks(es, [3, 2], strategy=_Strategy(others_stop=True))
    assert stopped_at == 0 and trainer.should_stop
    assert es.stopping_reason is EarlyStoppingReason.NOT_STOPPED  # this rank saw an improvement


def test_never_clears_a_stop_requested_elsewhere():
    es = EarlyStopping("val_loss", check_on_train_epoch_end=False)
    trainer = StubTrainer(should_stop=True, callback_metrics={"val_loss": torch.tensor(1.0)})
    es.on_validation_end(trainer, None)
    assert trainer.should_stop


def test_state_dict_round_trip_and_state_key():
    es = EarlyStopping("val_loss", patience=2, check_on_train_epoch_end=False)
    _checks(es, [3, 4, 5])
    state = es.state_dict()
    assert state == {"wait_count": 2, "stopped_epoch": 2, "best_score": torch.tensor(3.0), "patience": 2,
                     "stopping_reason": EarlyStoppingReason.PATIENCE_EXHAUSTED.value,
                     "stopping_reason_message": es.stopping_reason_message}
    restored = EarlyStopping("val_loss", patience=5)
    restored.load_state_dict(state)
    assert (restored.wait_count, restored.stopped_epoch, restored.patience) == (2, 2, 2)
    assert restored.best_score == 3.0 and restored.stopping_reason is EarlyStoppingReason.PATIENCE_EXHAUSTED
    assert es.state_key == "EarlyStopping{'monitor': 'val_loss', 'mode': 'min'}"


@pytest.fixture
def volt_logs(caplog, monkeypatch):
    """caplog for volt's logger, which does not propagate to the root logger by default."""
    monkeypatch.setattr(logging.getLogger("volt"), "propagate", True)
    with caplog.at_level(logging.INFO, logger="volt"):
        yield caplog


def test_verbose_messages(volt_logs):
    es = EarlyStopping("val_loss", patience=1, min_delta=0.1, verbose=True, check_on_train_epoch_end=False)
    _checks(es, [3, 2, 2.5])
    assert "Metric val_loss improved. New best score: 3.000" in volt_logs.text
    assert "Metric val_loss improved by 1.000 >= min_delta = 0.1. New best score: 2.000" in volt_logs.text
    assert "did not improve in the last 1 records" in volt_logs.text


def test_verbose_messages_name_the_rank_in_multi_process_runs(volt_logs):
    es = EarlyStopping("val_loss", verbose=True, check_on_train_epoch_end=False)
    _checks(es, [3], world_size=2, global_rank=1)
    assert "[rank: 1] Metric val_loss improved." in volt_logs.text
    volt_logs.clear()
    quiet = EarlyStopping("val_loss", verbose=True, log_rank_zero_only=True, check_on_train_epoch_end=False)
    _checks(quiet, [3], world_size=2, global_rank=1)
    assert volt_logs.text == ""


# ------------------------------------------------------------------------------- end to end, with a real Trainer
# Each scenario: EarlyStopping arguments, the `val_loss` of each validation run, Trainer arguments, and what a fit
# of at most 10 epochs (4 training batches, 2 validation batches) ends with: (validation runs, trainer.current_epoch,
# trainer.global_step, stopped_epoch, wait_count, stopping reason). The expectations are PyTorch Lightning 2.6.6's;
# the `lightning`-marked test checks that they still are.

_STEADY = [3.0] * 30
E2E_SCENARIOS = {
    "patience": ({"patience": 2}, [5, 4, 4, 4.5] + _STEADY, {}, (4, 4, 16, 3, 2, "PATIENCE_EXHAUSTED")),
    "patience_counts_checks_not_epochs": (
        {"patience": 2}, [5, 4, 4, 4.5] + _STEADY, {"val_check_interval": 2}, (4, 2, 8, 1, 2, "PATIENCE_EXHAUSTED"),
    ),
    "validation_every_2_epochs": (
        {"patience": 1}, [5, 4, 4] + _STEADY, {"check_val_every_n_epoch": 2}, (3, 6, 24, 5, 1, "PATIENCE_EXHAUSTED"),
    ),
    "stopping_threshold": ({"stopping_threshold": 1.0}, [5, 4, 0.5] + _STEADY, {},
                           (3, 3, 12, 2, 0, "STOPPING_THRESHOLD")),
    "divergence_threshold": ({"divergence_threshold": 10.0}, [5, 4, 11] + _STEADY, {},
                             (3, 3, 12, 2, 0, "DIVERGENCE_THRESHOLD")),
    "check_finite": ({}, [5, 4, math.nan] + _STEADY, {}, (3, 3, 12, 2, 0, "NON_FINITE_METRIC")),
    "never_stops": ({"patience": 3}, [10 - i for i in range(10)], {}, (10, 10, 40, 0, 0, "NOT_STOPPED")),
}


def _make_module(pl, val_losses):
    class Module(pl.LightningModule):
        """Logs `val_loss` from a fixed list, one value per validation run (the sanity check excluded)."""

        def __init__(self):
            super().__init__()
            self.layer = torch.nn.Linear(4, 1)
            self.validations = 0

        def training_step(self, batch, batch_idx):
            loss = self.layer(batch[0]).pow(2).mean()
            self.log("train_loss", loss)
            return loss

        def validation_step(self, batch, batch_idx):
            self.log("val_loss", torch.tensor(float(val_losses[self.validations])))

        def on_validation_epoch_end(self):
            if not self.trainer.sanity_checking:
                self.validations += 1

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    return Module()


def _fit(pl, root, callbacks, val_losses, ckpt_path=None, **trainer_kwargs):
    from torch.utils.data import DataLoader, TensorDataset

    gen = torch.Generator().manual_seed(0)
    train = DataLoader(TensorDataset(torch.randn(16, 4, generator=gen)), batch_size=4)
    val = DataLoader(TensorDataset(torch.randn(8, 4, generator=gen)), batch_size=4)
    trainer_kwargs = {"max_epochs": 10, "logger": False, "enable_checkpointing": False, "enable_progress_bar": False,
                      "enable_model_summary": False, "default_root_dir": str(root), **trainer_kwargs}
    trainer = pl.Trainer(callbacks=callbacks, **trainer_kwargs)
    module = _make_module(pl, val_losses)
    trainer.fit(module, train, val, ckpt_path=ckpt_path)
    return trainer, module


def _run_scenario(pl, root, name):
    kwargs, val_losses, trainer_kwargs, _ = E2E_SCENARIOS[name]
    es = pl.callbacks.EarlyStopping("val_loss", **kwargs)
    trainer, module = _fit(pl, root, [es], val_losses, **trainer_kwargs)
    return (module.validations, trainer.current_epoch, trainer.global_step, es.stopped_epoch, es.wait_count,
            es.stopping_reason.name)


@pytest.mark.parametrize("name", sorted(E2E_SCENARIOS))
def test_fit_stops_where_expected(tmp_path, name):
    import volt

    assert _run_scenario(volt, tmp_path, name) == E2E_SCENARIOS[name][3]


@pytest.mark.lightning
@pytest.mark.parametrize("name", sorted(E2E_SCENARIOS))
def test_lightning_stops_at_the_same_place(tmp_path, name, quiet_lightning):
    assert _run_scenario(quiet_lightning, tmp_path, name) == E2E_SCENARIOS[name][3]


def test_fit_with_a_missing_metric_names_the_available_ones(tmp_path):
    import volt

    es = volt.callbacks.EarlyStopping("val_acc")
    with pytest.raises(RuntimeError, match="`val_acc` which is not available.*`train_loss`, `val_loss`"):
        _fit(volt, tmp_path, [es], _STEADY)


def _resume(pl, root):
    """4 epochs (wait_count reaches 2), then resume from last.ckpt: the wait goes on from 2, not from 0."""
    def callbacks():
        return [pl.callbacks.EarlyStopping("val_loss", patience=4),
                pl.callbacks.ModelCheckpoint(dirpath=root / "ckpts", save_last=True)]

    _fit(pl, root, callbacks(), [5, 4, 4, 4], max_epochs=4, enable_checkpointing=True)
    saved = torch.load(root / "ckpts" / "last.ckpt", weights_only=True)["callbacks"]
    saved = saved["EarlyStopping{'monitor': 'val_loss', 'mode': 'min'}"]
    resumed = callbacks()
    with pytest.warns(UserWarning, match="exists and is not empty"):
        trainer, module = _fit(pl, root, resumed, [4] * 10, ckpt_path=str(root / "ckpts" / "last.ckpt"),
                               enable_checkpointing=True)
    return saved["wait_count"], float(saved["best_score"]), module.validations, trainer.current_epoch, \
        resumed[0].stopped_epoch


def test_early_stopping_state_survives_resume(tmp_path):
    import volt

    assert _resume(volt, tmp_path) == (2, 4.0, 2, 6, 5)


@pytest.mark.lightning
def test_lightning_resumes_the_same_way(tmp_path, quiet_lightning):
    assert _resume(quiet_lightning, tmp_path) == (2, 4.0, 2, 6, 5)
