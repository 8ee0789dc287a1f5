"""Small helpers shared across volt, under Lightning's import paths (`volt.utilities.rank_zero_only`, ...)."""
from volt.utilities.apply_func import apply_to_collection, move_data_to_device
from volt.utilities.exceptions import MisconfigurationException
from volt.utilities.rank_zero import rank_zero_debug, rank_zero_info, rank_zero_only, rank_zero_warn
from volt.utilities.seed import seed_everything

__all__ = [
    "apply_to_collection",
    "move_data_to_device",
    "MisconfigurationException",
    "rank_zero_debug",
    "rank_zero_info",
    "rank_zero_only",
    "rank_zero_warn",
    "seed_everything",
]
