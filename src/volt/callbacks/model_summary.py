"""The model summary shown when `fit` starts, as in Lightning: `ModelSummary` logs the table on rank 0,
`RichModelSummary` prints it with `rich`. The table itself is `volt.utilities.model_summary`."""
import importlib.util
import logging
from typing import Any, Dict

from volt.callbacks.callback import Callback
from volt.utilities.imports import import_isolated
from volt.utilities.model_summary import (SummaryData, summary_totals, format_summary_table, get_human_readable_count,
                                          summarize)

log = logging.getLogger(__name__)

__all__ = ["ModelSummary", "RichModelSummary", "get_human_readable_count", "summarize"]


class ModelSummary(Callback):
    """Log the model summary table when `fit` starts (on rank 0, to the `volt` logger at INFO level).

    Args:
        max_depth: how deep to list submodules: 1 the direct children, -1 all, 0 no summary.
        **summarize_kwargs: passed on to `summarize` (used by subclasses, e.g. `header_style` for RichModelSummary).
    """

    def __init__(self, max_depth: int = 1, **summarize_kwargs: Any) -> None:
        if not isinstance(max_depth, int) or isinstance(max_depth, bool) or max_depth < -1:
            raise ValueError(f"ModelSummary(max_depth={max_depth!r}): use -1 (all layers), 0 (no summary) or a "
                             "positive int.")
        self._max_depth = max_depth
        self._summarize_kwargs = summarize_kwargs

    def on_fit_start(self, trainer, pl_module) -> None:
        if not self._max_depth:
            return
        summary = summarize(pl_module, max_depth=self._max_depth)
        if trainer.is_global_zero:
            self.summarize(summary.summary_data(), summary.total_parameters, summary.trainable_parameters,
                           summary.model_size, summary.total_training_modes, total_flops=summary.total_flops,
                           **self._summarize_kwargs)

    @staticmethod
    def summarize(summary_data: SummaryData, total_parameters: int, trainable_parameters: int, model_size: float,
                  total_training_modes: Dict[str, int], total_flops: int = 0, **summarize_kwargs: Any) -> None:
        """Show the table; override to send it elsewhere."""
        log.info("\n" + format_summary_table(total_parameters, trainable_parameters, model_size,
                                             total_training_modes, total_flops, *summary_data))


class RichModelSummary(ModelSummary):
    """ModelSummary drawn as a rich table on the console. Needs `rich` (`pip install rich`).

    Args:
        max_depth: as for ModelSummary.
        **summarize_kwargs: `header_style` (default "bold magenta").
    """

    def __init__(self, max_depth: int = 1, **summarize_kwargs: Any) -> None:
        if importlib.util.find_spec("rich") is None:
            raise ModuleNotFoundError("RichModelSummary needs the `rich` package: install it with `pip install rich`, "
                                      "or use ModelSummary.")
        super().__init__(max_depth, **summarize_kwargs)

    @staticmethod
    def summarize(summary_data: SummaryData, total_parameters: int, trainable_parameters: int, model_size: float,
                  total_training_modes: Dict[str, int], total_flops: int = 0, **summarize_kwargs: Any) -> None:
        rich_table = import_isolated("rich.table")  # maybe the run's first rich import: keep its RNGs as they are
        table = rich_table.Table(header_style=summarize_kwargs.get("header_style", "bold magenta"))
        right_aligned = {"Params", "FLOPs", "In sizes", "Out sizes"}
        for header, _ in summary_data:
            table.add_column(header, justify="right" if header in right_aligned else "left",
                             style="dim" if header == " " else None, no_wrap=header == "Name")
        for row in zip(*(cells for _, cells in summary_data)):
            table.add_row(*row)

        totals = rich_table.Table.grid(expand=True)
        totals.add_column()
        for label, value in summary_totals(total_parameters, trainable_parameters, model_size, total_training_modes,
                                    total_flops):
            totals.add_row(f"[bold]{label}[/]: {value}")
        console = import_isolated("rich").get_console()
        console.print(table)
        console.print(totals)
