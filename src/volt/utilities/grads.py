"""Gradient norms to log, e.g. `self.log_dict(grad_norm(self, norm_type=2))` in `on_before_optimizer_step`, and
gradient clipping."""
from typing import Dict, Iterable, Union

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


def clip_grads(parameters: Iterable[torch.Tensor], clip_val: Union[int, float], algorithm: str = "norm") -> None:
    """Clip the gradients of `parameters` in place: their total 2-norm to `clip_val` ("norm") or each value to
    [-clip_val, clip_val] ("value"). Parameters without a gradient are skipped."""
    grads = [p for p in parameters if p.grad is not None]
    if not grads:
        return
    if str(algorithm).lower() == "value":
        torch.nn.utils.clip_grad_value_(grads, clip_val)
    else:
        torch.nn.utils.clip_grad_norm_(grads, clip_val)
