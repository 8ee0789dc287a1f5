"""TQDMProgressBar: Lightning's default text progress bars, drawn with tqdm.

Bars: "Sanity Checking", "Epoch N" (training; validation gets its own bar below it), "Validation", "Testing",
"Predicting". Speed is the point: a batch end that does not redraw costs a counter, a modulo and a clock read.
Every `refresh_rate` batches (and on the last) a bar's count `n` moves on, as Lightning's does; the bar redraws then,
but at most once per `min_refresh_interval` seconds (always on the last batch), and only a redraw reads the metric
values (`get_metrics`; at a batch end without waiting for the device).
"""
import math
import os
import sys
import time
from types import SimpleNamespace
from typing import Any, Optional, Union

from tqdm import tqdm as _tqdm

from volt.callbacks.progress.progress_bar import SwitchableBar

_PAD_SIZE = 5
_monotonic = time.monotonic


class Tqdm(_tqdm):
    """tqdm whose float/str postfix values are zero-padded to a fixed width, so the line does not jitter."""

    @staticmethod
    def format_num(n: Union[int, float, str]) -> str:
        pad = isinstance(n, (float, str))
        text = n if isinstance(n, str) else _tqdm.format_num(n)
        if pad and "e" not in text:
            if "." not in text and len(text) < _PAD_SIZE:
                try:
                    float(text)
                except ValueError:
                    return text
                text += "."
            text += "0" * (_PAD_SIZE - len(text))
        return text


