"""Helpers about model classes: whether a hook is overridden, and torchvision models by name."""
from typing import Any, Optional

from torch import nn


def is_overridden(method_name: str, instance: Optional[object] = None, parent: Optional[type] = None) -> bool:
    """Whether `instance` defines `method_name` differently from `parent` (by default the LightningModule,
    LightningDataModule or Callback base it derives from). A method set to None counts as not overridden."""
    if instance is None:
        return False
    if parent is None:
        from volt.callbacks.callback import Callback
        from volt.datamodule import LightningDataModule
        from volt.module import LightningModule

        parent = next((base for base in (LightningModule, LightningDataModule, Callback) if isinstance(instance, base)),
                      None)
        if parent is None:
            raise ValueError(f"is_overridden: Expected a parent class to compare with; {type(instance).__name__} is "
                             "not a LightningModule, LightningDataModule or Callback, so pass `parent=`.")
    method = getattr(instance, method_name, None)
    method = getattr(method, "__wrapped__", method)  # functools.wraps, contextmanager: what is wrapped counts
    if method is None:
        return False
    base = getattr(parent, method_name, None)
    if base is None:
        raise ValueError(f"is_overridden: {parent.__name__} has no method {method_name!r} to compare with.")
    return _code(method) is not _code(base)


def _code(method: Any) -> Any:
    function = getattr(method, "__func__", method)  # bound methods
    return getattr(function, "__code__", function)


def get_torchvision_model(model_name: str, **kwargs: Any) -> nn.Module:
    """`torchvision.models.get_model(model_name, **kwargs)`, with an install hint when torchvision is missing."""
    try:
        from torchvision import models
    except ImportError as err:
        raise ModuleNotFoundError(f"get_torchvision_model({model_name!r}) needs torchvision: "
                                  "`pip install torchvision`.") from err
    return models.get_model(model_name, **kwargs)
