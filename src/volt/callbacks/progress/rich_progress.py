"""RichProgressBar: progress bars drawn with `rich` (imported only when the bar is created).

Unlike Lightning, no background thread redraws the display: the bar redraws itself from the batch hooks at most
`refresh_rate` times a second (and on the last batch), and reads metric values only then. One rich redraw takes
milliseconds, so volt draws at most `max_redraws_per_second` (5) times a second whatever `refresh_rate` says. The
bars' counts reach rich (whose `Progress.update` costs a few microseconds) at each redraw, and whenever a program
reads a bar (`train_progress_bar.completed` is the count after the last batch, as in Lightning).

The display's parts (CustomProgress, CustomBarColumn, BatchesProcessedColumn, CustomTimeColumn,
ProcessingSpeedColumn, MetricsTextColumn) are importable from here, for `configure_columns` overrides; they live in
`rich_columns`, which imports rich on first use.
"""
import importlib.util
import math
import sys
import time
from dataclasses import dataclass
from typing import Any, Dict, Optional, Union

from volt.callbacks.progress.progress_bar import SwitchableBar
from volt.utilities.imports import import_isolated

_RICH_PARTS = ("CustomProgress", "CustomBarColumn", "BatchesProcessedColumn", "CustomTimeColumn",
               "ProcessingSpeedColumn", "MetricsTextColumn")


