"""Small helpers shared across volt, under Lightning's import paths (`volt.utilities.rank_zero_only`, ...).

The ones `import volt` does not need load on first use.
"""
import importlib

from volt.utilities.apply_func import apply_to_collection, move_data_to_device
from volt.utilities.exceptions import MisconfigurationException
from volt.utilities.rank_zero import (rank_zero_debug, rank_zero_deprecation, rank_zero_info, rank_zero_only,
                                      rank_zero_warn)
from volt.utilities.seed import seed_everything

_LAZY = {
    "AttributeDict": "volt.utilities.parsing",
    "CombinedLoader": "volt.utilities.combined_loader",
    "GradClipAlgorithmType": "volt.utilities.enums",
    "LightningEnum": "volt.utilities.enums",
    "disable_possible_user_warnings": "volt.utilities.warnings",
    "find_shared_parameters": "volt.utilities.parameter_tying",
    "grad_norm": "volt.utilities.grads",
    "is_picklable": "volt.utilities.parsing",
    "is_shared_filesystem": "volt.utilities.distributed",
    "measure_flops": "volt.utilities.throughput",
    "set_shared_parameters": "volt.utilities.parameter_tying",
    "suggested_max_num_workers": "volt.utilities.data",
    "Throughput": "volt.utilities.throughput",
}

__all__ = [
    "apply_to_collection",
    "move_data_to_device",
    "MisconfigurationException",
    "rank_zero_debug",
    "rank_zero_deprecation",
    "rank_zero_info",
    "rank_zero_only",
    "rank_zero_warn",
    "seed_everything",
    *_LAZY,
]


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'volt.utilities' has no attribute {name!r}")
