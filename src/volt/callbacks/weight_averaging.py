"""WeightAveraging and EMAWeightAveraging: keep a running average of the weights (torch.optim.swa_utils).

The average is updated after optimizer steps (and/or epochs, see `should_update`), stands in for the weights
during validation, and replaces them when training ends. A checkpoint holds the average as its `state_dict` (so a
model loaded from it is the averaged one, as in Lightning), the current weights under `current_model_state` and
the averaging counters under `averaging_state`; resuming restores both models exactly.
"""
import copy
import itertools
from typing import Any, Dict, Optional, Union

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_avg_fn

from volt.callbacks.callback import Callback
from volt.utilities.rank_zero import rank_zero_info, rank_zero_warn


def copy_without_trainer(module: nn.Module) -> nn.Module:
    """A deep copy of `module` that shares nothing with the Trainer it is attached to (the copy has none): copying
    the Trainer would copy its loaders, optimizers and process groups."""
    memo: Dict[int, Any] = {}
    for sub in module.modules():
        trainer = sub.__dict__.get("_trainer")
        if trainer is not None:
            memo[id(trainer)] = None
    return copy.deepcopy(module, memo)


class WeightAveraging(Callback):
    """Average the weights over training with `torch.optim.swa_utils.AveragedModel`.

    Args:
        device: where the average lives (default: the model's device at setup). `"cpu"` saves GPU memory.
        use_buffers: average the buffers too (BatchNorm statistics); False averages parameters only.
        **kwargs: for `AveragedModel`, e.g. `avg_fn` or `multi_avg_fn` (default: an equal-weight average, SWA).

    Override `should_update(step_idx=None, epoch_idx=None)` to choose when the average is updated (default: after
    every optimizer step).
    """

    def __init__(self, device: Optional[Union[torch.device, str, int]] = None, use_buffers: bool = True,
                 **kwargs: Any) -> None:
        self._device = torch.device(device) if isinstance(device, str) else device
        self._use_buffers = use_buffers
        self._kwargs = kwargs
        self._average_model: Optional[AveragedModel] = None
        # Optimizer steps when the average was last updated; 0 makes the first update come after the first step.
        self._latest_update_step = 0
        self._latest_update_epoch = -1
        self._copied_to_model = False  # this fit already put the average into the model

    def should_update(self, step_idx: Optional[int] = None, epoch_idx: Optional[int] = None) -> bool:
        """Whether to update the average after optimizer step `step_idx` or epoch `epoch_idx` (zero-based; one of
        them is None). Default: after every optimizer step."""
        return step_idx is not None

    # ------------------------------------------------------------------ hooks
    def setup(self, trainer, pl_module, stage: str) -> None:
        if stage != "fit":
            return
        if _overrides(pl_module, "configure_model"):
            rank_zero_warn(
                "You're using the WeightAveraging callback with a model that overrides the configure_model "
                "callback. WeightAveraging doesn't support sharding model layers, so you may run out of memory.")
            pl_module.configure_model()
        device = self._device if self._device is not None else pl_module.device
        self._average_model = AveragedModel(copy_without_trainer(pl_module), device=device,
                                            use_buffers=self._use_buffers, **self._kwargs)
        # a new fit averages from scratch; a checkpoint's counters are loaded after this
        self._latest_update_step, self._latest_update_epoch, self._copied_to_model = 0, -1, False

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        step = trainer.global_step
        if step > self._latest_update_step and self.should_update(step_idx=step - 1):
            self._average_model.update_parameters(pl_module)
            self._latest_update_step = step

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        epoch = trainer.current_epoch
        if epoch > self._latest_update_epoch and self.should_update(epoch_idx=epoch):
            self._average_model.update_parameters(pl_module)
            self._latest_update_epoch = epoch

    def on_train_end(self, trainer, pl_module) -> None:
        self._copy_average_to_current(pl_module)

    def on_fit_end(self, trainer, pl_module) -> None:
        # A fit resumed from a checkpoint written after the last epoch runs no training hooks; the model still ends
        # as the average, as it does in the run that wrote the checkpoint.
        if not self._copied_to_model and self._average_model is not None:
            self._copy_average_to_current(pl_module)

    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        if self._average_model is not None:
            self._swap_models(pl_module)

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if self._average_model is not None:
            self._swap_models(pl_module)

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> Dict[str, Any]:
        return {"latest_update_step": self._latest_update_step, "latest_update_epoch": self._latest_update_epoch}

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        self._latest_update_step = state_dict["latest_update_step"]
        self._latest_update_epoch = state_dict.get("latest_update_epoch", -1)

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: Dict[str, Any]) -> None:
        if self._average_model is None:
            rank_zero_info(
                "You're using the WeightAveraging callback, but saving a checkpoint outside the 'fit' stage. The "
                "state of the WeightAveraging callback won't be saved in the checkpoint. If training has finished, "
                "the average model parameters will be saved to the state_dict in the checkpoint.")
            return
        prefix = "module."
        average = self._average_model.state_dict()
        checkpoint["current_model_state"] = checkpoint["state_dict"]
        checkpoint["state_dict"] = {k[len(prefix):]: v for k, v in average.items() if k.startswith(prefix)}
        checkpoint["averaging_state"] = {k: v for k, v in average.items() if not k.startswith(prefix)}

    def on_load_checkpoint(self, trainer, pl_module, checkpoint: Dict[str, Any]) -> None:
        # called when `fit` resumes, after `setup` made the average
        if "current_model_state" in checkpoint and "averaging_state" in checkpoint:
            rank_zero_info("Found current_model_state in the checkpoint. This will be used to initialize the model.")
            average = {"module." + k: v for k, v in checkpoint["state_dict"].items()}
            self._average_model.load_state_dict({**average, **checkpoint["averaging_state"]})
            # the model continues from the current weights, whether the Trainer loads `state_dict` before this
            # hook (Lightning) or after it (volt)
            pl_module.load_state_dict(checkpoint["current_model_state"])
            checkpoint["state_dict"] = checkpoint["current_model_state"]
        else:
            rank_zero_warn(
                "The checkpoint was not created with WeightAveraging. Both the current and the average model will "
                "be initialized with state_dict.")
            self._average_model.module.load_state_dict(copy.deepcopy(checkpoint["state_dict"]), strict=False)

    # ------------------------------------------------------------------ moving weights
    def _swap_models(self, pl_module) -> None:
        """Exchange the values of the model's and the average's parameters and buffers."""
        for average, current in zip(_weights(self._average_model.module), _weights(pl_module)):
            saved = average.data.clone()
            average.data.copy_(current.data)
            current.data.copy_(saved)

    def _copy_average_to_current(self, pl_module) -> None:
        for average, current in zip(_weights(self._average_model.module), _weights(pl_module)):
            current.data.copy_(average.data)
        self._copied_to_model = True


