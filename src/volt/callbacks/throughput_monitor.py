"""ThroughputMonitor: log samples, batches (and items, FLOPs) per second for training, validation, test, predict.

Keys are `{stage}/{metric}` with the stage "train", "validate", "test" or "predict" and the metrics of
`volt.utilities.throughput.Throughput` (e.g. `train/device/samples_per_sec`, `train/device/flops_per_sec`).
Training rates are logged after each optimizer step at the Trainer's `log_every_n_steps` interval, and exclude the
time spent in validation. Rank 0 measures and logs. On a GPU each measured batch waits for the GPU to finish
(`torch.cuda.synchronize`), which is what makes the times true; leave the callback out of runs that are not
measuring.
"""
import time
from typing import Any, Callable, Dict, Optional

import torch

from volt.callbacks.callback import Callback
from volt.utilities.rank_zero import rank_zero_warn
from volt.utilities.throughput import Throughput, get_available_flops

_COMPUTE_DTYPES = {"64-true": torch.float64, "16-mixed": torch.float16, "16-true": torch.float16,
                   "bf16-mixed": torch.bfloat16, "bf16-true": torch.bfloat16}


class ThroughputMonitor(Callback):
    """Measure throughput and log it through the Trainer's loggers.

    Args:
        batch_size_fn: the number of samples in a batch, `batch_size_fn(batch)`.
        length_fn: the number of items (e.g. tokens) in a batch, for `items_per_sec`.
        **kwargs: for `Throughput`: `window_size` (updates the rates are averaged over, default 100) and
            `separator` (default "/").

    FLOPs per second are logged when the LightningModule has a `flops_per_batch` attribute (see
    `volt.utilities.measure_flops`), and model FLOPs utilisation (`device/mfu`) when the GPU's peak is known.
    """

    def __init__(self, batch_size_fn: Callable[[Any], int], length_fn: Optional[Callable[[Any], int]] = None,
                 **kwargs: Any) -> None:
        unknown = set(kwargs) - {"window_size", "separator"}
        if unknown:
            raise TypeError(f"ThroughputMonitor got unexpected argument(s) {sorted(unknown)}; it takes "
                            "batch_size_fn, length_fn, window_size and separator.")
        if not callable(batch_size_fn):
            raise TypeError("ThroughputMonitor(batch_size_fn=...) must be a function of the batch, e.g. "
                            "`lambda batch: batch[0].size(0)`.")
        self.batch_size_fn = batch_size_fn
        self.length_fn = length_fn
        self.kwargs = kwargs
        self.available_flops: Optional[float] = None
        self._throughputs: Dict[str, Throughput] = {}
        self._t0s: Dict[str, float] = {}
        self._samples: Dict[str, int] = {}
        self._batches: Dict[str, int] = {}
        self._lengths: Dict[str, int] = {}
        self._elapsed: Dict[str, float] = {}  # the time of the last measured batch since the stage's start
        self._run_batches: Dict[str, int] = {}  # batches measured in this run of the stage: when to log
        self._eval_steps: Dict[tuple, int] = {}  # (fn, stage) -> evaluation batches measured: the x axis
        self._module_has_flops: Optional[bool] = None
        self._last_step = 0

    def setup(self, trainer, pl_module, stage: str) -> None:
        dtype = _COMPUTE_DTYPES.get(str(trainer.precision), torch.float32)
        self.available_flops = get_available_flops(trainer.strategy.root_device, dtype)
        self._throughputs.clear()  # each run measures with new windows; its stages make theirs as they start

    # ------------------------------------------------------------------ measuring
    def _start(self, trainer) -> None:
        """A stage starts: its Throughput is made when the stage first runs (a fit without validation has none)."""
        stage = trainer.state.stage
        if stage not in self._throughputs:
            self._throughputs[stage] = Throughput(available_flops=self.available_flops, world_size=trainer.world_size,
                                                  **self.kwargs)
        if trainer.state.fn == "fit" or stage not in self._samples:
            self._throughputs[stage].reset()
            self._samples[stage] = self._batches[stage] = self._lengths[stage] = 0
        self._t0s[stage] = time.perf_counter()
        self._elapsed[stage] = 0.0
        self._run_batches[stage] = 0

    @torch.no_grad()
    def _update(self, trainer, pl_module, batch: Any) -> None:
        stage = trainer.state.stage
        if trainer.strategy.root_device.type == "cuda":
            torch.cuda.synchronize(trainer.strategy.root_device)  # the time of work the GPU has really done
        elapsed = self._elapsed[stage] = time.perf_counter() - self._t0s[stage]
        if self._module_has_flops is None:
            self._module_has_flops = hasattr(pl_module, "flops_per_batch")
            if not self._module_has_flops:
                rank_zero_warn("When using the `ThroughputMonitor`, you need to define a `flops_per_batch` attribute "
                               f"or property in {type(pl_module).__name__} to compute the FLOPs.")
        self._samples[stage] += self.batch_size_fn(batch)
        self._batches[stage] += 1
        if self.length_fn is not None:
            self._lengths[stage] += self.length_fn(batch)
        self._throughputs[stage].update(
            time=elapsed, batches=self._batches[stage], samples=self._samples[stage],
            lengths=self._lengths[stage] if self.length_fn is not None else None,
            flops=pl_module.flops_per_batch if self._module_has_flops else None)

    def _log(self, trainer, step: int, training: bool) -> None:
        stage = trainer.state.stage
        throughput = self._throughputs[stage]
        metrics = {f"{stage}{throughput.separator}{k}": v for k, v in throughput.compute().items()}
        if training:
            metrics["epoch"] = trainer.current_epoch
        for logger in trainer.loggers:
            logger.log_metrics(metrics=metrics, step=step)

    @staticmethod
    def _logs_at(trainer, count: int) -> bool:
        every = trainer.log_every_n_steps
        return bool(every) and (count % every == 0 or trainer.should_stop)

    # ------------------------------------------------------------------ training
    def on_train_start(self, trainer, pl_module) -> None:
        if trainer.is_global_zero:
            self._start(trainer)
            self._last_step = trainer.global_step

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._eval_steps.pop(("fit", "validate"), None)  # as Lightning: fit's validations count per training epoch

    def on_train_batch_end(self, trainer, pl_module, outputs: Any, batch: Any, batch_idx: int) -> None:
        if not trainer.is_global_zero:
            return
        self._update(trainer, pl_module, batch)
        stepped, self._last_step = trainer.global_step > self._last_step, trainer.global_step
        # measured at optimizer steps only, so that each rate covers whole accumulation windows and their steps
        if stepped and self._logs_at(trainer, trainer.global_step):
            self._log(trainer, step=trainer.global_step - 1, training=True)

    # ------------------------------------------------------------------ evaluation
    def on_validation_start(self, trainer, pl_module) -> None:
        if trainer.is_global_zero and not trainer.sanity_checking:
            self._start(trainer)

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.is_global_zero and not trainer.sanity_checking and trainer.state.fn == "fit":
            # the training clock skips from its last measured batch to the validation's last (as Lightning)
            training_done = self._t0s["train"] + self._elapsed["train"]
            self._t0s["train"] += self._t0s["validate"] - training_done + self._elapsed["validate"]

    def on_validation_batch_end(self, trainer, pl_module, outputs: Any, batch: Any, batch_idx: int,
                                dataloader_idx: int = 0) -> None:
        if not trainer.sanity_checking:
            self._eval_batch_end(trainer, pl_module, batch, batch_idx)

    def on_test_start(self, trainer, pl_module) -> None:
        if trainer.is_global_zero:
            self._start(trainer)

    def on_test_batch_end(self, trainer, pl_module, outputs: Any, batch: Any, batch_idx: int,
                          dataloader_idx: int = 0) -> None:
        self._eval_batch_end(trainer, pl_module, batch, batch_idx)

    def on_predict_start(self, trainer, pl_module) -> None:
        if trainer.is_global_zero:
            self._start(trainer)

    def on_predict_batch_end(self, trainer, pl_module, outputs: Any, batch: Any, batch_idx: int,
                             dataloader_idx: int = 0) -> None:
        self._eval_batch_end(trainer, pl_module, batch, batch_idx)

    def _eval_batch_end(self, trainer, pl_module, batch: Any, batch_idx: int) -> None:
        if not trainer.is_global_zero:
            return
        stage = trainer.state.stage
        self._update(trainer, pl_module, batch)
        self._run_batches[stage] += 1
        key = (trainer.state.fn, stage)  # validation inside fit counts apart from `trainer.validate` runs
        self._eval_steps[key] = self._eval_steps.get(key, 0) + 1
        if self._logs_at(trainer, self._run_batches[stage]):
            self._log(trainer, step=self._eval_steps[key], training=False)
