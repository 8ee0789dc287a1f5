"""torch.compile and LightningModules: what volt compiles, and checkpoint keys that do not depend on it.

Two ways in, with the same result:
  * `trainer.fit(torch.compile(model))`: `torch.compile` returns an `OptimizedModule` wrapping the LightningModule;
    the Trainer trains the LightningModule inside it, compiled with the same settings (as Lightning does);
  * `Trainer(compile=True)`, or `Trainer(compile={...})` with `torch.compile`'s keyword arguments (a volt extension).
Either way `forward` and each step the module defines (`training_step`, `validation_step`, `test_step`,
`predict_step`) are compiled as a whole: forward, loss and the backward graph derived from them. `self.log` and
`self.log_dict` run eagerly between the graphs, because volt's bookkeeping changes from step to step and would make
dynamo recompile. The module keeps its compiled steps after the run (`to_uncompiled(model)` removes them;
`from_compiled` and `to_uncompiled` are Lightning's helpers of the same names).

Recompiles: dynamo compiles a step once per input shape it has not seen. When a shape changes (a smaller last
batch, say), it compiles once more with that dimension dynamic, and that graph serves every later size: expect one
extra compile, not one per step. `torch.compile(dynamic=False)` compiles each distinct shape instead;
`dynamic=True` compiles one dynamic graph from the start; `torch._dynamo.mark_dynamic(tensor, dim)` in a collate
function marks a single dimension. Code inside a compiled step that reads Python values which change every step
(`self.global_step`, `batch_idx` used in the computation) makes dynamo recompile: read them outside the step.

Submodules compiled inside the module (`self.net = torch.compile(self.net)`) name their weights `net._orig_mod.*`.
Checkpoints leave that segment out, so they load into the same model compiled or not (in volt and in Lightning),
and loading accepts either naming.
"""
import functools
import sys
import weakref
from collections import OrderedDict
from typing import Any, Callable, Dict, Mapping, Optional, Tuple

import torch

_COMPILED_NAMES = ("forward", "training_step", "validation_step", "test_step", "predict_step")
_EAGER_NAMES = ("log", "log_dict")
_PREFIX = "_orig_mod"
_compiled_modules: "weakref.WeakSet[torch.nn.Module]" = weakref.WeakSet()


def compile_options(value: Any) -> Optional[Dict[str, Any]]:
    """`Trainer(compile=...)`: None or False -> None (off); True -> {} (torch's defaults); a dict -> its copy."""
    if value is None or value is False:
        return None
    if value is True:
        return {}
    if isinstance(value, Mapping):
        import inspect

        accepted = [name for name in inspect.signature(torch.compile).parameters if name != "model"]
        unknown = [key for key in value if key not in accepted]
        if unknown:
            raise TypeError(f"Trainer(compile={dict(value)!r}): {unknown} are not `torch.compile` arguments; "
                            f"it accepts {accepted}.")
        return dict(value)
    raise TypeError(
        f"Trainer(compile={value!r}): pass True, False, or a dict of `torch.compile` keyword arguments, e.g. "
        "compile={'mode': 'max-autotune', 'dynamic': False}."
    )


def resolve_compiled(model: Any, options: Optional[Dict[str, Any]]) -> Tuple[Any, Optional[Callable]]:
    """(the module to train, the compiler for its steps or None) for what was passed to `Trainer.fit` & co."""
    dynamo = sys.modules.get("torch._dynamo")  # loaded whenever an OptimizedModule exists; otherwise not needed
    if dynamo is not None and isinstance(model, dynamo.OptimizedModule):
        if options is not None:
            raise ValueError(
                "The model was compiled with `torch.compile(model)` and the Trainer has `compile=` set: choose one. "
                "Pass the uncompiled model to use the Trainer's settings, or drop `Trainer(compile=...)`."
            )
        return model._orig_mod, model.dynamo_ctx
    if options is not None:
        return model, functools.partial(torch.compile, **options)
    return model, None