def _weights(module: nn.Module):
    return itertools.chain(module.parameters(), module.buffers())


def _overrides(module: nn.Module, name: str) -> bool:
    from volt.module import LightningModule

    return getattr(type(module), name) is not getattr(LightningModule, name)


class EMAWeightAveraging(WeightAveraging):
    """An exponential moving average of the weights: `average = decay * average + (1 - decay) * weights`.

    Args:
        device, use_buffers: as for `WeightAveraging`.
        decay: the weight of the old average at each update.
        update_every_n_steps: update after every n-th optimizer step (0: never after steps).
        update_starting_at_step: first optimizer step (zero-based) to update after.
        update_starting_at_epoch: update after each epoch from this (zero-based) epoch on.
    """

    def __init__(self, device: Optional[Union[torch.device, str, int]] = None, use_buffers: bool = True,
                 decay: float = 0.999, update_every_n_steps: int = 1, update_starting_at_step: Optional[int] = None,
                 update_starting_at_epoch: Optional[int] = None, **kwargs: Any) -> None:
        super().__init__(device=device, use_buffers=use_buffers, **kwargs,
                         avg_fn=get_ema_avg_fn(decay=decay))
        self.update_every_n_steps = update_every_n_steps
        self.update_starting_at_step = update_starting_at_step
        self.update_starting_at_epoch = update_starting_at_epoch

    def should_update(self, step_idx: Optional[int] = None, epoch_idx: Optional[int] = None) -> bool:
        if step_idx is not None:
            started = self.update_starting_at_step is None or step_idx >= self.update_starting_at_step
            if started and self.update_every_n_steps > 0 and step_idx % self.update_every_n_steps == 0:
                return True
        return (epoch_idx is not None and self.update_starting_at_epoch is not None
                and epoch_idx >= self.update_starting_at_epoch)
