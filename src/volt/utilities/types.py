"""Plain types shared by the Trainer and callbacks (Lightning's `utilities.types` path)."""
from dataclasses import dataclass
from typing import Any, Optional


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