class TQDMProgressBar(SwitchableBar):
    """The default progress bar: tqdm bars on stdout, on global rank 0 only.

    Args:
        refresh_rate: redraw every this many batches; 0 hides the bars.
        process_position: shift the bars down this many pairs of lines (to sit below other bars).
        leave: keep each finished epoch's bar on screen instead of reusing one bar.
    """

    BAR_FORMAT = "{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}, {rate_noinv_fmt}{postfix}]"
    #: Seconds between two redraws of a bar; fast loops would otherwise spend their time printing.
    min_refresh_interval: float = 0.1

    def __init__(self, refresh_rate: int = 1, process_position: int = 0, leave: bool = False):
        super().__init__()
        if not isinstance(refresh_rate, int) or isinstance(refresh_rate, bool) or refresh_rate < 0:
            raise ValueError(f"TQDMProgressBar(refresh_rate={refresh_rate!r}): use an int >= 0 (0 hides the bars).")
        if "TQDM_MINITERS" in os.environ:  # tqdm's own setting for the minimum batches between redraws
            refresh_rate = max(int(os.environ["TQDM_MINITERS"]), refresh_rate)
        self._refresh_rate = refresh_rate
        self._every = max(refresh_rate, 1)
        self._process_position = process_position
        self._leave = leave
        self._enabled = True
        self._train_progress_bar: Optional[_tqdm] = None
        self._val_progress_bar: Optional[_tqdm] = None
        self._test_progress_bar: Optional[_tqdm] = None
        self._predict_progress_bar: Optional[_tqdm] = None
        # Per-step state of the throttled redraw: where the count goes (the bar, or a throwaway while it is hidden),
        # the epoch's total, the earliest next redraw time.
        self._train_counter: Any = SimpleNamespace(n=0)
        self._train_total: Optional[Union[int, float]] = None
        self._train_next_draw = 0.0
        self._eval_undrawn = False  # a count set that the time limit left undrawn
        self._eval_total: Optional[Union[int, float]] = None
        self._eval_next_draw = 0.0

    def __getstate__(self) -> dict:
        # tqdm objects hold the terminal and a lock; a pickled callback (e.g. for spawned processes) starts without
        return {k: (None if isinstance(v, _tqdm) else v) for k, v in vars(self).items()}

    @property
    def train_progress_bar(self) -> _tqdm:
        return self._bar("_train_progress_bar")

    @train_progress_bar.setter
    def train_progress_bar(self, bar: _tqdm) -> None:
        self._train_progress_bar = bar

    @property
    def val_progress_bar(self) -> _tqdm:
        return self._bar("_val_progress_bar")

    @val_progress_bar.setter
    def val_progress_bar(self, bar: _tqdm) -> None:
        self._val_progress_bar = bar

    @property
    def test_progress_bar(self) -> _tqdm:
        return self._bar("_test_progress_bar")

    @test_progress_bar.setter
    def test_progress_bar(self, bar: _tqdm) -> None:
        self._test_progress_bar = bar

    @property
    def predict_progress_bar(self) -> _tqdm:
        return self._bar("_predict_progress_bar")

    @predict_progress_bar.setter
    def predict_progress_bar(self, bar: _tqdm) -> None:
        self._predict_progress_bar = bar

    def _bar(self, attribute: str) -> _tqdm:
        bar = getattr(self, attribute)
        if bar is None:
            raise TypeError(f"The `{type(self).__name__}.{attribute}` reference has not been set yet.")
        return bar

    @property
    def process_position(self) -> int:
        return self._process_position

    def disable(self) -> None:
        super().disable()
        self._train_counter = SimpleNamespace(n=0)  # the hidden bar's count stays where it was

    def enable(self) -> None:
        super().enable()
        self._train_next_draw = self._eval_next_draw = 0.0
        bar = self._train_progress_bar
        if bar is not None and not bar.disable:  # enabled inside an epoch: the count goes to the bar again
            self._train_counter = bar

    def _new_bar(self, desc: str, position: int, leave: bool, **kwargs: Any) -> Tqdm:
        return Tqdm(desc=desc, position=position, disable=self.is_disabled, leave=leave, dynamic_ncols=True,
                    file=sys.stdout, bar_format=self.BAR_FORMAT, **kwargs)

    def init_sanity_tqdm(self) -> Tqdm:
        """Override to customise the bar of the sanity check."""
        return self._new_bar(self.sanity_check_description, 2 * self.process_position, leave=False)

    def init_train_tqdm(self) -> Tqdm:
        """Override to customise the training bar."""
        return self._new_bar(self.train_description, 2 * self.process_position, leave=True, smoothing=0)

    def init_validation_tqdm(self) -> Tqdm:
        """Override to customise the validation bar (below the training bar during fit)."""
        below_train_bar = self.trainer.state.fn != "validate"
        return self._new_bar(self.validation_description, 2 * self.process_position + below_train_bar,
                             leave=not below_train_bar)

    def init_test_tqdm(self) -> Tqdm:
        """Override to customise the test bar."""
        return self._new_bar(self.test_description, 2 * self.process_position, leave=True)

    def init_predict_tqdm(self) -> Tqdm:
        """Override to customise the predict bar."""
        return self._new_bar(self.predict_description, 2 * self.process_position, leave=True, smoothing=0)

    # -- training ------------------------------------------------------------------------------------------------

    def on_sanity_check_start(self, trainer, pl_module) -> None:
        self.val_progress_bar = self.init_sanity_tqdm()
        self.train_progress_bar = Tqdm(disable=True)  # placeholder so `print` has a bar to write through

    def on_sanity_check_end(self, trainer, pl_module) -> None:
        self.val_progress_bar.close()
        self.train_progress_bar.close()

    def on_train_start(self, trainer, pl_module) -> None:
        self.train_progress_bar = self.init_train_tqdm()  # one bar, reset each epoch (as Lightning, also with `leave`)
        if trainer.fit_loop.batches_into_epoch:  # resumed inside an epoch, which has no epoch start: its bar now
            self._start_epoch_bar(trainer, done=trainer.fit_loop.batches_into_epoch)

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._start_epoch_bar(trainer, done=0)

    def _start_epoch_bar(self, trainer, done: int) -> None:
        if self._leave:  # each epoch gets its own bar; the one made at train start goes without a trace
            previous = self.train_progress_bar
            if not previous.disable:
                previous.leave = False
                previous.close()
            self.train_progress_bar = self.init_train_tqdm()
        bar = self.train_progress_bar
        total = _finite_or_none(self.total_train_batches)
        bar.total = total  # before reset(), which ignores a total of None
        bar.reset()
        bar.initial = bar.n = done
        bar.set_description(f"Epoch {trainer.current_epoch}")
        hidden = bar.disable or not self.is_enabled
        self._train_counter = SimpleNamespace(n=0) if hidden else bar
        self._train_total = total
        self._train_next_draw = math.inf if hidden else 0.0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        n = batch_idx + 1
        if n % self._every == 0 or n == self._train_total:
            self._train_counter.n = n  # a plain attribute: the drawing waits for the time limit
            if _monotonic() >= self._train_next_draw or n == self._train_total:
                with self.values_may_lag():  # a training step never waits for the device to show its metrics
                    self._redraw_train(trainer, pl_module)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self._redraw_train(trainer, pl_module)  # the count since the last redraw, and the epoch-end metrics
        if self._leave and self._train_progress_bar is not None:
            self._train_progress_bar.close()

    def on_train_end(self, trainer, pl_module) -> None:
        if self._train_progress_bar is not None:
            self._train_progress_bar.close()

    def _redraw_train(self, trainer, pl_module) -> None:
        bar = self._train_progress_bar
        if bar is None or bar.disable or not self.is_enabled:
            self._train_next_draw = math.inf
            return
        bar.set_postfix(self.get_metrics(trainer, pl_module), refresh=False)
        bar.refresh()
        self._train_next_draw = _monotonic() + self.min_refresh_interval

    def _show_train_count(self) -> None:
        """Draw the training bar's count, which the time limit on redraws may have left undrawn."""
        bar = self._train_progress_bar
        if bar is not None and not bar.disable and self.is_enabled:
            bar.refresh()

    # -- validation, test, predict -------------------------------------------------------------------------------

    def on_validation_start(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking:
            if trainer.state.fn == "fit":  # the training bar shows where validation interrupts it
                self._show_train_count()
            self.val_progress_bar = self.init_validation_tqdm()

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        if self.has_dataloader_changed(dataloader_idx):
            desc = self.sanity_check_description if trainer.sanity_checking else self.validation_description
            self._start_eval_bar(self.val_progress_bar, self.total_val_batches_current_dataloader,
                                 f"{desc} DataLoader {dataloader_idx}")

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int,
                                dataloader_idx: int = 0) -> None:
        self._advance_eval_bar(self._val_progress_bar, batch_idx + 1)

    def on_validation_end(self, trainer, pl_module) -> None:
        self._finish_eval_bar(self.val_progress_bar)
        self.reset_dataloader_idx_tracker()
        if trainer.state.fn == "fit" and self._train_progress_bar is not None:
            self._show_train_count()
            self._train_progress_bar.set_postfix(self.get_metrics(trainer, pl_module))  # the fresh validation metrics

    def on_test_start(self, trainer, pl_module) -> None:
        self.test_progress_bar = self.init_test_tqdm()

    def on_test_batch_start(self, trainer, pl_module, batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        if self.has_dataloader_changed(dataloader_idx):
            self._start_eval_bar(self.test_progress_bar, self.total_test_batches_current_dataloader,
                                 f"{self.test_description} DataLoader {dataloader_idx}")

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._advance_eval_bar(self._test_progress_bar, batch_idx + 1)

    def on_test_end(self, trainer, pl_module) -> None:
        self._finish_eval_bar(self.test_progress_bar)
        self.reset_dataloader_idx_tracker()

    def on_predict_start(self, trainer, pl_module) -> None:
        self.predict_progress_bar = self.init_predict_tqdm()

    def on_predict_batch_start(self, trainer, pl_module, batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        if self.has_dataloader_changed(dataloader_idx):
            self._start_eval_bar(self.predict_progress_bar, self.total_predict_batches_current_dataloader,
                                 f"{self.predict_description} DataLoader {dataloader_idx}")

    def on_predict_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int,
                             dataloader_idx: int = 0) -> None:
        self._advance_eval_bar(self._predict_progress_bar, batch_idx + 1)

    def on_predict_end(self, trainer, pl_module) -> None:
        self._finish_eval_bar(self.predict_progress_bar)
        self.reset_dataloader_idx_tracker()

    def _start_eval_bar(self, bar: _tqdm, total: Union[int, float], description: str) -> None:
        self._draw_pending_eval_batches(bar)  # the previous dataloader's last batches
        total = _finite_or_none(total)
        bar.total = total
        bar.reset()
        bar.initial = 0
        bar.set_description(description)
        self._eval_total = total
        self._eval_next_draw = math.inf if bar.disable else 0.0

    def _finish_eval_bar(self, bar: _tqdm) -> None:
        self._draw_pending_eval_batches(bar)
        bar.close()

    def _draw_pending_eval_batches(self, bar: _tqdm) -> None:
        """Draw the count that the time limit on redraws left undrawn."""
        if self._eval_undrawn and not bar.disable and self.is_enabled:
            bar.refresh()
        self._eval_undrawn = False

    def _advance_eval_bar(self, bar: Optional[_tqdm], n: int) -> None:
        if n % self._every and n != self._eval_total:
            return
        if bar is None or bar.disable or not self.is_enabled:
            return
        bar.n = n  # the count moves on as Lightning's does; the drawing waits for the time limit
        drawn = _monotonic() >= self._eval_next_draw or n == self._eval_total
        if drawn:
            bar.refresh()
            self._eval_next_draw = _monotonic() + self.min_refresh_interval
        self._eval_undrawn = not drawn

    def print(self, *args: Any, sep: str = " ", **kwargs: Any) -> None:
        """Print a line above the active bar (through `tqdm.write`) so the bar is redrawn intact below it."""
        for bar in (self._train_progress_bar, self._val_progress_bar, self._test_progress_bar,
                    self._predict_progress_bar):
            if bar is not None and not bar.disable:
                bar.write(sep.join(map(str, args)), **kwargs)
                return
        print(*args, sep=sep, **kwargs)


def _finite_or_none(total: Optional[Union[int, float]]) -> Optional[Union[int, float]]:
    """tqdm shows an unknown total as '?'; it cannot take inf or nan."""
    if total is None or math.isinf(total) or math.isnan(total):
        return None
    return total
