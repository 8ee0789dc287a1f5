"""The parts RichProgressBar draws with: rich's Progress and columns, under Lightning's names (importable from
`volt.callbacks.progress.rich_progress`, where `rich` is imported only when one is first used).

Override `RichProgressBar.configure_columns` with these to rearrange the bar, e.g.
`[TextColumn("{task.description}"), CustomBarColumn(), BatchesProcessedColumn(style="bold")]`.
"""
import math
from datetime import timedelta
from typing import Any, Dict, Optional

from rich.progress import BarColumn, Progress, ProgressColumn, TaskID
from rich.progress_bar import ProgressBar as RichBar
from rich.style import StyleType
from rich.text import Text


def _known(total: Optional[float]) -> Optional[float]:
    """An infinite or NaN total (a loader without a length) as rich's "unknown total" (None)."""
    if total is None or math.isinf(total) or math.isnan(total):
        return None
    return total


class CustomProgress(Progress):
    """rich's Progress that takes an infinite total as an unknown one: a pulsing bar, no time remaining."""

    def add_task(self, description: str, start: bool = True, total: Optional[float] = 100.0, completed: int = 0,
                 visible: bool = True, **fields: Any) -> TaskID:
        return super().add_task(description, start, _known(total), completed, visible, **fields)

    def reset(self, task_id: TaskID, *, total: Optional[float] = None, **kwargs: Any) -> None:
        super().reset(task_id, total=_known(total), **kwargs)
        if total is not None and _known(total) is None:
            self._tasks[task_id].total = None  # rich's reset keeps the old total when given None

    def update(self, task_id: TaskID, *, total: Optional[float] = None, **kwargs: Any) -> None:
        super().update(task_id, total=_known(total), **kwargs)
        if total is not None and _known(total) is None:
            self._tasks[task_id].total = None


class CustomBarColumn(BarColumn):
    """The bar; it pulses while the total is unknown (None or infinite) or the task has not started."""

    def render(self, task) -> RichBar:
        total = _known(task.total)
        return RichBar(total=None if total is None else max(0, total), completed=max(0, task.completed),
                       width=None if self.bar_width is None else max(1, self.bar_width),
                       pulse=total is None or not task.started, animation_time=task.get_time(), style=self.style,
                       complete_style=self.complete_style, finished_style=self.finished_style,
                       pulse_style=self.pulse_style)


class BatchesProcessedColumn(ProgressColumn):
    """`done/total` batches; `--` when the total is unknown."""

    def __init__(self, style: StyleType = "") -> None:
        self.style = style
        super().__init__()

    def render(self, task) -> Text:
        total = _known(task.total)
        return Text(f"{int(task.completed)}/{'--' if total is None else int(total)}", style=self.style)


class CustomTimeColumn(ProgressColumn):
    """`elapsed • remaining`."""

    max_refresh = 0.5  # rich redraws this column at most twice a second, so the seconds do not flicker

    def __init__(self, style: StyleType = "dim") -> None:
        self.style = style
        super().__init__()

    def render(self, task) -> Text:
        elapsed = task.finished_time if task.finished else task.elapsed
        remaining = task.time_remaining
        elapsed = "-:--:--" if elapsed is None else str(timedelta(seconds=int(elapsed)))
        remaining = "-:--:--" if remaining is None else str(timedelta(seconds=int(remaining)))
        return Text(f"{elapsed} • {remaining}", style=self.style)


class ProcessingSpeedColumn(ProgressColumn):
    """Batches per second, as `12.34it/s`."""

    def __init__(self, style: StyleType = "dim underline") -> None:
        self.style = style
        super().__init__()

    def render(self, task) -> Text:
        speed = task.speed
        return Text(f"{0.0 if speed is None else speed:.2f}it/s", style=self.style)


class MetricsTextColumn(ProgressColumn):
    """The progress-bar metrics, beside the training bar only. The bar hands it new values with `update(metrics)`
    when it redraws, so drawing never reads a metric itself."""

    def __init__(self, trainer, style: StyleType = "italic", text_delimiter: str = " ",
                 metrics_format: str = ".3f") -> None:
        self._trainer = trainer
        self._metrics: Dict[str, Any] = {}
        self._style = style
        self._text_delimiter = text_delimiter
        self._metrics_format = metrics_format
        super().__init__()

    def update(self, metrics: Dict[str, Any]) -> None:
        self._metrics = metrics

    def render(self, task) -> Text:
        if task.id != getattr(self._trainer.progress_bar_callback, "train_progress_bar_id", None):
            return Text()
        parts = []
        for name, value in self._metrics.items():
            if not isinstance(value, str):
                try:
                    value = f"{value:{self._metrics_format}}"
                except (TypeError, ValueError):
                    value = str(value)
            parts.append(f"{name}: {value}")
        return Text(self._text_delimiter.join(parts), justify="left", style=self._style)
