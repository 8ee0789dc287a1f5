"""The loop cursor: where training is, as plain data that goes into every checkpoint."""
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, Optional


@dataclass
class LoopState:
    """Everything the fit loop needs to continue exactly where it stopped.

    `batch_idx` counts the batches of the current epoch already consumed; `epoch_done` is set once the epoch's
    batches (and its end-of-epoch validation) are finished, so a checkpoint taken inside `on_train_epoch_end`
    resumes at the next epoch.
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


@dataclass
class EvalState:
    """Counters of a validation/test/predict run (for progress bars and logging)."""

    batch_idx: int = 0
    dataloader_idx: int = 0
    runs: int = 0
    extra: Dict[str, Any] = field(default_factory=dict)
