"""Precision modes: what the forward runs under, how the loss is scaled, how the optimizer steps."""
import contextlib
from typing import Any, Callable, Iterator, Optional, Tuple, Union

import torch

from volt.utilities.apply_func import apply_to_collection
from volt.utilities.grads import clip_grads
from volt.utilities.rank_zero import rank_zero_deprecation, rank_zero_warn

_ALIASES = {
    "64": "64-true", 64: "64-true", "64-true": "64-true", "double": "64-true",
    "32": "32-true", 32: "32-true", "32-true": "32-true", None: "32-true",
    "16": "16-mixed", 16: "16-mixed", "16-mixed": "16-mixed",
    "bf16": "bf16-mixed", "bf16-mixed": "bf16-mixed",
    "16-true": "16-true", "bf16-true": "bf16-true",
}
_ALLOWED = ("64-true", "32-true", "16-mixed", "bf16-mixed", "16-true", "bf16-true", "64", "32", "16", "bf16")


def normalize_precision(precision: Any) -> str:
    if isinstance(precision, bool) or (precision not in _ALIASES):
        raise ValueError(f"precision={precision!r} is not supported. Choose one of {', '.join(map(repr, _ALLOWED))}.")
    if precision in (16, "16"):
        rank_zero_warn(
            f"precision={precision!r} is supported for backward compatibility; it means '16-mixed'. "
            "Use precision='16-mixed' instead."
        )
    return _ALIASES[precision]


_NO_CONTEXT = contextlib.nullcontext()  # reusable: one object instead of a new one per step


class Precision:
    """Full precision (32-true): no autocast, no scaling. The base of the precision plugins, which
    `Trainer(precision=...)` picks or `Trainer(plugins=[...])` takes (`volt.plugins`)."""

    precision = "32-true"
    scaler = None

    def convert_module(self, module: torch.nn.Module) -> torch.nn.Module:
        return module

    def convert_input(self, batch: Any) -> Any:
        return batch

    @property
    def converts_input(self) -> bool:
        """Whether `convert_input` does anything (true half/double precision casts floating-point inputs)."""
        return type(self).convert_input is not Precision.convert_input

    @property
    def wraps_forward(self) -> bool:
        """Whether `forward_context` does anything (mixed precision autocasts the forward); the training step skips
        it when not."""
        return type(self).forward_context is not Precision.forward_context

    def forward_context(self):
        return _NO_CONTEXT

    def tensor_init_context(self):
        """The dtype of tensors created in `Trainer.init_module`: the default one, except for true precisions."""
        return contextlib.nullcontext()

    def module_init_context(self):
        """Where modules are created with this precision's dtype (Lightning's name; as `tensor_init_context`)."""
        return self.tensor_init_context()

    def backward(self, loss: torch.Tensor, backward_fn: Callable, *args: Any, **kwargs: Any) -> None:
        backward_fn(loss, *args, **kwargs)

    @property
    def plain_backward(self) -> bool:
        """Whether `backward` is the loss's own, unscaled; the training step then calls `loss.backward` directly."""
        return type(self).backward is Precision.backward

    @property
    def plain_optimizer_step(self) -> bool:
        """Whether `optimizer_step` is this one, which adds nothing around `optimizer.step(closure=...)` when nothing
        runs after the closure; the fit loop then calls the optimizer directly."""
        return type(self).optimizer_step is Precision.optimizer_step

    def optimizer_step(self, optimizer, closure: Callable, after_closure: Optional[Callable], automatic: bool,
                       **kwargs: Any):
        """Step with the closure inside `optimizer.step` (so LBFGS-style optimizers can re-evaluate it);
        `after_closure` (on_before_optimizer_step, clipping) runs right after it, or is None when nothing does."""
        if after_closure is None:
            return optimizer.step(closure=closure, **kwargs) if kwargs else optimizer.step(closure=closure)

        def wrapped_closure():
            result = closure()
            after_closure()
            return result

        return optimizer.step(closure=wrapped_closure, **kwargs)

    def connect(self, model: torch.nn.Module, optimizers: Any, lr_schedulers: Any) -> Tuple[Any, Any, Any]:
        """Lightning's hook to wrap the model, optimizers and schedulers at setup; volt's plugins need none."""
        return model, optimizers, lr_schedulers

    def main_params(self, optimizer) -> Iterator[torch.nn.Parameter]:
        """The parameters `optimizer` updates (what clipping sees)."""
        for group in optimizer.param_groups:
            yield from group["params"]

    def clip_gradients(self, optimizer, clip_val: Union[int, float] = 0.0,
                       gradient_clip_algorithm: str = "norm") -> None:
        """Clip the gradients of `optimizer`'s parameters (`LightningModule.clip_gradients` calls this); a
        `clip_val` of 0 turns clipping off."""
        if clip_val <= 0:
            return
        if str(gradient_clip_algorithm).lower() == "value":
            self.clip_grad_by_value(optimizer, clip_val)
        else:
            self.clip_grad_by_norm(optimizer, clip_val)

    def clip_grad_by_value(self, optimizer, clip_val: Union[int, float]) -> None:
        clip_grads(self.main_params(optimizer), clip_val, "value")

    def clip_grad_by_norm(self, optimizer, clip_val: Union[int, float]) -> None:
        clip_grads(self.main_params(optimizer), clip_val, "norm")

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


