"""Metrics on their way to the loggers: each row is written once its values are on the host, in order.

A row is queued with `HostCopy` (volt/utilities/host_copy.py): on the CPU its values are there at once and it is
written immediately; on a GPU it is written at the next logging call after the copy has landed, without waiting
for the device, so logging never stalls a training step. `flush` writes every queued row, waiting if it must: the
Trainer calls it before a checkpoint is assembled (so the loggers' files hold every row logged before it) and
when a run ends.
"""
from collections import deque
from typing import Any, Deque, Dict, List, Optional, Tuple

import torch

from volt.utilities.host_copy import HostCopy


class LoggerWrites:
    """The queue of rows (values, step, epoch) logged but not yet written to the loggers."""

    def __init__(self) -> None:
        self._rows: Deque[Tuple[HostCopy, int, Optional[int]]] = deque()

    def add(self, loggers: List[Any], metrics: Dict[str, Any], step: int, epoch: Optional[int]) -> None:
        """Queue a row (a logged `step` value replaces `step`; else `epoch`, unless None, is added), then write what
        is ready."""
        values = {key: value if isinstance(value, torch.Tensor) else float(value) for key, value in metrics.items()}
        self._rows.append((HostCopy(values), step, epoch))
        self.write(loggers, wait=False)

    def flush(self, loggers: List[Any]) -> None:
        self.write(loggers, wait=True)

    def write(self, loggers: List[Any], wait: bool) -> None:
        rows = self._rows
        while rows and (wait or rows[0][0].ready()):
            values, step, epoch = rows.popleft()
            scalars = values.numbers()
            if "step" in scalars:
                step = int(scalars.pop("step"))
            elif epoch is not None:
                scalars.setdefault("epoch", epoch)
            step = max(int(step), 0)
            for logger in loggers:
                logger.log_metrics(metrics=scalars, step=step)
                logger.save()
