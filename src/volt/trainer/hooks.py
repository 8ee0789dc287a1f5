"""Hook dispatch: call a hook only on the callbacks (and the module/datamodule) that override it.

Built once per `fit`/`validate`/`test`/`predict`, so a hook nobody overrides costs one dict look-up per call.
"""
from typing import Any, Dict, List

from volt.callbacks.callback import Callback
from volt.datamodule import LightningDataModule
from volt.module import LightningModule

CALLBACK_HOOKS = [name for name in vars(Callback) if name.startswith("on_") or name in ("setup", "teardown")]
# 1.x hooks that LightningModule no longer defines: a module that has one overrides it.
LEGACY_MODULE_HOOKS = ("training_epoch_end", "validation_epoch_end", "test_epoch_end")


def _overrides(obj: Any, base: type, name: str) -> bool:
    if name in getattr(obj, "__dict__", {}):  # assigned on the instance, e.g. datamodule.setup = fn
        return True
    return getattr(type(obj), name, None) is not getattr(base, name, None)


def _is_monitoring(callback: Callback) -> bool:
    from volt.callbacks import EarlyStopping, ModelCheckpoint

    return isinstance(callback, (EarlyStopping, ModelCheckpoint))


class Hooks:
    """Calls hooks in Lightning's order: callbacks first, then the module (datamodule where it has the hook)."""

    def __init__(self, trainer, callbacks: List[Callback], module: LightningModule, datamodule=None) -> None:
        self.trainer = trainer
        self.module = module
        self.datamodule = datamodule
        self._callbacks: Dict[str, List[Callback]] = {
            name: [cb for cb in callbacks if _overrides(cb, Callback, name)] for name in CALLBACK_HOOKS
        }
        self._methods = {name: [getattr(cb, name) for cb in cbs] for name, cbs in self._callbacks.items()}
        self._module_overrides = {
            name for name in dir(LightningModule)
            if not name.startswith("__") and callable(getattr(LightningModule, name, None))
            and _overrides(module, LightningModule, name)
        } | {name for name in LEGACY_MODULE_HOOKS if callable(getattr(module, name, None))}
        self._monitoring = [cb for cb in self._callbacks["on_train_epoch_end"] if _is_monitoring(cb)]
        self._plain_epoch_end = [cb for cb in self._callbacks["on_train_epoch_end"] if not _is_monitoring(cb)]
        self._active = self._module_overrides | {name for name, cbs in self._callbacks.items() if cbs}
        self._build_transfer_chain()

    def module_overrides(self, name: str) -> bool:
        return name in self._module_overrides

    def callbacks(self, name: str, *args: Any) -> None:
        """Run `name` on every callback that overrides it."""
        methods = self._methods[name]
        if not methods:
            return
        module, trainer = self.module, self.trainer
        fx = module.__dict__  # plain dict writes: nn.Module.__setattr__ is slow on the hot path
        previous = fx["_current_fx_name"]
        fx["_current_fx_name"] = name
        try:
            for method in methods:
                method(trainer, module, *args)
        finally:
            fx["_current_fx_name"] = previous

    def call_module(self, name: str, *args: Any, **kwargs: Any) -> Any:
        """Run the module's hook `name`; the default implementation runs too (it may do work, e.g. eval())."""
        fx = self.module.__dict__
        previous = fx["_current_fx_name"]
        fx["_current_fx_name"] = name
        try:
            return getattr(self.module, name)(*args, **kwargs)
        finally:
            fx["_current_fx_name"] = previous

    def module_hook(self, name: str, *args: Any) -> Any:
        """Run the module's hook only if the user overrides it (defaults are no-ops)."""
        if name in self._module_overrides:
            return self.call_module(name, *args)
        return None

    def call(self, name: str, *args: Any) -> Any:
        """Callbacks, then the module; nothing at all when nobody overrides `name`."""
        if name not in self._active:
            return None
        self.callbacks(name, *args)
        return self.module_hook(name, *args)

    def train_epoch_end(self) -> None:
        """Plain callbacks -> module -> monitoring callbacks (EarlyStopping, ModelCheckpoint), as Lightning."""
        module, trainer = self.module, self.trainer
        fx = module.__dict__
        fx["_current_fx_name"] = "on_train_epoch_end"
        try:
            for callback in self._plain_epoch_end:
                callback.on_train_epoch_end(trainer, module)
            self.module_hook("on_train_epoch_end")
            fx["_current_fx_name"] = "on_train_epoch_end"
            for callback in self._monitoring:
                callback.on_train_epoch_end(trainer, module)
        finally:
            fx["_current_fx_name"] = None

    def datamodule_hook(self, name: str, *args: Any) -> Any:
        if self.datamodule is not None and _overrides(self.datamodule, LightningDataModule, name):
            return getattr(self.datamodule, name)(*args)
        return None

    def batch_transfer(self, batch: Any, device, dataloader_idx: int) -> Any:
        """on_before_batch_transfer -> transfer_batch_to_device -> on_after_batch_transfer (datamodule, then module).

        On CPU with no overrides this is skipped entirely by the loops (`needs_transfer`).
        """
        for owner, name in self._transfer_chain:
            if name == "transfer_batch_to_device":
                batch = owner(name, batch, device, dataloader_idx)
            else:
                batch = owner(name, batch, dataloader_idx)
        return batch

    def _build_transfer_chain(self) -> None:
        def datamodule_call(name, *args):
            return getattr(self.datamodule, name)(*args)

        chain = []
        for name in ("on_before_batch_transfer", "transfer_batch_to_device", "on_after_batch_transfer"):
            if self.datamodule is not None and _overrides(self.datamodule, LightningDataModule, name):
                chain.append((datamodule_call, name))
            if name == "transfer_batch_to_device" or name in self._module_overrides:
                chain.append((self.call_module, name))
        self._transfer_chain = chain
        # the default chain is just the module's own transfer_batch_to_device: a no-op for CPU tensors on CPU
        self.custom_transfer = len(chain) > 1 or "transfer_batch_to_device" in self._module_overrides


class ProfiledHooks(Hooks):
    """Hooks that time every callback and module hook with `trainer.profiler` (only used when one is set)."""

    def callbacks(self, name: str, *args: Any) -> None:
        callbacks = self._callbacks[name]
        if not callbacks:
            return
        module, trainer, profiler = self.module, self.trainer, self.trainer.profiler
        fx = module.__dict__
        previous = fx["_current_fx_name"]
        fx["_current_fx_name"] = name
        try:
            for callback in callbacks:
                with profiler.profile(f"[Callback]{type(callback).__name__}.{name}"):
                    getattr(callback, name)(trainer, module, *args)
        finally:
            fx["_current_fx_name"] = previous

    def call_module(self, name: str, *args: Any, **kwargs: Any) -> Any:
        with self.trainer.profiler.profile(f"[LightningModule]{type(self.module).__name__}.{name}"):
            return super().call_module(name, *args, **kwargs)
