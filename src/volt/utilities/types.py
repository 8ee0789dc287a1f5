"""Plain types shared by the Trainer and callbacks, and the type names of hook signatures (`STEP_OUTPUT`,
`OptimizerLRScheduler`, ...), at Lightning's `utilities.types` path.

The type names are annotations only: volt checks what `configure_optimizers` and the steps return at run time
(`volt/trainer/optim.py`), not through them.
"""
from dataclasses import dataclass
from typing import Any, List, Mapping, Optional, Sequence, Tuple, Type, Union

from torch import Tensor
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler, ReduceLROnPlateau

from typing_extensions import NotRequired, Protocol, Required, TypedDict, runtime_checkable  # a torch dependency


@dataclass
class LRSchedulerConfig:
    """How and when one scheduler steps (Lightning's scheduler dict keys)."""

    scheduler: Any
    name: Optional[str] = None
    interval: str = "epoch"
    frequency: int = 1
    reduce_on_plateau: bool = False
    monitor: Optional[str] = None
    strict: bool = True


STEP_OUTPUT = Optional[Union[Tensor, Mapping[str, Any]]]
TRAIN_DATALOADERS = Any  # an iterable, or a collection of iterables, of batches
EVAL_DATALOADERS = Any

LRSchedulerTypeTuple = (LRScheduler, ReduceLROnPlateau)
LRSchedulerTypeUnion = Union[LRScheduler, ReduceLROnPlateau]
LRSchedulerType = Union[Type[LRScheduler], Type[ReduceLROnPlateau]]
LRSchedulerPLType = LRSchedulerTypeUnion

try:
    from torch.distributed import ProcessGroup
except ImportError:  # torch built without distributed support
    ProcessGroup = Any  # type: ignore[misc,assignment]


class LRSchedulerConfigType(TypedDict, total=False):
    """The dict form of a scheduler in `configure_optimizers`' return value."""

    scheduler: Required[LRSchedulerTypeUnion]
    name: Optional[str]
    interval: str
    frequency: int
    reduce_on_plateau: bool
    monitor: Optional[str]
    strict: bool


class OptimizerConfig(TypedDict):
    optimizer: Optimizer


class OptimizerLRSchedulerConfig(TypedDict):
    optimizer: Optimizer
    lr_scheduler: Union[LRSchedulerTypeUnion, LRSchedulerConfigType]
    monitor: NotRequired[str]


OptimizerLRScheduler = Optional[
    Union[
        Optimizer,
        Sequence[Optimizer],
        Tuple[Sequence[Optimizer], Sequence[Union[LRSchedulerTypeUnion, LRSchedulerConfig]]],
        OptimizerConfig,
        OptimizerLRSchedulerConfig,
        Sequence[OptimizerConfig],
        Sequence[OptimizerLRSchedulerConfig],
    ]
]


@runtime_checkable
class DistributedDataParallel(Protocol):
    """What a DDP-style wrapper offers (for annotations and `isinstance` checks)."""

    def no_sync(self) -> Any: ...


__all__: List[str] = [
    "DistributedDataParallel", "EVAL_DATALOADERS", "LRSchedulerConfig", "LRSchedulerConfigType", "LRSchedulerPLType",
    "LRSchedulerType", "LRSchedulerTypeTuple", "LRSchedulerTypeUnion", "OptimizerConfig", "OptimizerLRScheduler",
    "OptimizerLRSchedulerConfig", "ProcessGroup", "STEP_OUTPUT", "TRAIN_DATALOADERS",
]
