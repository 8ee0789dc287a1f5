"""Fixtures shared by the test modules."""
import logging
import warnings

import pytest


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
