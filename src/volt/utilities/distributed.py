"""Questions about the processes of a multi-process run."""
import os
import time
import uuid
from pathlib import Path
from typing import Any, Optional, Union


def is_shared_filesystem(strategy: Any, path: Optional[Union[str, Path]] = None, timeout: int = 3) -> bool:
    """Whether every process sees the same files under `path` (default: the working directory), as on a network
    filesystem. Rank 0 writes a marker file and the others look for it for up to `timeout` seconds. Every rank must
    call this (it uses collectives). Remote URLs (s3://...) count as shared."""
    if path is not None and "://" in str(path) and not str(path).startswith("file://"):
        return True
    if strategy.world_size == 1:
        return True
    path = Path(os.getcwd() if path is None else path).resolve()
    if not strategy.reduce_boolean_decision(strategy.broadcast(path) == path, all=True):
        return False
    folder = path.parent if path.is_file() else path
    marker = folder / f".volt_shared_fs_check_{strategy.broadcast(uuid.uuid4().hex)}"
    if strategy.is_global_zero:
        marker.touch()
    strategy.barrier("is_shared_filesystem")
    deadline = time.monotonic() + timeout
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    shared = strategy.reduce_boolean_decision(marker.exists(), all=True)
    strategy.barrier("is_shared_filesystem")
    if strategy.is_global_zero:
        marker.unlink(missing_ok=True)
    return shared
