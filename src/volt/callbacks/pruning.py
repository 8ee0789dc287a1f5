"""ModelPruning: prune weights during training with `torch.nn.utils.prune`.

Pruning runs at the end of training epochs (or validation epochs), optionally rewinding the surviving weights to
their initial values (the lottery ticket hypothesis). A pruned parameter `weight` lives as `weight_orig` and
`weight_mask`; with `make_pruning_permanent` (the default) checkpoints hold the pruned `weight` instead, and the
model is made permanent when training ends. The masks are also kept in the callback's checkpoint state, so a run
resumed from a permanent checkpoint prunes on from the same masks (Lightning forgets them and prunes the already
zeroed weights again). A non-permanent checkpoint (`weight_orig`/`weight_mask` keys) loads only into a model pruned
the same way, as in Lightning.
"""
import inspect
import logging
from copy import deepcopy
from functools import partial
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import nn
from torch.nn.utils import prune as torch_prune

from volt.callbacks.callback import Callback
from volt.module import LightningModule
from volt.utilities.exceptions import MisconfigurationException
from volt.utilities.rank_zero import rank_zero_debug, rank_zero_only

log = logging.getLogger(__name__)

_PRUNING_FUNCTIONS = {"ln_structured": torch_prune.ln_structured, "l1_unstructured": torch_prune.l1_unstructured,
                      "random_structured": torch_prune.random_structured,
                      "random_unstructured": torch_prune.random_unstructured}
_PRUNING_METHODS = {"ln_structured": torch_prune.LnStructured, "l1_unstructured": torch_prune.L1Unstructured,
                    "random_structured": torch_prune.RandomStructured,
                    "random_unstructured": torch_prune.RandomUnstructured}
_ParamList = Sequence[Tuple[nn.Module, str]]


_CONTAINERS = (LightningModule, nn.Sequential, nn.ModuleList, nn.ModuleDict)  # never pruned themselves


