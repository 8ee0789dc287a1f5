"""Fine-tuning callbacks: freeze parts of a model before training and unfreeze them on a schedule.

`BaseFinetuning` holds the freeze/unfreeze helpers; subclasses say what to freeze (`freeze_before_training`) and
when to unfreeze (`finetune_function`, called at each epoch start). Unfrozen parameters join the optimizer as new
parameter groups. The groups, which parameters are trainable and which epochs were already handled are saved in
checkpoints, so a resumed run has the same optimizer layout and trainable parameters as the run it continues
(Lightning restores the groups but leaves the unfrozen parameters frozen).
"""
import logging
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Union

import torch
from torch.nn import Module, ModuleDict
from torch.nn.modules.batchnorm import _BatchNorm

from volt.callbacks.callback import Callback
from volt.utilities.exceptions import MisconfigurationException
from volt.utilities.rank_zero import rank_zero_warn

log = logging.getLogger(__name__)

Modules = Union[Module, Iterable[Union[Module, Iterable]]]


def multiplicative(epoch: int) -> float:
    return 2.0


class BaseFinetuning(Callback):
    """Base class for fine-tuning schedules. Override `freeze_before_training(pl_module)` (runs at setup, before
    `configure_optimizers`) and `finetune_function(pl_module, epoch, optimizer)` (runs at each epoch start).

    `configure_optimizers` should hand the optimizer only the trainable parameters
    (`filter(lambda p: p.requires_grad, self.parameters())`); `unfreeze_and_add_param_group` adds the rest later.
    """

    def __init__(self) -> None:
        self._internal_optimizer_metadata: Dict[int, List[Dict[str, Any]]] = {}
        self._restored: Optional[Dict[str, Any]] = None  # checkpoint state, applied at fit start
        self._finetuned_epoch = -1  # the last epoch whose finetune_function ran
        self._module: Optional[Module] = None  # the module being fine-tuned (from setup on)

    # ------------------------------------------------------------------ checkpoint state
    def state_dict(self) -> Dict[str, Any]:
        return {"internal_optimizer_metadata": self._internal_optimizer_metadata,
                "finetuned_epoch": self._finetuned_epoch, **self._trainable_state}

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        self._restored = dict(state_dict)
        self._internal_optimizer_metadata = state_dict.get("internal_optimizer_metadata", {})
        self._finetuned_epoch = state_dict.get("finetuned_epoch", -1)

    @property
    def _trainable_state(self) -> Dict[str, List[str]]:
        module = self._module
        if module is None:
            return {}
        return {"frozen_parameters": [n for n, p in module.named_parameters() if not p.requires_grad],
                "untracked_batch_norms": [n for n, m in module.named_modules()
                                          if isinstance(m, _BatchNorm) and not m.track_running_stats]}

    # ------------------------------------------------------------------ hooks
    def setup(self, trainer, pl_module, stage: str) -> None:
        self._module = pl_module
        if stage == "fit":  # a new fit starts from scratch; a checkpoint's state comes after this
            self._internal_optimizer_metadata, self._restored, self._finetuned_epoch = {}, None, -1
        self.freeze_before_training(pl_module)

    def on_fit_start(self, trainer, pl_module) -> None:
        if self._restored is None:
            return
        named = dict(pl_module.named_parameters())
        for opt_idx, optimizer in enumerate(trainer.optimizers):
            groups = self._internal_optimizer_metadata.get(opt_idx)
            if groups:
                optimizer.param_groups = self._apply_mapping_to_param_groups(groups, named)
        self._restore_trainable(pl_module, trainer.optimizers)
        self._restored = None

    def _restore_trainable(self, pl_module, optimizers) -> None:
        frozen = self._restored.get("frozen_parameters")
        if frozen is None:  # a checkpoint without it (e.g. Lightning's): the optimizer's parameters train
            in_optimizer = {id(p) for opt in optimizers for group in opt.param_groups for p in group["params"]}
            frozen = [n for n, p in pl_module.named_parameters() if id(p) not in in_optimizer]
        frozen = set(frozen)
        for name, param in pl_module.named_parameters():
            param.requires_grad = name not in frozen
        if "untracked_batch_norms" in self._restored:
            untracked = set(self._restored["untracked_batch_norms"])
            for name, module in pl_module.named_modules():
                if isinstance(module, _BatchNorm):
                    module.track_running_stats = name not in untracked

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        epoch = trainer.current_epoch
        if epoch <= self._finetuned_epoch:  # resumed inside an epoch whose start already ran
            return
        for opt_idx, optimizer in enumerate(trainer.optimizers):
            num_param_groups = len(optimizer.param_groups)
            self.finetune_function(pl_module, epoch, optimizer)
            self._store(pl_module, opt_idx, num_param_groups, optimizer.param_groups)
        self._finetuned_epoch = epoch

    def finetune_function(self, pl_module, epoch: int, optimizer: torch.optim.Optimizer) -> None:
        """Override: unfreeze what should train from `epoch` on (`unfreeze_and_add_param_group`)."""
        raise NotImplementedError(f"{type(self).__name__} must override `finetune_function`.")

    def freeze_before_training(self, pl_module) -> None:
        """Override: freeze what should not train at first (`self.freeze(pl_module.backbone)`)."""
        raise NotImplementedError(f"{type(self).__name__} must override `freeze_before_training`.")

    # ------------------------------------------------------------------ optimizer groups by parameter name
    @staticmethod
    def _apply_mapping_to_param_groups(param_groups: List[Dict[str, Any]], mapping: dict) -> List[Dict[str, Any]]:
        """The groups with each parameter replaced by `mapping[parameter]` (parameters <-> names)."""
        return [{**{k: v for k, v in group.items() if k != "params"}, "params": [mapping[p] for p in group["params"]]}
                for group in param_groups]

    def _store(self, pl_module, opt_idx: int, num_param_groups: int, current_param_groups: List[dict]) -> None:
        names = {p: n for n, p in pl_module.named_parameters()}
        if opt_idx not in self._internal_optimizer_metadata:
            self._internal_optimizer_metadata[opt_idx] = self._apply_mapping_to_param_groups(current_param_groups,
                                                                                             names)
        elif num_param_groups != len(current_param_groups):  # groups added this epoch
            self._internal_optimizer_metadata[opt_idx].extend(
                self._apply_mapping_to_param_groups(current_param_groups[num_param_groups:], names))

    # ------------------------------------------------------------------ freeze / unfreeze helpers
    @staticmethod
    def flatten_modules(modules: Modules) -> List[Module]:
        """The leaf modules of `modules` (a module, a ModuleDict or an iterable of them), plus the modules that
        hold parameters of their own."""
        if isinstance(modules, ModuleDict):
            modules = modules.values()
        if isinstance(modules, Iterable):
            found = [m for item in modules for m in BaseFinetuning.flatten_modules(item)]
        else:
            found = list(modules.modules())
        return [m for m in found if not list(m.children()) or m._parameters]

    @staticmethod
    def filter_params(modules: Modules, train_bn: bool = True, requires_grad: bool = True) -> Iterator[torch.Tensor]:
        """The parameters of `modules` whose `requires_grad` is `requires_grad` (BatchNorm ones only if
        `train_bn`)."""
        for module in BaseFinetuning.flatten_modules(modules):
            if isinstance(module, _BatchNorm) and not train_bn:
                continue
            for param in module.parameters(recurse=False):  # not recursing: a parent's own parameters come once
                if param.requires_grad == requires_grad:
                    yield param

    @staticmethod
    def make_trainable(modules: Modules) -> None:
        """Unfreeze the parameters of `modules` (BatchNorm layers track running statistics again)."""
        for module in BaseFinetuning.flatten_modules(modules):
            if isinstance(module, _BatchNorm):
                module.track_running_stats = True
            for param in module.parameters(recurse=False):
                param.requires_grad = True

    @staticmethod
    def freeze_module(module: Module) -> None:
        """Freeze one module's own parameters (a BatchNorm layer also stops tracking running statistics)."""
        if isinstance(module, _BatchNorm):
            module.track_running_stats = False
        for param in module.parameters(recurse=False):
            param.requires_grad = False

    @staticmethod
    def freeze(modules: Modules, train_bn: bool = True) -> None:
        """Freeze `modules`; with `train_bn`, their BatchNorm layers stay trainable."""
        for module in BaseFinetuning.flatten_modules(modules):
            if isinstance(module, _BatchNorm) and train_bn:
                BaseFinetuning.make_trainable(module)
            else:
                BaseFinetuning.freeze_module(module)

    @staticmethod
    def filter_on_optimizer(optimizer: torch.optim.Optimizer, params: Iterable) -> List[torch.Tensor]:
        """`params` without those already in `optimizer` (compared by identity; Lightning compares values, which
        drops a new parameter that merely equals one in the optimizer, e.g. two zero-initialised biases)."""
        present = {id(p) for group in optimizer.param_groups for p in group["params"]}
        params = list(params)
        kept = [p for p in params if id(p) not in present]
        if len(kept) < len(params):
            rank_zero_warn(
                "The provided params to be frozen already exist within another group of this optimizer. Those "
                "parameters will be skipped.\nHINT: Did you init your optimizer in `configure_optimizer` as such:\n"
                f" {type(optimizer)}(filter(lambda p: p.requires_grad, self.parameters()), ...) ")
        return kept

    @staticmethod
    def unfreeze_and_add_param_group(modules: Modules, optimizer: torch.optim.Optimizer, lr: Optional[float] = None,
                                     initial_denom_lr: float = 10.0, train_bn: bool = True) -> None:
        """Unfreeze `modules` and add their parameters to `optimizer` as a new group, with learning rate `lr`
        (default: the first group's learning rate divided by `initial_denom_lr`)."""
        BaseFinetuning.make_trainable(modules)
        group_lr = optimizer.param_groups[0]["lr"] / initial_denom_lr if lr is None else float(lr)
        params = BaseFinetuning.filter_on_optimizer(optimizer, BaseFinetuning.filter_params(modules, train_bn))
        if params:
            optimizer.add_param_group({"params": params, "lr": group_lr})


