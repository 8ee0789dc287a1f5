"""Small helpers shared across volt, under Lightning's import paths (`volt.utilities.rank_zero_only`, ...)."""
from volt.utilities.apply_func import apply_to_collection, move_data_to_device
from volt.utilities.exceptions import MisconfigurationException
from volt.utilities.rank_zero import rank_zero_debug, rank_zero_info, rank_zero_only, rank_zero_warn
from volt.utilities.seed import seed_everything

__all__ = [
    "apply_to_collection",
    "move_data_to_device",
    "measure_flops",
    "MisconfigurationException",
    "rank_zero_debug",
    "rank_zero_info",
    "rank_zero_only",
    "rank_zero_warn",
    "seed_everything",
]


def __getattr__(name):
    if name == "measure_flops":  # loaded on first use, like the other optional parts
        from volt.utilities.throughput import measure_flops

        return measure_flops
    raise AttributeError(f"module 'volt.utilities' has no attribute {name!r}")
