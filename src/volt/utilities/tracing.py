"""Tracing a LightningModule that no Trainer runs (e.g. `TensorBoardLogger.log_graph` before or without a fit).

torch's tracers read every attribute of the module they trace, and `LightningModule.trainer` raises while no Trainer
is attached: inside `tracing_module()` it reads None instead (what Lightning's `_jit_is_scripting` does).
"""
from contextlib import contextmanager

_depth = 0  # how many `tracing_module()` blocks are open


@contextmanager
def tracing_module():
    global _depth
    _depth += 1
    try:
        yield
    finally:
        _depth -= 1


def is_tracing_module() -> bool:
    return _depth > 0