class MixedPrecision(Precision):
    """Autocast to fp16 ("16-mixed", with a GradScaler: `scaler`, or a new one) or bf16 ("bf16-mixed", no scaler),
    on the device type `device` ("cpu", "cuda", ...)."""

    def __init__(self, precision: str, device: str, scaler: Optional[torch.amp.GradScaler] = None) -> None:
        if precision not in ("16-mixed", "bf16-mixed"):
            raise ValueError(f"Passed `MixedPrecision(precision={precision!r})`. Precision must be '16-mixed' or"
                             " 'bf16-mixed'.")
        if scaler is not None and precision == "bf16-mixed":
            raise ValueError("MixedPrecision: a GradScaler is only used with '16-mixed'; bf16 needs none.")
        self.precision = precision
        self.device = str(torch.device(device).type)
        self.dtype = torch.float16 if precision == "16-mixed" else torch.bfloat16
        if precision == "16-mixed" and scaler is None:
            scaler = torch.amp.GradScaler(self.device)
        self.scaler = scaler

    def forward_context(self):
        return torch.autocast(self.device, dtype=self.dtype)

    def autocast_context_manager(self) -> torch.autocast:
        """The autocast `forward_context` enters (Lightning's name for it, for code that autocasts more)."""
        return torch.autocast(self.device, dtype=self.dtype)

    def backward(self, loss, backward_fn, *args, **kwargs) -> None:
        if self.scaler is not None:
            loss = self.scaler.scale(loss)
        backward_fn(loss, *args, **kwargs)

    def optimizer_step(self, optimizer, closure, after_closure, automatic: bool, **kwargs):
        if self.scaler is None:
            return super().optimizer_step(optimizer, closure, after_closure, automatic, **kwargs)
        if isinstance(optimizer, torch.optim.LBFGS):
            raise TypeError("precision='16-mixed' cannot be used with LBFGS; use '32-true' or 'bf16-mixed'.")
        result = closure()
        self.scaler.unscale_(optimizer)  # hooks and clipping see true gradients
        if after_closure is not None:
            after_closure()
        if result is None and automatic:  # training_step returned None: nothing to step
            return None
        out = self.scaler.step(optimizer, **kwargs)
        self.scaler.update()
        return out

    def state_dict(self) -> dict:
        return self.scaler.state_dict() if self.scaler is not None else {}

    def load_state_dict(self, state: dict) -> None:
        if self.scaler is not None and state:
            self.scaler.load_state_dict(state)


class TruePrecision(Precision):
    """Weights, inputs and compute all in one dtype (64-true, 16-true, bf16-true)."""

    _DTYPES = {"64-true": torch.float64, "16-true": torch.float16, "bf16-true": torch.bfloat16}
    _MODULE_CASTS = {torch.float64: "double", torch.float16: "half", torch.bfloat16: "bfloat16"}

    def __init__(self, precision: str) -> None:
        if precision not in self._DTYPES:
            raise ValueError(f"{type(self).__name__}(precision={precision!r}): choose one of {list(self._DTYPES)}.")
        self.precision = precision
        self.dtype = self._DTYPES[precision]

    def convert_module(self, module):
        """Floating-point parameters and buffers to the dtype; complex ones stay complex (`module.to(dtype)` would
        drop their imaginary parts)."""
        return getattr(module, self._MODULE_CASTS[self.dtype])()

    def convert_input(self, batch):
        return apply_to_collection(batch, torch.Tensor, _cast_floating, self.dtype)

    @contextlib.contextmanager
    def forward_context(self):
        previous = torch.get_default_dtype()
        torch.set_default_dtype(self.dtype)
        try:
            yield
        finally:
            torch.set_default_dtype(previous)

    def tensor_init_context(self):
        return self.forward_context()


def _cast_floating(tensor: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return tensor.to(dtype) if tensor.is_floating_point() else tensor


class HalfPrecision(TruePrecision):
    """Weights, inputs and compute in fp16 ("16-true") or bf16 ("bf16-true")."""

    _DTYPES = {"16-true": torch.float16, "bf16-true": torch.bfloat16}

    def __init__(self, precision: str = "16-true") -> None:
        super().__init__(precision)


class DoublePrecision(TruePrecision):
    """Weights, inputs and compute in float64."""

    def __init__(self) -> None:
        super().__init__("64-true")


def _renamed(old: str, new: type) -> type:
    """Lightning's pre-2.2 name of the plugin `new`: it still works, with a deprecation warning."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        rank_zero_deprecation(f"The `{old}` is deprecated: it is the old name of `{new.__name__}`. Use "
                              f"`{new.__name__}` from `volt.plugins` (Lightning: `lightning.pytorch.plugins`) instead.")
        new.__init__(self, *args, **kwargs)

    return type(old, (new,), {"__init__": __init__, "__doc__": f"Deprecated: the old name of `{new.__name__}`."})


PrecisionPlugin = _renamed("PrecisionPlugin", Precision)
MixedPrecisionPlugin = _renamed("MixedPrecisionPlugin", MixedPrecision)
HalfPrecisionPlugin = _renamed("HalfPrecisionPlugin", HalfPrecision)
DoublePrecisionPlugin = _renamed("DoublePrecisionPlugin", DoublePrecision)


def make_precision(precision: str, device: torch.device) -> Precision:
    if precision == "32-true":
        return Precision()
    if precision in ("16-mixed", "bf16-mixed"):
        if device.type == "mps" and precision == "16-mixed":
            raise ValueError("precision='16-mixed' is not supported on MPS; use 'bf16-mixed' or '32-true'.")
        return MixedPrecision(precision, device.type)
    if precision == "64-true":
        return DoublePrecision()
    return HalfPrecision(precision)
