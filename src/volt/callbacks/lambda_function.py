"""LambdaCallback: a callback made of plain functions, one per hook."""
from typing import Callable, Optional

from volt.callbacks.callback import Callback

# Every hook a LambdaCallback accepts: Callback's hooks except the checkpoint state pair, as in Lightning.
HOOK_NAMES = tuple(name for name in vars(Callback) if name.startswith("on_") or name in ("setup", "teardown"))


class LambdaCallback(Callback):
    """Build a callback on the fly: `LambdaCallback(on_train_epoch_end=lambda trainer, pl_module: ...)`.

    Each keyword is a hook name; its function is called with the hook's arguments (trainer, pl_module, ...).
    Only the hooks given become part of the callback, so the Trainer calls nothing else on it.
    """

    def __init__(self, **hooks: Optional[Callable]) -> None:
        unknown = sorted(set(hooks) - set(HOOK_NAMES))
        if unknown:
            raise TypeError(f"LambdaCallback got unknown hook name(s) {unknown}; the hooks are: {list(HOOK_NAMES)}.")
        for name, function in hooks.items():
            if function is None:
                continue
            if not callable(function):
                raise TypeError(f"LambdaCallback({name}=...) must be a function, got {type(function).__name__}.")
            setattr(self, name, function)
