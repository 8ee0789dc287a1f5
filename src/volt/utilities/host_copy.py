"""Reading metric values on the host without stalling the device.

`tensor.item()` on a CUDA tensor waits until the GPU has run every kernel queued before it: the training loop
stops feeding the GPU until then. `HostCopy` instead queues a copy of the values into pinned host memory
(`non_blocking=True`) and records a CUDA event after it; `ready()` asks the event without waiting. A reader shows or
writes the values once they have landed (the loggers, the progress bars), and waits (`wait()`) only where the loop
stops anyway: a checkpoint, the end of an epoch or of the run.

On the CPU the copy is made at once and is always ready. Other devices (MPS) copy synchronously.
"""
from typing import Any, Dict, Mapping

import torch


class HostCopy:
    """Host copies of the tensors in `values` (other values are kept as they are), on their way from the device."""

    __slots__ = ("_values", "_event")

    def __init__(self, values: Mapping[str, Any]) -> None:
        self._values: Dict[str, Any] = {}
        self._event = None
        cuda = False
        for name, value in values.items():
            if isinstance(value, torch.Tensor):
                cuda = cuda or value.is_cuda
                host = torch.empty(value.shape, dtype=value.dtype, pin_memory=value.is_cuda)
                host.copy_(value.detach(), non_blocking=value.is_cuda or value.device.type == "cpu")
                value = host
            self._values[name] = value
        if cuda:
            self._event = torch.cuda.Event()
            self._event.record()

    def ready(self) -> bool:
        """Whether the copies have landed (never waits)."""
        return self._event is None or self._event.query()

    def wait(self) -> None:
        """Block until the copies have landed (a host synchronisation: only where the loop pauses anyway)."""
        if self._event is not None:
            self._event.synchronize()
            self._event = None

    def numbers(self) -> Dict[str, Any]:
        """The values as Python numbers (one-element tensors) or lists; waits if they have not landed yet."""
        self.wait()
        return {name: (value.item() if value.numel() == 1 else value.tolist()) if isinstance(value, torch.Tensor)
                else value for name, value in self._values.items()}
