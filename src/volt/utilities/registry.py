"""Callbacks that installed packages add to every Trainer, through entry points (as Lightning).

A package registers a factory (a function returning a Callback, a list of them, or nothing) under the entry-point
group `lightning.pytorch.callbacks_factory` (or `pytorch_lightning.callbacks_factory`), e.g. in its pyproject.toml:

    [project.entry-points."lightning.pytorch.callbacks_factory"]
    my_callbacks = "my_package.callbacks:factory"
"""
import sys
from importlib.metadata import entry_points
from typing import Any, Dict, List, Tuple

from volt.utilities.rank_zero import rank_zero_info

CALLBACK_GROUPS = ("lightning.pytorch.callbacks_factory", "pytorch_lightning.callbacks_factory")
_REGISTERED: Dict[Tuple[Any, ...], list] = {}


def _registered(group: str) -> list:
    """The group's entry points. Reading every installed package's metadata takes ~20 ms, so once per `sys.path`
    (a folder added to it may hold packages; a replaced `entry_points`, as a test patches it, is asked again)."""
    key = (entry_points, group, tuple(sys.path))
    if key not in _REGISTERED:
        _REGISTERED[key] = list(entry_points(group=group))
    return _REGISTERED[key]


def load_external_callbacks(groups: Tuple[str, ...] = CALLBACK_GROUPS) -> List[Any]:
    """The callbacks every factory registered under `groups` makes now (new instances for each Trainer)."""
    callbacks, seen = [], set()
    for group in groups:
        for entry_point in _registered(group):
            if (entry_point.name, entry_point.value) in seen:  # registered under both groups
                continue
            seen.add((entry_point.name, entry_point.value))
            made = entry_point.load()()
            made = [] if made is None else list(made) if isinstance(made, (list, tuple)) else [made]
            if made:
                rank_zero_info(f"Adding {len(made)} callbacks from entry point {entry_point.name!r}: "
                               f"{', '.join(type(callback).__name__ for callback in made)}")
            callbacks.extend(made)
    return callbacks
