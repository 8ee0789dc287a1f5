"""DeviceStatsMonitor: log CPU (psutil) and CUDA memory statistics around training, validation and test batches.

Keys are `DeviceStatsMonitor.{hook}/{stat}` (the logger's group separator), logged at the Trainer's
`log_every_n_steps` interval with the training step as x axis, as in Lightning:
- CPU, through `psutil`: `cpu_percent`, `cpu_vm_percent` (RAM in use), `cpu_swap_percent`.
- CUDA: `torch.cuda.memory_stats` (bytes allocated/reserved/active, current and peak, allocator counters), and
  `gpu_utilization` (percent, through `torch.cuda.utilization`) when NVML (`pip install nvidia-ml-py`) is there.
Reading them does not synchronise the GPU.
"""
import importlib.util
from typing import Any, Dict, Optional

import torch

from volt import accelerators
from volt.callbacks.callback import Callback
from volt.utilities.exceptions import MisconfigurationException


def get_cuda_stats(device: torch.device) -> Dict[str, float]:
    """The caching allocator's statistics for `device`, and its utilisation when NVML can be read."""
    stats: Dict[str, float] = dict(torch.cuda.memory_stats(device))
    try:
        stats["gpu_utilization"] = torch.cuda.utilization(device)
    except (ModuleNotFoundError, ImportError, RuntimeError):  # NVML (nvidia-ml-py) missing or not usable
        pass
    return stats


class DeviceStatsMonitor(Callback):
    """Log device statistics during training, validation and testing (needs a logger).

    Args:
        cpu_stats: None logs CPU statistics when training on the CPU only; True logs them on any accelerator;
            False never. CPU statistics need `psutil` (`pip install psutil`).
    """

    def __init__(self, cpu_stats: Optional[bool] = None) -> None:
        self._cpu_stats = cpu_stats
        self._step = 0  # the training step of the running batch: the x axis of its logs

    def setup(self, trainer, pl_module, stage: str) -> None:
        if stage != "fit":
            return
        if not trainer.loggers:
            raise MisconfigurationException("Cannot use `DeviceStatsMonitor` callback with `Trainer(logger=False)`.")
        on_cpu = trainer.strategy.root_device.type == "cpu"
        wants_cpu = self._cpu_stats or (self._cpu_stats is None and on_cpu)
        if wants_cpu and importlib.util.find_spec("psutil") is None:
            raise ModuleNotFoundError(
                "`DeviceStatsMonitor` cannot log CPU stats as `psutil` is not installed: install it with `pip "
                "install psutil`, or pass `DeviceStatsMonitor(cpu_stats=False)`.")

    def _device_stats(self, trainer, device: torch.device) -> Dict[str, float]:
        if device.type == "cpu":  # the accelerator's statistics (the CPUAccelerator's: psutil's)
            return trainer.accelerator.get_device_stats(device) if self._cpu_stats is not False else {}
        stats = get_cuda_stats(device) if device.type == "cuda" else {}
        if self._cpu_stats:
            stats.update(accelerators.get_cpu_stats())
        return stats

    def _log(self, trainer, hook: str, position: int) -> None:
        """Log the statistics if the Trainer writes logs at `position` (1-based step or batch count)."""
        every = trainer.log_every_n_steps
        if not every or (position % every and not trainer.should_stop):
            return
        stats = self._device_stats(trainer, trainer.strategy.root_device)
        if not stats:
            return
        prefix = f"{type(self).__qualname__}.{hook}"
        for logger in trainer.loggers:
            separator = logger.group_separator
            logger.log_metrics({f"{prefix}{separator}{k}": v for k, v in stats.items()}, step=self._step)

    def on_train_batch_start(self, trainer, pl_module, batch: Any, batch_idx: int) -> None:
        self._step = trainer.global_step
        self._log(trainer, "on_train_batch_start", self._step + 1)

    def on_train_batch_end(self, trainer, pl_module, outputs: Any, batch: Any, batch_idx: int) -> None:
        self._log(trainer, "on_train_batch_end", self._step + 1)

    def on_validation_batch_start(self, trainer, pl_module, batch: Any, batch_idx: int,
                                  dataloader_idx: int = 0) -> None:
        self._eval_log(trainer, "on_validation_batch_start", batch_idx)

    def on_validation_batch_end(self, trainer, pl_module, outputs: Any, batch: Any, batch_idx: int,
                                dataloader_idx: int = 0) -> None:
        self._eval_log(trainer, "on_validation_batch_end", batch_idx)

    def on_test_batch_start(self, trainer, pl_module, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._eval_log(trainer, "on_test_batch_start", batch_idx)

    def on_test_batch_end(self, trainer, pl_module, outputs: Any, batch: Any, batch_idx: int,
                          dataloader_idx: int = 0) -> None:
        self._eval_log(trainer, "on_test_batch_end", batch_idx)

    def _eval_log(self, trainer, hook: str, batch_idx: int) -> None:
        if trainer.sanity_checking:  # nothing is logged in the sanity check
            return
        # the x axis of validation inside fit is the last training step, as for validation metrics
        self._step = max(trainer.global_step - 1, 0) if trainer.state.fn == "fit" else trainer.global_step
        self._log(trainer, hook, batch_idx + 1)
