"""The model summary table (Lightning's `utilities.model_summary`): layers, parameter counts, sizes and FLOPs.

    `summarize(model, max_depth)` builds it (a `ModelSummary`, alias `Summary`; `str()` gives Lightning's text).
    The `ModelSummary` and `RichModelSummary` callbacks (volt/callbacks/model_summary.py) show it when fit starts.

With `model.example_input_array` set, the summary runs that input through the model once (eval mode, no grad) to
add input/output sizes and FLOPs per layer.
"""
import math
from typing import Any, Dict, List, Tuple

import torch
from torch import nn

from volt.utilities.apply_func import apply_to_collection, move_data_to_device
from volt.utilities.rank_zero import rank_zero_warn

_UNITS = [" ", "K", "M", "B", "T"]
_UNKNOWN_SIZE = "?"
_NOT_APPLICABLE = "n/a"

SummaryData = List[Tuple[str, List[str]]]


class Summary:
    """The layers of a module (its children, or deeper with `max_depth`), with their sizes.

    Args:
        model: the module to describe (usually a LightningModule); it is not changed.
        max_depth: how deep to list submodules: 1 the direct children, -1 all, 0 none.
    """

    def __init__(self, model: nn.Module, max_depth: int = 1) -> None:
        if not isinstance(max_depth, int) or isinstance(max_depth, bool) or max_depth < -1:
            raise ValueError(f"max_depth={max_depth!r}: use -1 (all layers), 0 (none) or a positive int.")
        self._model = model
        self._max_depth = max_depth
        self._layers: Dict[str, nn.Module] = dict(self._listed_modules())
        self._in_sizes: Dict[str, Any] = {}
        self._out_sizes: Dict[str, Any] = {}
        self._flops: Dict[str, int] = {}
        self.total_flops = 0
        if getattr(model, "example_input_array", None) is not None:
            self._run_example_input()

    def _listed_modules(self):
        if self._max_depth == 0:
            return []
        if self._max_depth == 1:
            return list(self._model.named_children())
        modules = list(self._model.named_modules())[1:]  # the root is the table, not a row
        if self._max_depth > 1:
            modules = [(name, m) for name, m in modules if name.count(".") < self._max_depth]
        return modules

    def _run_example_input(self) -> None:
        """One forward pass of `example_input_array` that records each listed layer's input/output shape and FLOPs."""
        from torch.utils.flop_counter import FlopCounterMode

        model = self._model
        example = _prepare_example_input(model, model.example_input_array)
        handles = [module.register_forward_hook(self._size_hook(name), with_kwargs=True)
                   for name, module in self._layers.items() if not isinstance(module, torch.jit.ScriptModule)]
        modes = {module: module.training for module in model.modules()}
        counter = FlopCounterMode(display=False, depth=None)
        model.eval()
        try:
            with torch.no_grad(), counter:
                if isinstance(example, (list, tuple)):
                    model(*example)
                elif isinstance(example, dict):
                    model(**example)
                else:
                    model(example)
        finally:
            for handle in handles:
                handle.remove()
            for module, training in modes.items():
                module.training = training
        root = type(model).__name__
        counts = counter.get_flop_counts()
        self._flops = {name: sum(counts.get(f"{root}.{name}", {}).values()) for name in self._layers}
        self.total_flops = counter.get_total_flops()

    def _size_hook(self, name: str):
        def hook(module, args, kwargs, output):
            if name in self._in_sizes:  # a module used twice reports its first call
                return
            inputs = (*args, *kwargs.values())
            self._in_sizes[name] = _shape_of(inputs[0] if len(inputs) == 1 else inputs)
            self._out_sizes[name] = _shape_of(output)

        return hook

    @property
    def layer_names(self) -> List[str]:
        return list(self._layers)

    @property
    def layer_types(self) -> List[str]:
        return [type(module).__name__ for module in self._layers.values()]

    @property
    def in_sizes(self) -> list:
        return [self._in_sizes.get(name, _UNKNOWN_SIZE) for name in self._layers]

    @property
    def out_sizes(self) -> list:
        return [self._out_sizes.get(name, _UNKNOWN_SIZE) for name in self._layers]

    @property
    def param_nums(self) -> List[int]:
        return [_count(module.parameters()) for module in self._layers.values()]

    @property
    def training_modes(self) -> List[bool]:
        return [module.training for module in self._layers.values()]

    @property
    def total_training_modes(self) -> Dict[str, int]:
        modes = [module.training for module in self._model.modules()][1:]
        return {"train": modes.count(True), "eval": modes.count(False)}

    @property
    def total_parameters(self) -> int:
        return _count(self._model.parameters())

    @property
    def trainable_parameters(self) -> int:
        return _count(p for p in self._model.parameters() if p.requires_grad)

    @property
    def model_size(self) -> float:
        """Megabytes the parameters take, from their actual dtypes."""
        return sum(p.numel() * p.element_size() for p in self._model.parameters() if _materialized(p)) / 1e6

    @property
    def flop_counts(self) -> Dict[str, int]:
        return {name: self._flops.get(name, 0) for name in self._layers}

    def summary_data(self) -> SummaryData:
        """The table's columns as `(header, cells)` pairs, the form `ModelSummary.summarize` receives."""
        columns = [
            (" ", [str(i) for i in range(len(self._layers))]),
            ("Name", self.layer_names),
            ("Type", self.layer_types),
            ("Params", [get_human_readable_count(n) for n in self.param_nums]),
            ("Mode", ["train" if training else "eval" for training in self.training_modes]),
            ("FLOPs", [get_human_readable_count(n) for n in self.flop_counts.values()]),
        ]
        if getattr(self._model, "example_input_array", None) is not None:
            columns.append(("In sizes", [str(size) for size in self.in_sizes]))
            columns.append(("Out sizes", [str(size) for size in self.out_sizes]))
        # parameters that belong to no listed layer (registered on the model itself) get a row of their own
        if self._max_depth != 0:
            own = _count(self._model.parameters(recurse=False))
            if own:
                for header, cells in columns:
                    cells.append({" ": " ", "Name": "other params", "Params": get_human_readable_count(own)}
                                 .get(header, _NOT_APPLICABLE))
        return columns

    def __str__(self) -> str:
        return format_summary_table(self.total_parameters, self.trainable_parameters, self.model_size,
                                    self.total_training_modes, self.total_flops, *self.summary_data())

    __repr__ = __str__