def __getattr__(name: str):
    if name in _RICH_PARTS:
        value = getattr(import_isolated("volt.callbacks.progress.rich_columns"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _rich_part(name: str):
    """One of the display's parts, looked up on this module (where a test or a program may have replaced it)."""
    return getattr(sys.modules[__name__], name)


_monotonic = time.monotonic


@dataclass
class RichProgressBarTheme:
    """Styles of the bar's parts, as rich style strings (https://rich.readthedocs.io/en/stable/style.html)."""

    description: Any = ""
    progress_bar: Any = "#6206E0"
    progress_bar_finished: Any = "#6206E0"
    progress_bar_pulse: Any = "#6206E0"
    batch_progress: Any = ""
    time: Any = "dim"
    processing_speed: Any = "dim underline"
    metrics: Any = "italic"
    metrics_text_delimiter: str = " "
    metrics_format: str = ".3f"


class RichProgressBar(SwitchableBar):
    """Progress bars with rich text formatting. Needs `rich` (`pip install rich`).

    Args:
        refresh_rate: most redraws per second; 0 hides the bars.
        leave: keep each finished epoch's bar on screen.
        theme: a `RichProgressBarTheme` with the styles to use.
        console_kwargs: arguments for the `rich.console.Console` the bars draw on (e.g. `file`, `width`).
    """

    #: Upper bound on redraws per second: one redraw costs a few milliseconds of the training loop's time.
    max_redraws_per_second: float = 5.0

    def __init__(self, refresh_rate: int = 100, leave: bool = False,
                 theme: Optional[RichProgressBarTheme] = None,
                 console_kwargs: Optional[Dict[str, Any]] = None) -> None:
        if importlib.util.find_spec("rich") is None:
            raise ModuleNotFoundError("RichProgressBar needs the `rich` package: install it with `pip install rich`, "
                                      "or use TQDMProgressBar.")
        if not isinstance(refresh_rate, (int, float)) or isinstance(refresh_rate, bool) or refresh_rate < 0:
            raise ValueError(f"RichProgressBar(refresh_rate={refresh_rate!r}): use a number >= 0 (redraws per "
                             "second; 0 hides the bars).")
        super().__init__()
        self._refresh_rate = refresh_rate
        self._leave = leave
        self.theme = theme if theme is not None else RichProgressBarTheme()
        self._console_kwargs = dict(console_kwargs or {})
        self._enabled = True
        self.progress = None  # the last run's bars: readable after it ends (e.g. `train_progress_bar.total`)
        self._metric_component = None  # the MetricsTextColumn that shows the metrics beside the training bar
        self._live = False  # whether `progress` is drawing now
        self._counts: Dict[Any, int] = {}  # task id -> batches done, not yet handed to rich
        self._reset_progress_bar_ids()
        self._train_total: Optional[float] = None
        self._eval_total: Optional[float] = None
        self._next_draw = 0.0

    def __getstate__(self) -> dict:
        # the live display holds a console and locks; a pickled callback starts without them
        return {**vars(self), "progress": None, "_metric_component": None, "_live": False}

    @property
    def train_progress_bar(self):
        return self._task(self.train_progress_bar_id)

    @property
    def val_sanity_check_bar(self):
        return self._task(self.val_sanity_progress_bar_id)

    @property
    def val_progress_bar(self):
        return self._task(self.val_progress_bar_id)

    @property
    def test_progress_bar(self):
        return self._task(self.test_progress_bar_id)

    def _task(self, task_id):
        if self.progress is None or task_id is None:
            raise TypeError(f"This `{type(self).__name__}` bar has not been started yet.")
        self._send_counts()
        return self.progress.tasks[task_id]

    def _send_counts(self) -> None:
        """Hand rich the batch counts since the last redraw, through `update` (its speed estimate samples them)."""
        for task_id, n in self._counts.items():
            self.progress.update(task_id, completed=n)
        self._counts.clear()

    def _reset_progress_bar_ids(self) -> None:
        self.train_progress_bar_id = None
        self.val_sanity_progress_bar_id = None
        self.val_progress_bar_id = None
        self.test_progress_bar_id = None
        self.predict_progress_bar_id = None

    def configure_columns(self, trainer) -> list:
        """The columns left of the metrics; override to change the layout (with rich's columns or this module's)."""
        theme = self.theme
        return [
            import_isolated("rich.progress").TextColumn("[progress.description]{task.description}"),
            _rich_part("CustomBarColumn")(complete_style=theme.progress_bar, finished_style=theme.progress_bar_finished,
                                          pulse_style=theme.progress_bar_pulse),
            _rich_part("BatchesProcessedColumn")(style=theme.batch_progress),
            _rich_part("CustomTimeColumn")(style=theme.time),
            _rich_part("ProcessingSpeedColumn")(style=theme.processing_speed),
        ]

    def _init_progress(self, trainer) -> None:
        if self.is_disabled or self._live:
            return
        rich_console = import_isolated("rich.console")  # the run's first rich import: keep its RNGs as they are
        import_isolated("volt.callbacks.progress.rich_columns")

        self._reset_progress_bar_ids()
        self._counts.clear()  # a new Progress numbers its tasks from 0 again
        theme = self.theme
        self._metric_component = _rich_part("MetricsTextColumn")(trainer, theme.metrics, theme.metrics_text_delimiter,
                                                                 theme.metrics_format)
        self.progress = _rich_part("CustomProgress")(
            *self.configure_columns(trainer),
            self._metric_component,
            console=rich_console.Console(**self._console_kwargs),
            auto_refresh=False,
        )
        self.progress.start()
        self._live = True

    def _stop_progress(self) -> None:
        if self._live:
            self._send_counts()
            self.progress.stop()
            self._live = False

    def _add_task(self, total: Union[int, float], description: str):
        if self.theme.description:
            description = f"[{self.theme.description}]{description}"
        return self.progress.add_task(description, total=total)

    def _add_eval_task(self, total: Union[int, float], description: str):
        self._eval_total = total
        task_id = self._add_task(total, description)
        self._draw()
        return task_id

    def _hide(self, task_id) -> None:
        if self._live and task_id is not None:
            self.progress.update(task_id, visible=False)

    def _draw(self) -> None:
        self._send_counts()
        self.progress.refresh()
        self._next_draw = _monotonic() + 1.0 / min(self._refresh_rate, self.max_redraws_per_second)

    def _train_description(self, current_epoch: int) -> str:
        description = f"Epoch {current_epoch}"
        max_epochs = self.trainer.max_epochs
        if max_epochs is not None and max_epochs > 0:
            description += f"/{max_epochs - 1}"
        # pad to the validation bar's width, so the bars line up
        return f"{description:{len(self.validation_description)}}"

    def on_sanity_check_start(self, trainer, pl_module) -> None:
        self._init_progress(trainer)

    def on_sanity_check_end(self, trainer, pl_module) -> None:
        self._hide(self.val_sanity_progress_bar_id)
        self.reset_dataloader_idx_tracker()

    def on_train_start(self, trainer, pl_module) -> None:
        self._init_progress(trainer)
        if trainer.fit_loop.batches_into_epoch:  # resumed inside an epoch, which has no epoch start: its bar now
            self.on_train_epoch_start(trainer, pl_module)

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if self.is_disabled:
            return
        if self._leave and self.train_progress_bar_id is not None:
            self._stop_progress()  # the finished epoch's bar stays printed; the next one starts below it
            self._init_progress(trainer)
        if not self._live:
            self._init_progress(trainer)
        total = self.total_train_batches
        description = self._train_description(trainer.current_epoch)
        if self.train_progress_bar_id is None:
            self.train_progress_bar_id = self._add_task(total, description)
        else:
            self.progress.reset(self.train_progress_bar_id, total=total, description=description, visible=True)
        self._train_total = total
        self._draw()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        n = batch_idx + 1
        if self.train_progress_bar_id is not None:
            self._counts[self.train_progress_bar_id] = n
        if _monotonic() >= self._next_draw or n == self._train_total:
            with self.values_may_lag():  # a training step never waits for the device to show its metrics
                self._redraw_train(trainer, pl_module)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self._redraw_train(trainer, pl_module)

    def _redraw_train(self, trainer, pl_module) -> None:
        if not self._live or self.train_progress_bar_id is None or self.is_disabled:
            self._next_draw = math.inf
            return
        self._metric_component.update(self.get_metrics(trainer, pl_module))
        self._draw()

    def on_validation_start(self, trainer, pl_module) -> None:
        self._init_progress(trainer)
        if trainer.state.fn == "fit" and not trainer.sanity_checking:
            self._redraw_train(trainer, pl_module)  # the training bar shows where validation interrupts it

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        if self.is_disabled or not self.has_dataloader_changed(dataloader_idx):
            return
        if trainer.sanity_checking:
            self._hide(self.val_sanity_progress_bar_id)
            self.val_sanity_progress_bar_id = self._add_eval_task(self.total_val_batches_current_dataloader,
                                                                  self.sanity_check_description)
        else:
            self._hide(self.val_progress_bar_id)
            self.val_progress_bar_id = self._add_eval_task(self.total_val_batches_current_dataloader,
                                                           self.validation_description)

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int,
                                dataloader_idx: int = 0) -> None:
        task = self.val_sanity_progress_bar_id if trainer.sanity_checking else self.val_progress_bar_id
        self._advance(task, batch_idx + 1)

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if trainer.state.fn == "fit" and not trainer.sanity_checking:
            self._hide(self.val_progress_bar_id)

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.state.fn == "fit" and not trainer.sanity_checking:
            self._redraw_train(trainer, pl_module)
        elif trainer.state.fn == "validate":
            self._stop_progress()
        self.reset_dataloader_idx_tracker()

    def on_test_start(self, trainer, pl_module) -> None:
        self._init_progress(trainer)

    def on_test_batch_start(self, trainer, pl_module, batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        if self.is_disabled or not self.has_dataloader_changed(dataloader_idx):
            return
        self._hide(self.test_progress_bar_id)
        self.test_progress_bar_id = self._add_eval_task(self.total_test_batches_current_dataloader,
                                                        self.test_description)

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._advance(self.test_progress_bar_id, batch_idx + 1)

    def on_test_end(self, trainer, pl_module) -> None:
        self._stop_progress()
        self.reset_dataloader_idx_tracker()

    def on_predict_start(self, trainer, pl_module) -> None:
        self._init_progress(trainer)

    def on_predict_batch_start(self, trainer, pl_module, batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        if self.is_disabled or not self.has_dataloader_changed(dataloader_idx):
            return
        self._hide(self.predict_progress_bar_id)
        self.predict_progress_bar_id = self._add_eval_task(self.total_predict_batches_current_dataloader,
                                                           self.predict_description)

    def on_predict_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int,
                             dataloader_idx: int = 0) -> None:
        self._advance(self.predict_progress_bar_id, batch_idx + 1)

    def on_predict_end(self, trainer, pl_module) -> None:
        self._stop_progress()
        self.reset_dataloader_idx_tracker()

    def _advance(self, task_id, n: int) -> None:
        if not self._live or task_id is None or self.is_disabled:
            return
        self._counts[task_id] = n
        if _monotonic() >= self._next_draw or n == self._eval_total:
            self._draw()
        elif n == 1:  # a first sample, so rich can tell the speed of a short run
            self._send_counts()

    def teardown(self, trainer, pl_module, stage: str) -> None:
        self._stop_progress()

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        self._stop_progress()

    def print(self, *args: Any, **kwargs: Any) -> None:
        """Print above the live bars (through their console)."""
        if self._live:
            self.progress.console.print(*args, **kwargs)
        else:
            print(*args, **kwargs)