class ModelPruning(Callback):
    """Prune parameters as training goes.

    Args:
        pruning_fn: "l1_unstructured", "random_unstructured", "ln_structured", "random_structured", or a
            `torch.nn.utils.prune.BasePruningMethod` subclass (with `use_global_unstructured`).
        parameters_to_prune: `(module, "weight")` pairs; empty: every `parameter_names` parameter of every layer.
        parameter_names: "weight" and/or "bias" (default both), used when `parameters_to_prune` is empty.
        use_global_unstructured: rank all the parameters together (`prune.global_unstructured`).
        amount: the fraction (float) or number (int) to prune, or `amount(epoch)`.
        apply_pruning: whether to prune, or `apply_pruning(epoch)`.
        make_pruning_permanent: checkpoints hold pruned weights, and the model is made permanent at the end.
        use_lottery_ticket_hypothesis: after pruning, reset the surviving weights to their initial values (or a
            fresh draw with `resample_parameters`); a bool or `f(epoch)`.
        resample_parameters: draw new initial values (`reset_parameters`) instead of the original ones.
        pruning_dim, pruning_norm: the dimension (structured methods) and norm (`ln_structured`).
        verbose: 1 logs the overall sparsity after each pruning, 2 also each parameter's.
        prune_on_train_epoch_end: prune at training epoch ends; False: at validation epoch ends.
    """

    PARAMETER_NAMES = ("weight", "bias")

    def __init__(self, pruning_fn: Union[Callable, str], parameters_to_prune: _ParamList = (),
                 parameter_names: Optional[List[str]] = None, use_global_unstructured: bool = True,
                 amount: Union[int, float, Callable[[int], Union[int, float]]] = 0.5,
                 apply_pruning: Union[bool, Callable[[int], bool]] = True, make_pruning_permanent: bool = True,
                 use_lottery_ticket_hypothesis: Union[bool, Callable[[int], bool]] = True,
                 resample_parameters: bool = False, pruning_dim: Optional[int] = None,
                 pruning_norm: Optional[int] = None, verbose: int = 0, prune_on_train_epoch_end: bool = True) -> None:
        self._use_global_unstructured = use_global_unstructured
        self._parameters_to_prune = parameters_to_prune
        self._use_lottery_ticket_hypothesis = use_lottery_ticket_hypothesis
        self._resample_parameters = resample_parameters
        self._prune_on_train_epoch_end = prune_on_train_epoch_end
        self._parameter_names = parameter_names or self.PARAMETER_NAMES
        self._global_kwargs: Dict[str, Any] = {}
        self._original_layers: Optional[Dict[int, Dict[str, Any]]] = None
        self._pruning_method_name: Optional[str] = None
        self._names: Dict[int, str] = {}  # id(module) -> its name in the LightningModule
        self._restored_masks: Dict[str, torch.Tensor] = {}  # from a checkpoint, applied at fit start
        for name in self._parameter_names:
            if name not in self.PARAMETER_NAMES:
                raise MisconfigurationException(
                    f"The provided `parameter_names` name: {name} isn't in {self.PARAMETER_NAMES}")
        self._pruning_fn_name = (pruning_fn.lower() if isinstance(pruning_fn, str)
                                 else getattr(pruning_fn, "__name__", ""))
        if isinstance(pruning_fn, str):
            pruning_fn = self._resolve_pruning_fn(pruning_fn.lower(), pruning_dim, pruning_norm)
        elif inspect.isclass(pruning_fn) and issubclass(pruning_fn, torch_prune.BasePruningMethod):
            if not use_global_unstructured:
                raise MisconfigurationException(
                    "PyTorch `BasePruningMethod` is currently only supported with `use_global_unstructured=True`.")
        else:
            raise MisconfigurationException(
                f"`pruning_fn` is expected to be a str in {list(_PRUNING_FUNCTIONS)} or a PyTorch "
                f"`BasePruningMethod`. Found: {pruning_fn}. HINT: if passing a `BasePruningMethod`, pass the class, "
                "not an instance")
        if use_global_unstructured and pruning_fn.PRUNING_TYPE != "unstructured":
            raise MisconfigurationException(
                'Only the "unstructured" PRUNING_TYPE is supported with `use_global_unstructured=True`. Found method '
                f"{pruning_fn} of type {pruning_fn.PRUNING_TYPE}. ")
        self.pruning_fn = pruning_fn
        self._apply_pruning = apply_pruning
        self._make_pruning_permanent = make_pruning_permanent
        if isinstance(amount, bool) or not (isinstance(amount, (int, float)) or callable(amount)):
            raise MisconfigurationException(
                "`amount` should be provided and be either an int, a float or Callable function.")
        self.amount = amount
        if verbose not in (0, 1, 2):
            raise MisconfigurationException("`verbose` must be any of (0, 1, 2)")
        self._verbose = verbose

    def _resolve_pruning_fn(self, name: str, dim: Optional[int], norm: Optional[int]) -> Callable:
        if name not in _PRUNING_FUNCTIONS:
            raise MisconfigurationException(
                f"The provided `pruning_fn` {name} isn't available in PyTorch's built-in functions: "
                f"{list(_PRUNING_FUNCTIONS)} ")
        kwargs: Dict[str, Any] = {}
        if name.endswith("_structured"):
            if dim is None:
                raise MisconfigurationException(
                    "When requesting `structured` pruning, the `pruning_dim` should be provided.")
            if name == "ln_structured":
                if norm is None:
                    raise MisconfigurationException(
                        "When requesting `ln_structured` pruning, the `pruning_norm` should be provided.")
                kwargs["n"] = norm
            kwargs["dim"] = dim
        if self._use_global_unstructured:
            self._global_kwargs = kwargs
            self._pruning_method_name = _PRUNING_METHODS[name].__name__
            return _PRUNING_METHODS[name]
        self._pruning_method_name = _PRUNING_FUNCTIONS[name].__name__
        return partial(_PRUNING_FUNCTIONS[name], **kwargs)

    def filter_parameters_to_prune(self, parameters_to_prune: _ParamList = ()) -> _ParamList:
        """Override to choose which of the parameters to prune."""
        return parameters_to_prune

    # ------------------------------------------------------------------ pruning
    def apply_pruning(self, amount: Union[int, float]) -> None:
        """Prune `amount` of `parameters_to_prune` (globally, or each parameter on its own)."""
        before = [self._get_pruned_stats(m, n) for m, n in self._parameters_to_prune] if self._verbose else None
        if self._use_global_unstructured:
            self._global_kwargs["amount"] = amount
            accepted = set(inspect.signature(self.pruning_fn).parameters) - {"self"}
            torch_prune.global_unstructured(self._parameters_to_prune, pruning_method=self.pruning_fn,
                                            **{k: v for k, v in self._global_kwargs.items() if k in accepted})
        else:
            for module, name in self._parameters_to_prune:
                self.pruning_fn(module, name=name, amount=amount)
        if self._verbose:
            after = [self._get_pruned_stats(m, n) for m, n in self._parameters_to_prune]
            self._log_sparsity_stats(before, after, amount=amount)

    def apply_lottery_ticket_hypothesis(self) -> None:
        """Reset the surviving weights to their values before training (or to a fresh draw with
        `resample_parameters`); the masks stay."""
        for layer in self._original_layers.values():
            original = layer["data"]
            if self._resample_parameters and callable(getattr(original, "reset_parameters", None)):
                original = deepcopy(original)
                original.reset_parameters()
            for i, name in layer["names"]:
                module, _ = self._parameters_to_prune[i]
                self._copy_param(module, original, name)

    @staticmethod
    def _copy_param(new: nn.Module, old: nn.Module, name: str) -> None:
        target = getattr(new, name + "_orig", None)
        target = getattr(new, name) if target is None else target
        source = getattr(old, name)
        if isinstance(target, torch.Tensor) and isinstance(source, torch.Tensor):
            target.data = source.data.to(target.device)

    def make_pruning_permanent(self, module: nn.Module) -> None:
        """Remove the pruning re-parametrisation: `weight` becomes a plain parameter holding the pruned values."""
        for _, sub in module.named_modules():
            for key, hook in list(sub._forward_pre_hooks.items()):
                if isinstance(hook, torch_prune.BasePruningMethod):
                    hook.remove(sub)
                    del sub._forward_pre_hooks[key]

    @staticmethod
    def _get_pruned_stats(module: nn.Module, name: str) -> Tuple[int, int]:
        mask = getattr(module, f"{name}_mask", None)
        return (0, 1) if mask is None else (int((mask == 0).sum()), mask.numel())

    @rank_zero_only
    def _log_sparsity_stats(self, prev: List[Tuple[int, int]], curr: List[Tuple[int, int]],
                            amount: Union[int, float] = 0) -> None:
        total = sum(size for _, size in curr)
        before, after = sum(z for z, _ in prev), sum(z for z, _ in curr)
        log.info(f"Applied `{self._pruning_method_name}`. Pruned: {before}/{total} ({before / total:.2%}) -> "
                 f"{after}/{total} ({after / total:.2%})")
        if self._verbose == 2:
            for (module, name), (z0, n0), (z1, n1) in zip(self._parameters_to_prune, prev, curr):
                log.info(f"Applied `{self._pruning_method_name}` to `{module!r}.{name}` with amount={amount}. "
                         f"Pruned: {z0} ({z0 / n0:.2%}) -> {z1} ({z1 / n1:.2%})")

    def _run_pruning(self, current_epoch: int) -> None:
        prune = self._apply_pruning(current_epoch) if callable(self._apply_pruning) else self._apply_pruning
        amount = self.amount(current_epoch) if callable(self.amount) else self.amount
        if not prune or not amount:
            return
        self.apply_pruning(amount)
        lottery = self._use_lottery_ticket_hypothesis
        if lottery(current_epoch) if callable(lottery) else lottery:
            self.apply_lottery_ticket_hypothesis()

    # ------------------------------------------------------------------ hooks
    def setup(self, trainer, pl_module, stage: str) -> None:
        parameters = self.sanitize_parameters_to_prune(pl_module, self._parameters_to_prune, self._parameter_names)
        self._parameters_to_prune = self.filter_parameters_to_prune(parameters)
        self._names = {id(m): name for name, m in pl_module.named_modules()}
        if self._use_lottery_ticket_hypothesis:
            self._original_layers = {}  # per layer: a copy of its initial values, and which of its names to prune
            for i, (module, name) in enumerate(self._parameters_to_prune):
                layer = self._original_layers.setdefault(id(module), {"data": deepcopy(module), "names": []})
                layer["names"].append((i, name))

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if self._prune_on_train_epoch_end:
            rank_zero_debug("`ModelPruning.on_train_epoch_end`. Applying pruning")
            self._run_pruning(pl_module.current_epoch)

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking and not self._prune_on_train_epoch_end:
            rank_zero_debug("`ModelPruning.on_validation_epoch_end`. Applying pruning")
            self._run_pruning(pl_module.current_epoch)

    def on_train_end(self, trainer, pl_module) -> None:
        if self._make_pruning_permanent:
            self.make_pruning_permanent(pl_module)

    def on_fit_end(self, trainer, pl_module) -> None:
        # also when the fit resumed from a checkpoint written after the last epoch, which runs no training hooks
        self.on_train_end(trainer, pl_module)

    # ------------------------------------------------------------------ checkpoints
    def _pruned(self) -> List[Tuple[nn.Module, str, str]]:
        """(module, parameter name, "<module path>.<parameter name>") of each parameter pruned now."""
        return [(m, n, f"{self._names[id(m)]}.{n}".lstrip(".")) for m, n in self._parameters_to_prune
                if hasattr(m, n + "_mask")]

    @property
    def state_key(self) -> str:
        """One key per method and amount: several pruning callbacks can be combined, as in Lightning."""
        amount = self.amount if isinstance(self.amount, (int, float)) else getattr(self.amount, "__name__", "callable")
        return self._generate_state_key(pruning_fn=self._pruning_fn_name, amount=amount)

    def state_dict(self) -> Dict[str, Any]:
        return {"masks": {key: getattr(m, n + "_mask") for m, n, key in self._pruned()}}

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: Dict[str, Any]) -> None:
        if self._make_pruning_permanent:
            state = dict(checkpoint["state_dict"])
            for _, _, key in self._pruned():  # the pruned values, as a plain `weight`
                original, mask = state.pop(key + "_orig"), state.pop(key + "_mask")
                state[key] = mask.to(dtype=original.dtype) * original
            checkpoint["state_dict"] = state

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        self._restored_masks = dict(state_dict.get("masks") or {})

    def on_fit_start(self, trainer, pl_module) -> None:
        """Prune the restored model with the checkpoint's masks. Here, after `configure_optimizers`, as in the run
        that wrote the checkpoint: pruning re-registers `weight` as `weight_orig` at the end of its module's
        parameters, which would change the order an optimizer made afterwards sees (and its state would no longer
        match)."""
        masks, self._restored_masks = self._restored_masks, {}
        for module, name in self._parameters_to_prune:
            key = f"{self._names[id(module)]}.{name}".lstrip(".")
            if key in masks and not hasattr(module, name + "_mask"):
                torch_prune.custom_from_mask(module, name, masks[key].to(getattr(module, name).device))

    @staticmethod
    def sanitize_parameters_to_prune(pl_module, parameters_to_prune: _ParamList = (),
                                     parameter_names: Sequence[str] = ()) -> _ParamList:
        """`parameters_to_prune` checked against the model; empty: every `parameter_names` parameter of every
        layer (not of containers)."""
        names = parameter_names or ModelPruning.PARAMETER_NAMES
        layers = [m for m in pl_module.modules() if not isinstance(m, _CONTAINERS)]
        if not parameters_to_prune:
            return [(m, n) for n in names for m in layers if isinstance(getattr(m, n, None), nn.Parameter)]
        if not (isinstance(parameters_to_prune, (list, tuple))
                and all(isinstance(p, (list, tuple)) and len(p) == 2 for p in parameters_to_prune)
                and all(isinstance(m, nn.Module) and isinstance(n, str) for m, n in parameters_to_prune)):
            raise MisconfigurationException(
                "The provided `parameters_to_prune` should either be list of tuple with 2 elements: (nn.Module, "
                "parameter_name_to_prune) or None")
        missing_modules = [m for m, _ in parameters_to_prune if not any(m is layer for layer in layers)]
        missing_parameters = [n for m, n in parameters_to_prune if any(m is layer for layer in layers)
                              and not hasattr(m, n)]
        if missing_modules or missing_parameters:
            raise MisconfigurationException(
                "Some provided `parameters_to_prune` don't exist in the model. Found missing modules: "
                f"{missing_modules} and missing parameters: {missing_parameters}")
        return parameters_to_prune