def compile_steps(module: torch.nn.Module, compiler: Callable[[Callable], Callable]) -> None:
    """Replace, on this instance, `forward` and the steps its class overrides (from LightningModule's defaults) with
    `compiler(step)`; once per module. A step left at its default is not run at all, so it stays as it is."""
    if module in _compiled_modules:
        return
    base = _lightning_module_class(type(module))
    for name in _COMPILED_NAMES:
        if getattr(type(module), name) is not getattr(base, name):
            setattr(module, name, compiler(getattr(module, name)))
    for name in _EAGER_NAMES:
        setattr(module, name, torch.compiler.disable(getattr(module, name)))
    _compiled_modules.add(module)


def from_compiled(model: Any) -> Any:
    """The LightningModule inside `torch.compile(model)`, with its steps compiled with the same settings."""
    module, compiler = resolve_compiled(model, None)
    if compiler is None:
        raise ValueError(f"`from_compiled` expects the result of `torch.compile(model)`, got {type(model).__name__}.")
    if _lightning_module_class(type(module)) is None:
        raise ValueError(f"`from_compiled` expects a compiled LightningModule, got a compiled {type(module).__name__}.")
    compile_steps(module, compiler)
    return module


def to_uncompiled(model: Any) -> Any:
    """The LightningModule with its own, uncompiled steps again (from `torch.compile(model)` or a module whose steps
    volt compiled)."""
    module, compiler = resolve_compiled(model, None)
    if compiler is None and module not in _compiled_modules:
        raise ValueError(f"`to_uncompiled` expects a compiled LightningModule, got an uncompiled "
                         f"{type(module).__name__}.")
    if module in _compiled_modules:
        for name in _COMPILED_NAMES + _EAGER_NAMES:
            module.__dict__.pop(name, None)
        _compiled_modules.discard(module)
    return module


def _lightning_module_class(cls: type) -> Optional[type]:
    """LightningModule among `cls`'s bases, found as the first class to define `training_step` (this module sits
    below volt.module, so it does not import it); None for any other module."""
    return next((klass for klass in reversed(cls.__mro__) if "training_step" in vars(klass)), None)


# ---------------------------------------------------------------------- checkpoint keys
def _plain(key: str) -> str:
    return ".".join(part for part in key.split(".") if part != _PREFIX)


def _has_prefix(keys) -> bool:
    return any(_PREFIX in key for key in keys)


def plain_state_dict(state_dict: Dict[str, Any]) -> Dict[str, Any]:
    """`state_dict` with the `_orig_mod.` segments of compiled submodules taken out of its keys (and metadata)."""
    if not _has_prefix(state_dict):
        return state_dict
    return _renamed(state_dict, _plain, _plain)


def state_dict_for(module: torch.nn.Module, state_dict: Dict[str, Any]) -> Dict[str, Any]:
    """`state_dict` with its keys named as `module` names them, whichever of its submodules are compiled now and
    whichever were when it was saved."""
    if not _has_prefix(state_dict) and not any(isinstance(m, _optimized_module_type()) for m in module.modules()):
        return state_dict
    keys = {_plain(key): key for key in module.state_dict(keep_vars=True)}
    prefixes = {_plain(name): name for name, _ in module.named_modules()}
    return _renamed(state_dict, lambda key: keys.get(_plain(key), key),
                    lambda prefix: prefixes.get(_plain(prefix), prefix))


def _renamed(state_dict, rename_key: Callable[[str], str], rename_prefix: Callable[[str], str]) -> Dict[str, Any]:
    renamed = OrderedDict((rename_key(key), value) for key, value in state_dict.items())
    metadata = getattr(state_dict, "_metadata", None)  # per-module versions that load_state_dict reads
    if metadata is not None:
        renamed._metadata = OrderedDict((rename_prefix(prefix), value) for prefix, value in metadata.items())
    return renamed


def plain_name(name: str) -> str:
    """A parameter name without the `_orig_mod.` segments of compiled submodules."""
    return _plain(name) if _PREFIX in name else name


def _optimized_module_type() -> type:
    dynamo = sys.modules.get("torch._dynamo")
    return dynamo.OptimizedModule if dynamo is not None else type(None)
