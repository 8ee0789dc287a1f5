"""StochasticWeightAveraging: average the weights of the last epochs, with torch.optim.swa_utils' SWALR schedule.

From epoch `swa_start` on, the learning rate anneals to `swa_lrs` (SWALR replaces the model's scheduler) and the
weights at the start of each epoch join an equal-weight average. When training ends the model takes the average,
and, if it has BatchNorm layers, their running statistics are recomputed for the averaged weights by running
`training_step` over the training data once more.

volt differs from Lightning there: Lightning adds an extra training epoch for that pass, and its last batch steps
the optimizer with the gradients left from the last real step, so the model ends slightly off the average. volt
makes the pass without any optimizer step (`trainer.fit_loop.forward_batches()`), so the model ends exactly at the
average, with the same BatchNorm statistics; `current_epoch` and `global_step` stay those of the last real epoch.
The average, its count and the SWALR state are saved in checkpoints, so a resumed run continues exactly.
"""
from typing import Any, Callable, Dict, List, Optional, Union

import torch
from torch import Tensor, nn
from torch.optim.swa_utils import SWALR

from volt.callbacks.callback import Callback
from volt.callbacks.weight_averaging import copy_without_trainer
from volt.utilities.exceptions import MisconfigurationException
from volt.utilities.rank_zero import rank_zero_info, rank_zero_warn
from volt.utilities.types import LRSchedulerConfig

_AVG_FN = Callable[[Tensor, Tensor, Tensor], Tensor]


