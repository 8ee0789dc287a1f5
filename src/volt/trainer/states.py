"""What the Trainer is doing: the entry point running (`TrainerFn`), the loop inside it (`RunningStage`) and whether
it runs (`TrainerStatus`), gathered in `trainer.state` (`TrainerState`).

The enum members are strings: `trainer.state.fn == TrainerFn.FITTING`, `trainer.state.fn == "fit"` and
`{"fit": ...}[trainer.state.fn]` all work, as with Lightning's enums. Comparison and hashing are str's own (C code),
so reading the state in a hook costs nothing extra.
"""
from typing import Optional

from volt.utilities.enums import LightningEnum


class TrainerStatus(LightningEnum):
    INITIALIZING = "initializing"
    RUNNING = "running"
    FINISHED = "finished"
    INTERRUPTED = "interrupted"

    @property
    def stopped(self) -> bool:
        return self in (TrainerStatus.FINISHED, TrainerStatus.INTERRUPTED)


class TrainerFn(LightningEnum):
    """The Trainer method running."""

    FITTING = "fit"
    VALIDATING = "validate"
    TESTING = "test"
    PREDICTING = "predict"


class RunningStage(LightningEnum):
    """The loop running inside a TrainerFn: fit runs sanity_check, train and validate."""

    TRAINING = "train"
    SANITY_CHECKING = "sanity_check"
    VALIDATING = "validate"
    TESTING = "test"
    PREDICTING = "predict"

    @property
    def evaluating(self) -> bool:
        return self in (RunningStage.VALIDATING, RunningStage.TESTING, RunningStage.SANITY_CHECKING)

    @property
    def dataloader_prefix(self) -> Optional[str]:
        """The dataloader hook's prefix for this stage: "val" for validation and the sanity check."""
        if self in (RunningStage.VALIDATING, RunningStage.SANITY_CHECKING):
            return "val"
        return self.value


_FIELD_TYPES = {"status": TrainerStatus, "fn": TrainerFn, "stage": RunningStage}


class TrainerState:
    """`trainer.state`. Plain strings assigned to a field become the field's enum member. (A plain class rather than
    Lightning's dataclass: defining a dataclass costs about a millisecond of every `import volt`.)"""

    def __init__(self, status: TrainerStatus = TrainerStatus.INITIALIZING, fn: Optional[TrainerFn] = None,
                 stage: Optional[RunningStage] = None) -> None:
        self.status, self.fn, self.stage = status, fn, stage

    def __setattr__(self, name: str, value) -> None:
        enum = _FIELD_TYPES.get(name)
        if enum is not None and value is not None and type(value) is not enum:
            value = enum(value)
        object.__setattr__(self, name, value)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, TrainerState):
            return NotImplemented
        return (self.status, self.fn, self.stage) == (other.status, other.fn, other.stage)

    def __repr__(self) -> str:
        return f"TrainerState(status={self.status!r}, fn={self.fn!r}, stage={self.stage!r})"

    @property
    def finished(self) -> bool:
        return self.status == TrainerStatus.FINISHED

    @property
    def stopped(self) -> bool:
        return self.status.stopped
