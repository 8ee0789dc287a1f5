"""Hook dispatch: the one path by which the Trainer calls callback, LightningModule and LightningDataModule code.

`Hooks` is built at the start of each fit/validate/test/predict. For every hook it lists, once, the methods that
implement it in Lightning's order, so a hook nobody implements costs one dict look-up per call. Every call goes
through `_run`, which sets the module's current hook name (what `self.log` reads for its defaults and its checks)
and which `ProfiledHooks` times, method by method.

Lightning's order is callbacks, then the module, except:

    setup, teardown         datamodule -> callbacks -> module
    prepare_data            datamodule -> module
    on_exception            callbacks -> datamodule
    on_train_epoch_end      plain callbacks -> module -> monitoring callbacks (EarlyStopping, ModelCheckpoint)
    batch-transfer hooks    the datamodule's if it overrides the hook, else the module's (`prepare_batch`)
    *_dataloader hooks      the datamodule's if it defines the hook, else the module's (`call_dataloader_hook`)

An object implements a hook when its class overrides the base class's method, or when the hook is assigned on the
instance (`model.validation_step = fn`; assigning None removes it). `call` skips the module's no-op defaults;
a loop that calls a hook every batch takes its bound call from `callers` once (None: nothing implements it, so
the batch makes no call at all);
`call_module` runs the module's hook even when it is the default, for the hooks whose default does the work
(`on_validation_model_eval` switching to eval mode, `optimizer_step`, `backward`, ...).
"""
import functools
import inspect
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple

from volt.callbacks.callback import Callback
from volt.datamodule import LightningDataModule
from volt.module import LightningModule
from volt.trainer.data import check_iterable
from volt.utilities.rank_zero import rank_zero_warn

CALLBACK_HOOKS = [name for name in vars(Callback) if name.startswith("on_") or name in ("setup", "teardown")]
MODULE_HOOKS = [name for name, value in vars(LightningModule).items() if callable(value) and not name.startswith("_")]
# 1.x hooks that LightningModule no longer defines: a module that has one implements it.
LEGACY_MODULE_HOOKS = ("training_epoch_end", "validation_epoch_end", "test_epoch_end")
DATAMODULE_HOOKS = ("prepare_data", "setup", "teardown", "on_exception")
TRANSFER_HOOKS = ("on_before_batch_transfer", "transfer_batch_to_device", "on_after_batch_transfer")
_DATAMODULE_FIRST = frozenset({"setup", "teardown", "prepare_data"})

# One planned call: (profiler label, the callable, whether its result is the module's).
_Call = Tuple[str, Callable[..., Any], bool]


def implements(obj: Any, base: type, name: str) -> bool:
    """Whether `obj` overrides `base`'s method `name`, in its class or on the instance (None there removes it). An
    object whose class lacks the method but that answers for it (a `Mock(spec=Callback)`) implements every hook."""
    instance = getattr(obj, "__dict__", {})
    if name in instance:
        return instance[name] is not None
    own = getattr(type(obj), name, None)
    if own is None:
        return callable(getattr(obj, name, None))
    return own is not getattr(base, name, None)


def wraps_only_the_default(obj: Any, base: type, name: str) -> bool:
    """Whether `obj`'s hook `name` is a wrapper (functools.wraps) around `base`'s default: Lightning does not count
    it as overridden where it calls a hook only when overridden (`configure_sharded_model`)."""
    value = getattr(obj, "__dict__", {}).get(name)
    return hasattr(value, "__wrapped__") and getattr(inspect.unwrap(value), "__func__", None) is getattr(base, name)


def takes_dataloader_iter(module: LightningModule, name: str) -> bool:
    """Whether step `name` takes `dataloader_iter` (Lightning 2.x's flavour: the step fetches its own batches)."""
    return "dataloader_iter" in _positional_parameters(getattr(module, name))


def step_caller(module: LightningModule, name: str, step: Callable[..., Any]) -> Callable[..., Any]:
    """`step` (the strategy's method), called as `step(batch, batch_idx, *rest)` by the loops, adapted to what the
    module's step takes. As Lightning decides: `batch_idx` is passed when the step names it, takes `*args`, or has
    two or more positional parameters; a `dataloader_iter` step gets the iterator alone."""
    parameters = _positional_parameters(getattr(module, name))
    if "dataloader_iter" not in parameters and (
            "batch_idx" in parameters or "*" in parameters or len(parameters) >= 2):
        return step
    return functools.partial(_without_batch_idx, step)


