"""The loop cursor: where training is, as plain data that goes into every checkpoint."""
from dataclasses import asdict, dataclass
from typing import Any, Dict, Optional


@dataclass
class LoopState:
    """Everything the fit loop needs to continue exactly where it stopped.

    `batch_idx` counts the batches of the current epoch already consumed; `epoch_done` is set while the epoch end
    runs, so a checkpoint taken there resumes at the next epoch. ModelCheckpoint and a graceful stop write only once
    a batch or an epoch end is complete, so their checkpoints resume with the next batch (or epoch) and nothing to
    redo. A checkpoint that `trainer.save_checkpoint` writes from inside a batch hook resumes the same way: the rest
    of that batch (its step logging, a validation after it) is not run again.
    """

    epoch: int = 0
    global_step: int = 0  # optimizer steps, summed over optimizers (Lightning's global_step)
    batches_stepped: int = 0  # training batches that ended with an optimizer step: the loggers' x axis
    batch_idx: int = 0
    total_batch_idx: int = 0  # batches consumed over the whole run
    epoch_done: bool = False
    val_done_at_batch: int = -1  # the batch_idx whose in-epoch validation already ran
    epoch_rng: Optional[Dict[str, Any]] = None  # global RNG at the start of this epoch's data iteration
    sampler_rng: Optional[Dict[str, Any]] = None  # global RNG when the sampler drew this epoch's order

    def state_dict(self) -> Dict[str, Any]:
        return asdict(self)

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        for key, value in state.items():
            if hasattr(self, key):
                setattr(self, key, value)


def results_state(results) -> Dict[str, Any]:
    """What a checkpoint keeps of `self.log`: the training epoch's accumulators (so epoch means over a resumed
    epoch include the batches before the checkpoint) and the trainer's metric dicts (which monitors read).

    A logged torchmetrics object is not plain data: its epoch value restarts on resume.
    """
    train = {}
    for key, metric in results.train.metrics.items():
        if metric.metric_obj is None:
            train[key] = {slot: getattr(metric, slot) for slot in type(metric).__slots__ if slot not in _NOT_SAVED}
    return {"train": train, "callback_metrics": dict(results.callback_metrics),
            "logged_metrics": dict(results.logged_metrics), "progress_bar_metrics": dict(results.progress_bar_metrics)}


def load_results_state(results, state: Dict[str, Any]) -> None:
    from volt.trainer.results import _Metric

    for key, saved in state["train"].items():
        metric = _Metric.__new__(_Metric)
        for slot in _Metric.__slots__:
            setattr(metric, slot, saved.get(slot))
        results.train.metrics[key] = metric
    results.callback_metrics.update(state["callback_metrics"])
    results.logged_metrics.update(state["logged_metrics"])
    results.progress_bar_metrics.update(state["progress_bar_metrics"])


_NOT_SAVED = ("sync_group", "metric_obj")  # a process group and a torchmetrics object are not plain data

