"""Gradient norms to log, e.g. `self.log_dict(grad_norm(self, norm_type=2))` in `on_before_optimizer_step`."""
from typing import Dict, Union

import torch
from torch.nn import Module


def grad_norm(module: Module, norm_type: Union[float, int, str], group_separator: str = "/") -> Dict[str, torch.Tensor]:
    """The p-norm of each parameter's gradient, keyed `grad_{p}_norm{sep}{name}`, and of all of them together,
    keyed `grad_{p}_norm_total` (the norm of the gradients concatenated). Parameters without a gradient are left out.
    `norm_type` is a positive number or "inf"."""
    norm_type = float(norm_type)
    if norm_type <= 0:
        raise ValueError(f"grad_norm: `norm_type` must be a positive number or 'inf', got {norm_type}.")
    norms = {f"grad_{norm_type}_norm{group_separator}{name}": p.grad.detach().norm(norm_type)
             for name, p in module.named_parameters() if p.grad is not None}
    if norms:
        norms[f"grad_{norm_type}_norm_total"] = torch.stack(list(norms.values())).norm(norm_type)
    return norms
