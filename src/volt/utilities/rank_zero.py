"""Run or print something on global rank 0 only.

The rank is read once from the environment (set by torchrun, SLURM or volt's own launcher) and updated by the
strategy (`set_rank`) when the process group is created. When `lightning_utilities` is imported (by torchmetrics or
user code), its `rank_zero_only.rank` gets the same rank, as importing Lightning does.
"""
import logging
import os
import sys
import warnings
from functools import wraps
from typing import Any, Optional

log = logging.getLogger("volt")
_UTILITIES_RANK_MODULE = "lightning_utilities.core.rank_zero"


def _rank_from_env() -> int:
    for key in ("RANK", "SLURM_PROCID", "LOCAL_RANK", "JSM_NAMESPACE_RANK"):
        if key in os.environ:
            return int(os.environ[key])
    return 0


def rank_zero_only(fn, default: Any = None):
    """Decorator: call `fn` only on global rank 0; other ranks get `default`."""

    @wraps(fn)
    def wrapped(*args, **kwargs):
        if rank_zero_only.rank == 0:
            return fn(*args, **kwargs)
        return default

    return wrapped


rank_zero_only.rank = _rank_from_env()


def set_rank(rank: int) -> None:
    """This process's global rank, for volt's and lightning_utilities' `rank_zero_only`."""
    rank_zero_only.rank = rank
    utilities = sys.modules.get(_UTILITIES_RANK_MODULE)
    if utilities is not None:
        utilities.rank_zero_only.rank = rank


class _ShareRankWithLightningUtilities:
    """A `sys.meta_path` entry that gives `lightning_utilities`' rank_zero_only volt's rank right after that module
    is imported. Importing lightning_utilities here instead would add ~20 ms to every `import volt`."""

    def find_spec(self, fullname: str, path=None, target=None):
        if fullname != _UTILITIES_RANK_MODULE:
            return None
        from importlib.machinery import PathFinder

        spec = PathFinder.find_spec(fullname, path)
        if spec is not None and spec.loader is not None:
            spec.loader = _SetRankAfterLoading(spec.loader)
        return spec


class _SetRankAfterLoading:
    def __init__(self, loader) -> None:
        self.loader = loader

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module) -> None:
        self.loader.exec_module(module)
        module.rank_zero_only.rank = rank_zero_only.rank


if _UTILITIES_RANK_MODULE in sys.modules:
    set_rank(rank_zero_only.rank)
elif not any(isinstance(finder, _ShareRankWithLightningUtilities) for finder in sys.meta_path):
    sys.meta_path.insert(0, _ShareRankWithLightningUtilities())  # before the finder that would load it plainly


class LightningDeprecationWarning(DeprecationWarning):
    """Something a Lightning program uses is deprecated (shown by default, unlike DeprecationWarning)."""


warnings.simplefilter("default", category=LightningDeprecationWarning)


@rank_zero_only
def rank_zero_warn(message, category=UserWarning, stacklevel: int = 4, **kwargs):
    warnings.warn(message, category, stacklevel=stacklevel, **kwargs)


@rank_zero_only
def rank_zero_deprecation(message, stacklevel: int = 5, **kwargs):
    warnings.warn(message, LightningDeprecationWarning, stacklevel=stacklevel, **kwargs)


@rank_zero_only
def rank_zero_info(message, *args, **kwargs):
    log.info(message, *args, **kwargs)


@rank_zero_only
def rank_zero_debug(message, *args, **kwargs):
    log.debug(message, *args, **kwargs)


def rank_prefixed_message(message: str, rank: Optional[int]) -> str:
    """`message` prefixed with `[rank: N] ` when the rank is known."""
    return f"[rank: {rank}] {message}" if rank is not None else message


class WarningCache(set):
    """Warn (or inform) once per distinct message, on rank 0."""

    def warn(self, message: str, stacklevel: int = 5, **kwargs: Any) -> None:
        if message not in self:
            self.add(message)
            rank_zero_warn(message, stacklevel=stacklevel, **kwargs)

    def deprecation(self, message: str, stacklevel: int = 6, **kwargs: Any) -> None:
        if message not in self:
            self.add(message)
            rank_zero_deprecation(message, stacklevel=stacklevel, **kwargs)

    def info(self, message: str, **kwargs: Any) -> None:
        if message not in self:
            self.add(message)
            rank_zero_info(message, **kwargs)