class StochasticWeightAveraging(Callback):
    """Stochastic Weight Averaging (Izmailov et al., 2018) for models with one optimizer.

    Args:
        swa_lrs: the learning rate SWALR anneals to: one float for every parameter group, or a list (one per group).
        swa_epoch_start: an int (>= 1): averaging starts at that epoch (counting from 1); a float in [0, 1]:
            at `int(swa_epoch_start * max_epochs)`.
        annealing_epochs: epochs SWALR takes to reach `swa_lrs`.
        annealing_strategy: "cos" or "linear" annealing.
        avg_fn: `avg_fn(averaged, current, num_averaged) -> new averaged` (default: the equal-weight mean).
        device: where the average lives (default CPU); None: the model's device.
    """

    def __init__(self, swa_lrs: Union[float, List[float]], swa_epoch_start: Union[int, float] = 0.8,
                 annealing_epochs: int = 10, annealing_strategy: str = "cos", avg_fn: Optional[_AVG_FN] = None,
                 device: Optional[Union[torch.device, str]] = torch.device("cpu")) -> None:
        start_message = "swa_epoch_start should be a >0 integer or a float between 0 and 1."
        if isinstance(swa_epoch_start, bool) or not isinstance(swa_epoch_start, (int, float)):
            raise MisconfigurationException(start_message)
        if isinstance(swa_epoch_start, int) and swa_epoch_start < 1:
            raise MisconfigurationException(start_message)
        if isinstance(swa_epoch_start, float) and not 0 <= swa_epoch_start <= 1:
            raise MisconfigurationException(start_message)
        good_float = isinstance(swa_lrs, float) and swa_lrs > 0
        good_list = isinstance(swa_lrs, list) and all(isinstance(lr, float) and lr > 0 for lr in swa_lrs)
        if not (good_float or good_list):
            raise MisconfigurationException("The `swa_lrs` should a positive float, or a list of positive floats")
        if isinstance(annealing_epochs, bool) or not isinstance(annealing_epochs, int) or annealing_epochs < 0:
            raise MisconfigurationException(f"`annealing_epochs` should be an int >= 0, got {annealing_epochs!r}.")
        if annealing_strategy not in ("cos", "linear"):
            raise MisconfigurationException(
                f"`annealing_strategy` should be 'cos' or 'linear', got {annealing_strategy!r}.")
        if avg_fn is not None and not callable(avg_fn):
            raise MisconfigurationException("The `avg_fn` should be callable.")
        if device is not None and not isinstance(device, (torch.device, str)):
            raise MisconfigurationException(f"device is expected to be a torch.device or a str. Found {device}")
        self._swa_epoch_start = swa_epoch_start
        self._swa_lrs = swa_lrs
        self._annealing_epochs = annealing_epochs
        self._annealing_strategy = annealing_strategy
        self._avg_fn = avg_fn or self.avg_fn
        self._device = device
        self.n_averaged: Optional[Tensor] = None
        self._average_model: Optional[nn.Module] = None
        self._model_contains_batch_norm = False
        self._initialized = False
        self._swa_scheduler: Optional[SWALR] = None
        self._scheduler_state: Optional[dict] = None  # from a checkpoint, loaded when SWALR is made
        self._init_n_averaged = 0
        self._latest_update_epoch = -1
        self._max_epochs = -1
        self._finished = False  # the model holds the average (this fit)
        self.momenta: Dict[nn.Module, Optional[float]] = {}

    @property
    def swa_start(self) -> int:
        """The zero-based epoch at which averaging starts."""
        return max(self._swa_epoch_start - 1, 0)

    @property
    def swa_end(self) -> float:
        """The zero-based last epoch of training (inf without `max_epochs`)."""
        return float("inf") if self._max_epochs == -1 else self._max_epochs - 1

    @staticmethod
    def pl_module_contains_batch_norm(pl_module) -> bool:
        return any(isinstance(module, nn.modules.batchnorm._BatchNorm) for module in pl_module.modules())

    @staticmethod
    def avg_fn(averaged_model_parameter: Tensor, model_parameter: Tensor, num_averaged: Tensor) -> Tensor:
        """The equal-weight running mean."""
        return averaged_model_parameter + (model_parameter - averaged_model_parameter) / (num_averaged + 1)

    # ------------------------------------------------------------------ hooks
    def setup(self, trainer, pl_module, stage: str) -> None:
        from volt.distributed.fsdp import FSDPStrategy

        if isinstance(trainer.strategy, FSDPStrategy):
            raise MisconfigurationException("SWA does not currently support sharded models.")
        self._average_model = copy_without_trainer(pl_module)  # before the model moves to its device
        # a new fit averages from scratch; a checkpoint's state is loaded after this
        self.n_averaged, self._init_n_averaged, self._latest_update_epoch = None, 0, -1
        self._scheduler_state, self._swa_scheduler = None, None
        self._initialized = self._finished = False

    def on_fit_start(self, trainer, pl_module) -> None:
        if len(trainer.optimizers) != 1:
            raise MisconfigurationException("SWA currently works with 1 `optimizer`.")
        if len(trainer.lr_scheduler_configs) > 1:
            raise MisconfigurationException("SWA currently not supported for more than 1 `lr_scheduler`.")
        if isinstance(self._swa_epoch_start, float):
            if trainer.max_epochs == -1:
                raise MisconfigurationException(
                    "SWA with `swa_epoch_start` as a float is not supported when `max_epochs=-1`. Please provide "
                    "`swa_epoch_start` as an integer.")
            self._swa_epoch_start = int(trainer.max_epochs * self._swa_epoch_start)
        self._model_contains_batch_norm = self.pl_module_contains_batch_norm(pl_module)
        self._max_epochs = trainer.max_epochs
        if self.swa_start > self.swa_end:
            rank_zero_warn(f"StochasticWeightAveraging starts at epoch {self.swa_start}, after the last epoch "
                           f"({int(self.swa_end)}): no weights will be averaged.")
        if self._scheduler_state is not None:
            # resuming with SWA running: SWALR takes the scheduler's place now, so the Trainer restores its state
            self._start_averaging(trainer, pl_module)

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        epoch = trainer.current_epoch
        in_swa = self.swa_start <= epoch <= self.swa_end
        if in_swa and not self._initialized:
            self._start_averaging(trainer, pl_module)
        if in_swa and epoch > self._latest_update_epoch:
            self.update_parameters(self._average_model, pl_module, self.n_averaged, self._avg_fn)
            self._latest_update_epoch = epoch

    def _start_averaging(self, trainer, pl_module) -> None:
        """Move the average to its device and replace the scheduler with SWALR."""
        self._initialized = True
        self._average_model = self._average_model.to(self._device or pl_module.device)
        optimizer = trainer.optimizers[0]
        if isinstance(self._swa_lrs, float):
            self._swa_lrs = [self._swa_lrs] * len(optimizer.param_groups)
        for lr, group in zip(self._swa_lrs, optimizer.param_groups):
            group["initial_lr"] = lr
        self._swa_scheduler = SWALR(optimizer, swa_lr=self._swa_lrs, anneal_epochs=self._annealing_epochs,
                                    anneal_strategy=self._annealing_strategy,
                                    last_epoch=trainer.max_epochs if self._annealing_strategy == "cos" else -1)
        if self._scheduler_state is not None:
            self._swa_scheduler.load_state_dict(self._scheduler_state)
        elif trainer.current_epoch != self.swa_start:
            rank_zero_warn("SWA is initializing after swa_start without any checkpoint data. This may be caused by "
                           "loading a checkpoint from an older version of PyTorch Lightning.")
        config = LRSchedulerConfig(self._swa_scheduler)
        if trainer.lr_scheduler_configs:
            replaced = trainer.lr_scheduler_configs[0]
            if replaced.interval != "epoch" or replaced.frequency != 1:
                rank_zero_warn(f"SWA is currently only supported every epoch. Found {replaced}")
            rank_zero_info(f"Swapping scheduler `{type(replaced.scheduler).__name__}` for `SWALR`")
            trainer.lr_scheduler_configs[0] = config
        else:
            trainer.lr_scheduler_configs.append(config)
        if self.n_averaged is None:
            self.n_averaged = torch.tensor(self._init_n_averaged, dtype=torch.long, device=pl_module.device)

    def on_train_end(self, trainer, pl_module) -> None:
        # the epoch counter has moved past the last epoch when this runs
        if trainer.current_epoch - 1 == self.swa_end or self._max_epochs == -1:
            self._finish(trainer, pl_module)

    def on_fit_end(self, trainer, pl_module) -> None:
        # A fit resumed from a checkpoint written after the last epoch runs no training hooks; the model still ends
        # as the average, as it does in the run that wrote the checkpoint.
        if not self._finished and trainer.current_epoch - 1 == self.swa_end:
            self._finish(trainer, pl_module)

    def _finish(self, trainer, pl_module) -> None:
        """Put the average into the model; with BatchNorm layers, recompute their statistics for it."""
        self._finished = True
        if self._averaged_count() == 0:
            return
        self.transfer_weights(self._average_model, pl_module)
        if self._model_contains_batch_norm and self._max_epochs != -1:
            self.reset_batch_norm_and_save_state(pl_module)
            trainer.fit_loop.forward_batches()
            self.reset_momenta()

    def _averaged_count(self) -> int:
        return int(self.n_averaged) if self.n_averaged is not None else self._init_n_averaged

    # ------------------------------------------------------------------ weights and BatchNorm
    @staticmethod
    def transfer_weights(src_pl_module: nn.Module, dst_pl_module: nn.Module) -> None:
        for src, dst in zip(src_pl_module.parameters(), dst_pl_module.parameters()):
            dst.detach().copy_(src.to(dst.device))

    def reset_batch_norm_and_save_state(self, pl_module: nn.Module) -> None:
        """Clear BatchNorm running statistics and switch them to a cumulative mean (momentum None) for the pass."""
        self.momenta = {}
        for module in pl_module.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.running_mean is not None:
                module.running_mean.zero_()  # in place: a DDP wrapper holds these very buffers
                module.running_var.fill_(1)
                module.num_batches_tracked.zero_()
                self.momenta[module] = module.momentum
                module.momentum = None

    def reset_momenta(self) -> None:
        for module, momentum in self.momenta.items():
            module.momentum = momentum

    @staticmethod
    def update_parameters(average_model: nn.Module, model: nn.Module, n_averaged: Tensor, avg_fn: _AVG_FN) -> None:
        """Fold the model's current parameters into the average (the first time, copy them)."""
        for p_average, p_model in zip(average_model.parameters(), model.parameters()):
            device = p_average.device
            current = p_model.detach().to(device)
            updated = current if n_averaged == 0 else avg_fn(p_average.detach(), current, n_averaged.to(device))
            p_average.detach().copy_(updated)
        n_averaged += 1

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> Dict[str, Any]:
        return {
            "n_averaged": self._averaged_count(),
            "latest_update_epoch": self._latest_update_epoch,
            "scheduler_state": None if self._swa_scheduler is None else self._swa_scheduler.state_dict(),
            "average_model_state": None if self._average_model is None else self._average_model.state_dict(),
        }

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        self._init_n_averaged = state_dict["n_averaged"]
        self._latest_update_epoch = state_dict["latest_update_epoch"]
        self._scheduler_state = state_dict["scheduler_state"]
        if self._average_model is not None and state_dict["average_model_state"] is not None:
            self._average_model.load_state_dict(state_dict["average_model_state"])
