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
