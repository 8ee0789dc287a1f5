"""Lightning's import path for strategies: `from volt.strategies import DDPStrategy`."""
import volt.distributed as _distributed

__all__ = list(_distributed.__all__)


def __getattr__(name):
    return getattr(_distributed, name)