class BackboneFinetuning(BaseFinetuning):
    """Train `pl_module.backbone` from epoch `unfreeze_backbone_at_epoch` on, with its own learning rate that grows
    by `lambda_func(epoch + 1)` each epoch (until it reaches the rest of the model's, with `should_align`).

    Args:
        unfreeze_backbone_at_epoch: the (zero-based) epoch at which the backbone starts training.
        lambda_func: the factor the backbone learning rate is multiplied by at each later epoch.
        backbone_initial_ratio_lr: the backbone's first learning rate as a fraction of the model's.
        backbone_initial_lr: the backbone's first learning rate (overrides the ratio).
        should_align: stop growing once the backbone learning rate reaches the model's, and follow it.
        initial_denom_lr: passed to `unfreeze_and_add_param_group` (used only without a learning rate).
        train_bn: train the backbone's BatchNorm layers while it is frozen.
        verbose: log both learning rates at each epoch.
        rounding: digits shown in those logs.
    """

    def __init__(self, unfreeze_backbone_at_epoch: int = 10, lambda_func: Callable = multiplicative,
                 backbone_initial_ratio_lr: float = 10e-2, backbone_initial_lr: Optional[float] = None,
                 should_align: bool = True, initial_denom_lr: float = 10.0, train_bn: bool = True,
                 verbose: bool = False, rounding: int = 12) -> None:
        super().__init__()
        self.unfreeze_backbone_at_epoch = unfreeze_backbone_at_epoch
        self.lambda_func = lambda_func
        self.backbone_initial_ratio_lr = backbone_initial_ratio_lr
        self.backbone_initial_lr = backbone_initial_lr
        self.should_align = should_align
        self.initial_denom_lr = initial_denom_lr
        self.train_bn = train_bn
        self.verbose = verbose
        self.rounding = rounding
        self.previous_backbone_lr: Optional[float] = None

    def state_dict(self) -> Dict[str, Any]:
        return {**super().state_dict(), "previous_backbone_lr": self.previous_backbone_lr}

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        self.previous_backbone_lr = state_dict["previous_backbone_lr"]
        super().load_state_dict(state_dict)

    def freeze_before_training(self, pl_module) -> None:
        if not isinstance(getattr(pl_module, "backbone", None), Module):
            raise MisconfigurationException("The LightningModule should have a nn.Module `backbone` attribute")
        self.freeze(pl_module.backbone)  # BatchNorm layers stay trainable; `train_bn` applies when unfreezing

    def finetune_function(self, pl_module, epoch: int, optimizer: torch.optim.Optimizer) -> None:
        current_lr = optimizer.param_groups[0]["lr"]
        if epoch == self.unfreeze_backbone_at_epoch:
            backbone_lr = (self.backbone_initial_lr if self.backbone_initial_lr is not None
                           else current_lr * self.backbone_initial_ratio_lr)
            self.unfreeze_and_add_param_group(pl_module.backbone, optimizer, backbone_lr, train_bn=self.train_bn,
                                              initial_denom_lr=self.initial_denom_lr)
        elif epoch > self.unfreeze_backbone_at_epoch:
            backbone_lr = self.lambda_func(epoch + 1) * self.previous_backbone_lr
            if self.should_align and backbone_lr > current_lr:
                backbone_lr = current_lr
            optimizer.param_groups[-1]["lr"] = backbone_lr
        else:
            return
        self.previous_backbone_lr = backbone_lr
        if self.verbose:
            log.info(f"Current lr: {round(current_lr, self.rounding)}, "
                     f"Backbone lr: {round(backbone_lr, self.rounding)}")