def _without_batch_idx(step: Callable[..., Any], batch: Any, batch_idx: int, *rest: Any) -> Any:
    return step(batch, *rest)


def _positional_parameters(fn: Callable[..., Any]) -> List[str]:
    """The names of `fn`'s positional parameters ("*" for `*args`), `self` excluded, decorators unwrapped."""
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):  # a builtin or C callable: assume the full Lightning signature
        return ["batch", "batch_idx"]
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return [p.name if p.kind in kinds else "*" for p in signature.parameters.values()
            if p.kind in kinds or p.kind is inspect.Parameter.VAR_POSITIONAL]


def _stage_by_keyword(method: Callable[..., Any]) -> Callable[[str], Any]:
    """`method` called as Lightning calls setup/teardown, `stage=` by keyword (a partial: a trainer holding it still
    pickles, e.g. with a model or callback sent to ddp_spawn ranks)."""
    return functools.partial(_call_with_stage, method)


def _call_with_stage(method: Callable[..., Any], stage: str) -> Any:
    return method(stage=stage)


def _datamodule_overrides(datamodule: Optional[LightningDataModule], name: str) -> bool:
    """Whether the datamodule's batch-transfer hook `name` replaces the module's (a wrapper of the default does not,
    as Lightning decides)."""
    return datamodule is not None and implements(datamodule, LightningDataModule, name) and not (
        wraps_only_the_default(datamodule, LightningDataModule, name))


def _is_monitoring(callback: Callback) -> bool:
    from volt.callbacks import EarlyStopping, ModelCheckpoint

    return isinstance(callback, (EarlyStopping, ModelCheckpoint))


