"""Run or print something on global rank 0 only.

The rank is read once from the environment (set by torchrun, SLURM or volt's own launcher) and updated by the
strategy when the process group is created.
"""
import logging
import os
import warnings
from functools import wraps

log = logging.getLogger("volt")


def _rank_from_env() -> int:
    for key in ("RANK", "SLURM_PROCID", "LOCAL_RANK", "JSM_NAMESPACE_RANK"):
        if key in os.environ:
            return int(os.environ[key])
    return 0


def rank_zero_only(fn):
    """Decorator: call `fn` only on global rank 0; other ranks get None."""

    @wraps(fn)
    def wrapped(*args, **kwargs):
        if rank_zero_only.rank == 0:
            return fn(*args, **kwargs)
        return None

    return wrapped


rank_zero_only.rank = _rank_from_env()


@rank_zero_only
def rank_zero_warn(message, category=UserWarning, stacklevel: int = 4, **kwargs):
    warnings.warn(message, category, stacklevel=stacklevel, **kwargs)


@rank_zero_only
def rank_zero_info(message, *args, **kwargs):
    log.info(message, *args, **kwargs)


@rank_zero_only
def rank_zero_debug(message, *args, **kwargs):
    log.debug(message, *args, **kwargs)
