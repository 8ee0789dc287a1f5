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
    with pytest.raises(MisconfigurationException, match=r"mode='avg'.*'min' or 'max'"):
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


def test_verbose_messages(caplog):
    es = EarlyStopping("val_loss", patience=1, min_delta=0.1, verbose=True, check_on_train_epoch_end=False)
    with caplog.at_level(logging.INFO, logger="volt"):
        _checks(es, [3, 2, 2.5])
    assert "Metric val_loss improved. New best score: 3.000" in caplog.text
    assert "Metric val_loss improved by 1.000 >= min_delta = 0.1. New best score: 2.000" in caplog.text
    assert "did not improve in the last 1 records" in caplog.text


def test_verbose_messages_name_the_rank_in_multi_process_runs(caplog):
    es = EarlyStopping("val_loss", verbose=True, check_on_train_epoch_end=False)
    with caplog.at_level(logging.INFO, logger="volt"):
        _checks(es, [3], world_size=2, global_rank=1)
    assert "[rank: 1] Metric val_loss improved." in caplog.text
    caplog.clear()
    quiet = EarlyStopping("val_loss", verbose=True, log_rank_zero_only=True, check_on_train_epoch_end=False)
    with caplog.at_level(logging.INFO, logger="volt"):
        _checks(quiet, [3], world_size=2, global_rank=1)
    assert caplog.text == ""
