"""Fixtures shared by the test modules."""
import logging
import warnings

import pytest
import torch


@pytest.fixture
def quiet_lightning():
    """pytorch_lightning (the test oracle), imported without its log lines and warnings; skips if not installed."""
    pytest.importorskip("pytorch_lightning")
    logger = logging.getLogger("pytorch_lightning")
    level = logger.level
    logger.setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pytorch_lightning

        yield pytorch_lightning
    logger.setLevel(level)


@pytest.fixture
def one_torch_thread():
    """For tests with BatchNorm layers: its CPU kernel splits even a 4x16 batch over every intra-op thread, and on
    a shared, loaded machine each call then waits ~80 ms for a core. One thread computes the same values."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


_LAUNCH_VARIABLES = ("MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "RANK", "LOCAL_RANK", "NODE_RANK", "LOCAL_WORLD_SIZE")


@pytest.fixture(autouse=True)
def no_process_group_left_behind(request):
    """A test that leaves torch.distributed initialized in the pytest process, or its launch variables in the
    environment, changes what later tests see (DCP then assumes a multi-process save, Lightning evaluates without
    inference mode under gloo, a later Trainer joins a "world"): undo it here, and say which test left it."""
    import os

    before = {name: os.environ.get(name) for name in _LAUNCH_VARIABLES}
    yield
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
        warnings.warn(f"{request.node.nodeid} left a torch.distributed process group initialized", stacklevel=1)
    for name, value in before.items():
        if os.environ.get(name) != value:
            warnings.warn(f"{request.node.nodeid} left {name}={os.environ.get(name)!r} in the environment",
                          stacklevel=1)
            if value is None:
                del os.environ[name]
            else:
                os.environ[name] = value
