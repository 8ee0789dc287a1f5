"""Parameters shared between layers (tied weights): find them, and tie them again after a move that untied them."""
from typing import Dict, List

from torch import nn


def find_shared_parameters(module: nn.Module) -> List[List[str]]:
    """Groups of parameter names that point to one tensor, e.g. [["encoder.weight", "decoder.weight"]]."""
    names_by_tensor: Dict[int, List[str]] = {}
    for prefix, submodule in module.named_modules():
        for name, param in submodule.named_parameters(recurse=False, remove_duplicate=False):
            names_by_tensor.setdefault(id(param), []).append(f"{prefix}.{name}" if prefix else name)
    return [names for names in names_by_tensor.values() if len(names) > 1]


def set_shared_parameters(module: nn.Module, shared_params: List[List[str]]) -> nn.Module:
    """Make every name in each group point to the first name's parameter again."""
    for names in shared_params:
        first = module.get_parameter(names[0])
        for name in names[1:]:
            owner_name, _, attribute = name.rpartition(".")
            setattr(module.get_submodule(owner_name), attribute, first)
    return module