def summarize(model: nn.Module, max_depth: int = 1) -> Summary:
    """The summary of `model`'s layers down to `max_depth` (-1: all); `print()` it for Lightning's table."""
    return Summary(model, max_depth=max_depth)


def format_summary_table(total_parameters: int, trainable_parameters: int, model_size: float,
                         total_training_modes: Dict[str, int], total_flops: int,
                         *columns: Tuple[str, List[str]]) -> str:
    """Lightning's plain-text summary: the columns, a rule, then one line per total."""
    widths = [max([len(header)] + [len(str(cell)) for cell in cells]) for header, cells in columns]
    rule = "-" * (sum(widths) + 3 * (len(columns) + 1))
    lines = [" | ".join(f"{header:<{w}}" for (header, _), w in zip(columns, widths)), rule]
    for row in zip(*(cells for _, cells in columns)):
        lines.append(" | ".join(f"{str(cell):<{w}}" for cell, w in zip(row, widths)))
    lines.append(rule)
    for label, value in summary_totals(total_parameters, trainable_parameters, model_size, total_training_modes,
                                total_flops):
        lines.append(f"{value:<10}{label}")
    return "\n".join(lines)


def summary_totals(total_parameters, trainable_parameters, model_size, total_training_modes, total_flops):
    return [
        ("Trainable params", get_human_readable_count(trainable_parameters)),
        ("Non-trainable params", get_human_readable_count(total_parameters - trainable_parameters)),
        ("Total params", get_human_readable_count(total_parameters)),
        ("Total estimated model params size (MB)", get_formatted_model_size(model_size)),
        ("Modules in train mode", str(total_training_modes["train"])),
        ("Modules in eval mode", str(total_training_modes["eval"])),
        ("Total Flops", get_human_readable_count(total_flops)),
    ]


def get_formatted_model_size(total_model_size: float) -> str:
    """A model size in MB as the summary prints it: 1234.5678 -> '1,234.568'."""
    return f"{total_model_size:,.3f}"


def get_human_readable_count(number: int) -> str:
    """A count shortened with K, M, B, T: 123 -> '123  ', 1234 -> '1.2 K', 2e6 -> '2.0 M', 5e15 -> '5,000 T'."""
    if number < 0:
        raise ValueError(f"get_human_readable_count({number}): counts cannot be negative.")
    digits = int(math.floor(math.log10(number)) + 1) if number > 0 else 1
    groups = min(int(math.ceil(digits / 3)), len(_UNITS))
    scaled = number * 10 ** (-3 * (groups - 1))
    if groups == 1 or scaled >= 100:
        return f"{int(scaled):,d} {_UNITS[groups - 1]}"
    return f"{scaled:,.1f} {_UNITS[groups - 1]}"


def _materialized(p: torch.Tensor) -> bool:
    return not isinstance(p, nn.parameter.UninitializedParameter)


def _count(parameters) -> int:
    total = 0
    for p in parameters:
        if _materialized(p):
            total += p.numel()
        else:
            rank_zero_warn("The model has lazy (uninitialized) parameters, so the parameter counts leave them out. "
                           "Set `example_input_array` on the model to count them.")
    return total


def _shape_of(value: Any) -> Any:
    if hasattr(value, "shape"):
        return list(value.shape)
    if isinstance(value, (list, tuple)):
        return [_shape_of(v) for v in value]
    return _UNKNOWN_SIZE


def _prepare_example_input(model: nn.Module, example: Any) -> Any:
    """Move the example to the model's device and floating dtype, through the module's batch-transfer hooks."""
    parameter = next(model.parameters(), None)
    if parameter is None:
        return example
    if hasattr(model, "transfer_batch_to_device"):  # a LightningModule: use its hooks, as a real batch would
        example = model.on_before_batch_transfer(example, 0)
        example = model.transfer_batch_to_device(example, parameter.device, 0)
        example = model.on_after_batch_transfer(example, 0)
    else:
        example = move_data_to_device(example, parameter.device)
    if parameter.is_floating_point():
        example = apply_to_collection(example, torch.Tensor,
                                      lambda t: t.to(parameter.dtype) if t.is_floating_point() else t)
    return example


ModelSummary = Summary  # Lightning's name for the summary object

__all__ = ["ModelSummary", "Summary", "format_summary_table", "get_formatted_model_size", "get_human_readable_count",
           "summarize"]
