"""Lightning's import path for strategies: `from volt.strategies import DDPStrategy`."""
from volt.distributed import *  # noqa: F401,F403
from volt.distributed import __all__  # noqa: F401