class Hooks:
    """Calls hooks in Lightning's order on the callbacks, datamodule and module that implement them."""

    def __init__(self, trainer, callbacks: List[Callback], module: LightningModule, datamodule=None) -> None:
        self.trainer = trainer
        self.module = module
        self.datamodule = datamodule
        self._fx = module.__dict__  # plain dict writes: nn.Module.__setattr__ is slow on the hot path
        self._callbacks = list(callbacks)
        for callback in self._callbacks:  # `self.log` inside a callback's hook, as Lightning attaches it
            callback.log, callback.log_dict = module.log, module.log_dict
        #: The LightningModule hooks the module implements (`name in hooks.module_overrides`: no call, hot-path cheap).
        self.module_overrides = frozenset(
            {name for name in MODULE_HOOKS if implements(module, LightningModule, name)}
            | {name for name in LEGACY_MODULE_HOOKS if callable(getattr(module, name, None))})
        self._plans: Dict[str, Tuple[_Call, ...]] = {
            name: self._plan(name) for name in {*CALLBACK_HOOKS, *DATAMODULE_HOOKS, *self.module_overrides}}
        #: Every hook's call with its implementations bound (what `call(name, *args)` runs), or None when nothing
        #: implements it.
        self.callers: Dict[str, Optional[Callable[..., Any]]] = {
            name: functools.partial(self._run, name, plan) if plan else None for name, plan in self._plans.items()}
        self._transfer_plans = [(name, self._transfer_plan(name)) for name in TRANSFER_HOOKS]
        # the default chain is the module's own transfer_batch_to_device: a no-op for CPU tensors on CPU
        self.custom_transfer = any(name in self.module_overrides for name in TRANSFER_HOOKS) or (
            any(_datamodule_overrides(datamodule, n) for n in TRANSFER_HOOKS))
        #: Whether `prepare_batch` does anything (plain CPU training: it returns the batch as it is).
        self.prepares_batches = (self.custom_transfer or trainer.strategy.root_device.type != "cpu"
                                 or trainer.precision_plugin.converts_input)
        self._single: Dict[Tuple[str, str], Tuple[_Call, ...]] = {}  # call_module / call_step plans, made on first use

    # ------------------------------------------------------------------ what implements what

    def callbacks_implementing(self, name: str) -> List[Callback]:
        return [cb for cb in self._callbacks if implements(cb, Callback, name)]

    def _plan(self, name: str) -> Tuple[_Call, ...]:
        trainer, module, datamodule = self.trainer, self.module, self.datamodule
        callbacks = [(f"[Callback]{cb.state_key}.{name}", functools.partial(getattr(cb, name), trainer, module), False)
                     for cb in self.callbacks_implementing(name)]
        own = [(f"[LightningModule]{type(module).__name__}.{name}", getattr(module, name), True)
               ] if name in self.module_overrides else []
        data = [(f"[LightningDataModule]{type(datamodule).__name__}.{name}", getattr(datamodule, name), False)
                ] if name in DATAMODULE_HOOKS and datamodule is not None and implements(
                    datamodule, LightningDataModule, name) else []
        if name in ("setup", "teardown"):  # as Lightning: `setup(stage="fit")`, the stage by keyword
            callbacks, own, data = ([(label, _stage_by_keyword(method), is_module)
                                     for label, method, is_module in calls] for calls in (callbacks, own, data))
        if name in _DATAMODULE_FIRST:
            return (*data, *callbacks, *own)
        if name == "on_exception":
            return (*callbacks, *data)
        if name == "on_train_epoch_end":
            monitoring = [_is_monitoring(cb) for cb in self.callbacks_implementing(name)]
            return (*[c for c, m in zip(callbacks, monitoring) if not m], *own,
                    *[c for c, m in zip(callbacks, monitoring) if m])
        return (*callbacks, *own)

    def _transfer_plan(self, name: str) -> Tuple[_Call, ...]:
        """The datamodule's transfer hook if it overrides it, else the module's (Lightning warns when both do)."""
        module, datamodule = self.module, self.datamodule
        if _datamodule_overrides(datamodule, name):
            if name in self.module_overrides:
                rank_zero_warn(f"You have overridden `{name}` in both `LightningModule` and `LightningDataModule`. "
                               "It will use the implementation from `LightningDataModule` instance.")
            return ((f"[LightningDataModule]{type(datamodule).__name__}.{name}", getattr(datamodule, name), True),)
        if name == "transfer_batch_to_device" or name in self.module_overrides:
            return ((f"[LightningModule]{type(module).__name__}.{name}", getattr(module, name), True),)
        return ()

    # ------------------------------------------------------------------ calling
    def call(self, name: str, *args: Any) -> Any:
        """Run hook `name` on everything that implements it, in Lightning's order; returns the module's result."""
        caller = self.callers.get(name)
        return None if caller is None else caller(*args)

    def call_callbacks(self, name: str, *args: Any) -> None:
        """Run hook `name` on the callbacks alone (a checkpoint restore calls the module's and the callbacks'
        `on_load_checkpoint` at different points, as Lightning does)."""
        self._run(name, [call for call in self._plans.get(name, ()) if not call[2]], *args)

    def call_module(self, name: str, *args: Any, **kwargs: Any) -> Any:
        """Run the module's hook `name` alone, its default included (hooks whose default does the work)."""
        if kwargs:
            method = functools.partial(getattr(self.module, name), **kwargs)
            return self._run(name, ((f"[LightningModule]{type(self.module).__name__}.{name}", method, True),), *args)
        plan = self._single.get(("module", name))
        if plan is None:
            plan = self._single["module", name] = (
                (f"[LightningModule]{type(self.module).__name__}.{name}", getattr(self.module, name), True),)
        return self._run(name, plan, *args)

    def call_datamodule(self, name: str, *args: Any) -> Any:
        """Run the datamodule's method `name` (its `state_dict`/`load_state_dict` for a checkpoint), profiled as
        "[LightningDataModule]<class>.<name>", as Lightning does."""
        datamodule = self.datamodule
        return self._run(name, ((f"[LightningDataModule]{type(datamodule).__name__}.{name}", getattr(datamodule, name),
                                 True),), *args)

    def call_step(self, name: str, step: Callable[..., Any], *args: Any) -> Any:
        """A training/validation/test/predict step, or the optimizer step: `step` is the strategy's method (so a
        DDP/FSDP wrapper sees the call) or the loop's. Profiled as "[Strategy]<strategy class>.<name>"."""
        plan = self._single.get(("step", name))
        if plan is None or plan[0][1] != step:
            plan = self._single["step", name] = (
                (f"[Strategy]{type(self.trainer.strategy).__name__}.{name}", step, True),)
        return self._run(name, plan, *args)

    def bind_step(self, name: str, step: Callable[..., Any]) -> Callable[..., Any]:
        """`call_step(name, step, *args)` bound once, for a loop that runs the step every batch."""
        return functools.partial(self._run_step, name, step)

    def call_dataloader_hook(self, name: str, required: bool = True) -> Any:
        """The loaders from the datamodule if it defines `name`, else from the module (None if neither does and
        they are optional). As in Lightning, a required hook that nobody defines raises the default hook's
        MisconfigurationException, and one set to None (or returning something that is not iterable) a TypeError."""
        owner, label = self.module, "LightningModule"
        if self.datamodule is not None and implements(self.datamodule, LightningDataModule, name):
            owner, label = self.datamodule, "LightningDataModule"
        elif not implements(self.module, LightningModule, name):
            if not required:
                return None
            if getattr(self.module, name) is None:
                fn = self.trainer.state.fn
                raise TypeError(
                    f"An invalid dataloader was passed to `Trainer.{fn}({'train_' if fn == 'fit' else ''}dataloaders="
                    f"...)`. Found None. Either pass the dataloader to the `.{fn}()` method OR implement "
                    f"`def {name}(self):` in your LightningModule/LightningDataModule."
                )
        try:
            loaders = self._run(name, ((f"[{label}]{type(owner).__name__}.{name}", getattr(owner, name), True),))
        except NotImplementedError:
            if required:
                raise
            return None
        check_iterable(loaders, f"returned from `{type(owner).__name__}.{name}()`")
        return loaders

    def prepare_batch(self, batch: Any, dataloader_idx: int) -> Any:
        """Precision's input conversion, then on_before_batch_transfer -> transfer_batch_to_device ->
        on_after_batch_transfer, each returning the batch for the next. Nothing at all for plain CPU training."""
        if not self.prepares_batches:
            return batch
        batch = self.trainer.precision_plugin.convert_input(batch)
        device = self.trainer.strategy.root_device
        if not (self.custom_transfer or device.type != "cpu"):
            return batch
        for name, plan in self._transfer_plans:
            if plan:
                args = (batch, device, dataloader_idx) if name == "transfer_batch_to_device" else (batch, dataloader_idx)
                batch = self._run(name, plan, *args)
        return batch

    def _run(self, name: str, plan: Iterable[_Call], *args: Any) -> Any:
        """The one call path: name the running hook for `self.log`, call each method, restore the name."""
        fx = self._fx
        previous = fx["_current_fx_name"]
        fx["_current_fx_name"] = name
        try:
            result = None
            for _, method, is_module in plan:
                out = method(*args)
                if is_module:
                    result = out
            return result
        finally:
            fx["_current_fx_name"] = previous


    def _run_step(self, name: str, step: Callable[..., Any], *args: Any) -> Any:
        """`_run` for a step, one method: the same naming of the running hook, without the plan's loop."""
        fx = self._fx
        previous = fx["_current_fx_name"]
        fx["_current_fx_name"] = name
        try:
            return step(*args)
        finally:
            fx["_current_fx_name"] = previous


class ProfiledHooks(Hooks):
    """The same dispatch, timing every method with `trainer.profiler` (used only when a profiler is set)."""

    def _run_step(self, name: str, step: Callable[..., Any], *args: Any) -> Any:
        return self._run(name, ((f"[Strategy]{type(self.trainer.strategy).__name__}.{name}", step, True),), *args)

    def _run(self, name: str, plan: Iterable[_Call], *args: Any) -> Any:
        profiler = self.trainer.profiler
        fx = self._fx
        previous = fx["_current_fx_name"]
        fx["_current_fx_name"] = name
        try:
            result = None
            for label, method, is_module in plan:
                with profiler.profile(label):
                    out = method(*args)
                if is_module:
                    result = out
            return result
        finally:
            fx["_current_fx_name"] = previous
