"""Validation, test and predict loops.

    {val,test,predict}_dataloader
    on_{stage}_model_eval                      (fit: on_validation_model_zero_grad first)
    on_{stage}_start -> on_{stage}_epoch_start
    for each dataloader, for each batch:
        on_before_batch_transfer -> transfer_batch_to_device -> on_after_batch_transfer
        on_{stage}_batch_start -> {stage}_step -> on_{stage}_batch_end
    on_{stage}_epoch_end -> on_{stage}_end
    on_{stage}_model_train                     (not after predict; without an override, every submodule gets back
                                                the mode it had before on_{stage}_model_eval, as in Lightning)

Under DDP the evaluation shards are not padded (no sample is evaluated twice), so ranks may hold different numbers
of batches. Validation and test still run the same number of steps on every rank, so that collectives inside them
(`self.log(..., sync_dist=True)`, `all_gather`, a torchmetrics sync) stay in step: the ranks agree on the longest
shard's batch count, and a rank whose shard ran out runs *filler* batches (its last batch again, or the dataset's
first sample if it had none). A filler batch runs the step and its hooks, but what it logs carries zero weight and
its outputs are dropped, so metrics equal the single-process ones. Objects the step updates itself (a torchmetrics
metric, a list) do see it, as they see Lightning's padded duplicates.
"""
import inspect
import itertools
import math
from typing import Any, Dict, List, Optional

import torch

from volt.callbacks.prediction_writer import BasePredictionWriter
from volt.trainer.data import (CombinedBatches, DataLoaderIter, as_given, as_loader_list, check_iterable,
                              check_loaders, distributed_sampler_fn, limit_batches, profiled_fetches, resumable_sampler,
                              set_data_epoch, warn_overfit_shuffling, wrap_loader)
from volt.trainer.hooks import step_caller, takes_dataloader_iter
from volt.utilities.combined_loader import loader_length
from volt.utilities.rank_zero import rank_zero_warn

_STEP = {"validate": "validation_step", "test": "test_step", "predict": "predict_step"}
_HOOK = {"validate": "validation", "test": "test", "predict": "predict"}
_LOADER = {"validate": "val_dataloader", "test": "test_dataloader", "predict": "predict_dataloader"}
_LIMIT = {"validate": "limit_val_batches", "test": "limit_test_batches", "predict": "limit_predict_batches"}
_LEGACY_EPOCH_END = {"validate": "validation_epoch_end", "test": "test_epoch_end"}


class EvalLoop:
    """Runs one of validate/test/predict over all its dataloaders."""

    def __init__(self, trainer, stage: str) -> None:
        self.trainer = trainer
        self.stage = stage
        self.hook = _HOOK[stage]
        self.loaders: Optional[List[Any]] = None  # resolved on first run (or again when reloading)
        self.shown_loaders: Any = None  # what the Trainer's `*_dataloaders` property shows (`setup_data`)
        self.num_batches: List[float] = []  # batches run from each of `loaders`
        # what the Trainer's `num_*_batches` show: as Lightning, a CombinedLoader's loaders counted apart (in any mode)
        self.shown_num_batches: List[float] = []
        self.loaded_epoch: float = 0  # the epoch its loaders were last made at (reload_dataloaders_every_n_epochs)
        self.source: Any = None  # the dataloaders passed to the Trainer call, if any
        self.predictions_per_dataloader: List[List[Any]] = []  # predict: each dataloader's step outputs
        self.return_predictions = True  # predict: keep every step's output (`Trainer.predict(return_predictions=)`)
        self.keeps_ranks_in_step = False  # validation/test under DDP: same batch count on every rank (docstring)
        self.batch_idx = 0
        self.dataloader_idx = 0
        # batches run per dataloader since the loaders were made (sanity check aside): the loggers' x axis for
        # evaluation step metrics, as in Lightning; a resumed fit continues the checkpoint's (`resume_log_steps`)
        self.log_steps: List[int] = []
        self._resumed_log_steps: Optional[List[int]] = None

    # ------------------------------------------------------------------ data
    def setup_data(self) -> None:
        """Resolve the dataloaders (argument, datamodule or module hook), wrap them and size them."""
        trainer = self.trainer
        self.loaded_epoch = trainer.current_epoch
        if trainer.sanity_checking and not trainer.fit_loop.validates_in_epoch(trainer.current_epoch):
            self.loaded_epoch = -math.inf  # as Lightning: the first validation reloads them all the same
        source = self.source
        if source is None:  # required unless it is fit's validation
            source = trainer._hooks.call_dataloader_hook(_LOADER[self.stage], required=trainer.state.fn != "fit")
        else:
            argument = "val_dataloaders" if trainer.state.fn == "fit" else "dataloaders"
            check_iterable(source, f"passed to `Trainer.{trainer.state.fn}({argument}=...)`")
        loaders = as_loader_list(source)
        sampler_fn = distributed_sampler_fn(trainer, train=False)
        # the batches' sample indices, kept (as Lightning) only for prediction writers: a long run's would pile up
        record = self.stage == "predict" and bool(self._writer_intervals())
        check_loaders(source, _LOADER[self.stage], bool(trainer.reload_dataloaders_every_n_epochs))
        overfit = trainer.state.fn == "fit" and bool(trainer.overfit_batches)  # as Lightning: fit's validation too
        if overfit:
            warn_overfit_shuffling(loaders, "val")
        self.loaders = [wrap_loader(loader, sequential=overfit, sampler_fn=sampler_fn, record_batches=record)
                        for loader in loaders]
        # the Trainer's `*_dataloaders`: the user's own loaders, unless other samplers were put in (as in Lightning)
        if sampler_fn is None and not overfit:
            self.shown_loaders = as_given(source)
        else:
            self.shown_loaders = as_given(self.loaders[0]) if len(self.loaders) == 1 else self.loaders
        lengths = [loader_length(loader) for loader in self.loaders]
        self.keeps_ranks_in_step = self.stage != "predict" and trainer.world_size > 1
        if self.keeps_ranks_in_step:
            lengths = self._agreed_lengths(lengths)
        limit = getattr(trainer, _LIMIT[self.stage])  # `overfit_batches` and `fast_dev_run` set it (as Lightning)
        self.num_batches = [limit_batches(length, limit, _LIMIT[self.stage]) for length in lengths]
        self.shown_num_batches = self.num_batches
        if len(self.loaders) == 1 and isinstance(self.loaders[0], CombinedBatches):  # one non-sequential combination
            self.shown_num_batches = [limit_batches(loader_length(part), limit, _LIMIT[self.stage])
                                      for part in self.loaders[0].combined.flattened]
        resumed, self._resumed_log_steps = self._resumed_log_steps, None
        self.log_steps = resumed if resumed is not None and len(resumed) == len(loaders) else [0] * len(loaders)

    def resume_log_steps(self, log_steps: Any) -> None:
        """Continue the evaluation x axis of a checkpoint's fit once the loaders are made (an int: an older
        checkpoint's single count)."""
        self._resumed_log_steps = [log_steps] if isinstance(log_steps, int) else log_steps

    @property
    def predictions(self) -> List[Any]:
        """The last predict run's step outputs, as Lightning's loop holds them: a list (one dataloader), or one
        list per dataloader (several)."""
        per_dataloader = self.predictions_per_dataloader
        return per_dataloader[0] if len(per_dataloader) == 1 else per_dataloader

    @property
    def current_batch_indices(self) -> List[int]:
        """The dataset indices of the samples in the running predict batch (empty if the loader has no batch
        sampler). Lightning's name, read by BasePredictionWriter."""
        seen = self._seen_batches(self.dataloader_idx)
        return seen[self.batch_idx] if self.batch_idx < len(seen) else []

    @property
    def epoch_batch_indices(self) -> List[List[List[int]]]:
        """For each predict dataloader, the dataset indices of each batch run (Lightning's name and layout); as in
        Lightning, empty lists unless a prediction writer writes at the epoch end."""
        if not any(interval.on_epoch for interval in self._writer_intervals()):
            return [[] for _ in self.num_batches]
        indices = [self._seen_batches(i) for i in range(len(self.num_batches))]
        return [seen if n == math.inf else seen[:int(n)] for seen, n in zip(indices, self.num_batches)]

    def _writer_intervals(self) -> list:
        """The `interval` of each prediction writer among the Trainer's callbacks."""
        return [callback.interval for callback in self.trainer.callbacks if isinstance(callback, BasePredictionWriter)]

    def _seen_batches(self, dataloader_idx: int) -> List[List[int]]:
        sampler = resumable_sampler(self.loaders[dataloader_idx]) if self.loaders else None
        if sampler is None or sampler.seen_batches is None:
            return []
        return sampler.seen_batches

    def _agreed_lengths(self, lengths: List[float]) -> List[float]:
        """Every rank runs the longest shard's number of batches (one collective per data setup)."""
        longest = self.trainer.strategy.reduce(torch.tensor(lengths, dtype=torch.float64), reduce_op="max")
        return [int(n) if math.isfinite(n) else math.inf for n in longest.tolist()]

    def enabled_or_setup(self) -> bool:
        """Resolve the dataloaders if needed; True when there is at least one batch to run."""
        if self.loaders is None:
            self.setup_data()
        return sum(self.num_batches) > 0

    # ------------------------------------------------------------------ the loop
    def run(self, max_batches: Optional[int] = None) -> List[Dict[str, float]]:
        trainer, stage = self.trainer, self.stage
        results = trainer._results
        if trainer.state.fn == stage and getattr(trainer, _LIMIT[stage]) == 0:
            return []  # as Lightning: `limit_{stage}_batches=0` runs nothing, not even the dataloader hook
        if self.loaders is None:
            self.setup_data()
        results.eval.reset()
        results.active = results.eval
        results.num_dataloaders = len(self.loaders)
        in_fit = trainer.state.fn == "fit"
        for loader in self.loaders:  # as Lightning: evaluation samplers get `set_epoch` too (some shuffle by epoch)
            set_data_epoch(loader, trainer.current_epoch)
        # as Lightning: the whole run, its start and end hooks too, without autograd
        grad_context = torch.inference_mode if (trainer.inference_mode and not in_fit) else torch.no_grad
        with grad_context():
            return self._run_hooks_and_batches(max_batches, in_fit)

    def _run_hooks_and_batches(self, max_batches: Optional[int], in_fit: bool) -> List[Dict[str, float]]:
        trainer, hooks, stage = self.trainer, self.trainer._hooks, self.stage
        results = trainer._results
        if in_fit and not trainer.sanity_checking:
            hooks.call_module("on_validation_model_zero_grad")
        module = trainer.lightning_module
        # every submodule's mode, the strategy's wrapper (e.g. DDP's) too, to restore after the run
        modes = [(submodule, submodule.training) for submodule in trainer.model.modules()]
        hooks.call_module(f"on_{_HOOK[stage]}_model_eval")
        hooks.call(f"on_{self.hook}_start")
        hooks.call(f"on_{self.hook}_epoch_start")

        legacy_end = _LEGACY_EPOCH_END.get(stage)
        collect_outputs = legacy_end is not None and legacy_end in hooks.module_overrides
        step_name = _STEP[stage]
        iterating = takes_dataloader_iter(module, step_name)
        _check_dataloader_idx(module, stage, len(self.loaders) > 1, iterating)
        step_fn = step_caller(module, step_name, trainer.strategy.step_function(step_name))
        run = self._run_iterator if iterating else self._run_dataloaders
        all_outputs = run(step_name, step_fn, max_batches, collect_outputs)

        if stage != "predict":
            results.epoch_end(results.eval)  # epoch values are visible to the epoch-end hooks
        if collect_outputs:
            hooks.call_module(legacy_end, all_outputs[0] if len(all_outputs) == 1 else all_outputs)
        hooks.call(f"on_{self.hook}_epoch_end")
        epoch_values: Dict[str, torch.Tensor] = {}
        if stage != "predict":
            epoch_values, to_log = results.epoch_end(results.eval)
            if not trainer.sanity_checking:
                results.log_to_loggers(to_log)
        hooks.call(f"on_{self.hook}_end")
        per_dataloader = self._per_dataloader(epoch_values)
        results.eval.reset()  # as in Lightning: a logged torchmetrics object starts the next run with no state
        train_hook = f"on_{_HOOK[stage]}_model_train"
        if train_hook in hooks.module_overrides:
            hooks.call_module(train_hook)
        else:  # as Lightning: each submodule back in the mode it had (a frozen one stays in eval), after predict too
            for submodule, training in modes:
                submodule.training = training
        results.active = results.train
        return per_dataloader

    def _run_dataloaders(self, step_name, step_fn, max_batches, collect_outputs) -> List[List[Any]]:
        """Each dataloader's batches in turn. Returns the outputs per dataloader for the 1.x epoch-end hooks;
        predictions go to `self.predictions_per_dataloader`."""
        all_outputs: List[List[Any]] = []
        self.predictions_per_dataloader = []
        num_loaders = len(self.loaders)
        for dataloader_idx, loader in enumerate(self.loaders):
            limit = self.num_batches[dataloader_idx]
            if max_batches is not None:
                limit = min(limit, max_batches)
            outputs: List[Any] = []
            predictions: List[Any] = []
            self.dataloader_idx = dataloader_idx
            extra = (dataloader_idx,) if num_loaders > 1 else ()
            if limit > 0:
                self._run_dataloader(loader, limit, dataloader_idx, extra, step_name, step_fn, outputs, predictions,
                                     collect_outputs)
            all_outputs.append(outputs)
            self.predictions_per_dataloader.append(predictions)
        return all_outputs

    def _run_iterator(self, step_name, step_fn, max_batches, collect_outputs) -> List[List[Any]]:
        """`{stage}_step(self, dataloader_iter)`: one iterator over every dataloader's batches in turn, handed to the
        step until the last batch is fetched (or the step finds it used up). As in Lightning, the batch-start hooks
        see the batch the step fetched before, the batch-end hooks the one it fetched last. Returns the outputs per
        dataloader for the 1.x epoch-end hooks; predictions go to `self.predictions_per_dataloader`."""
        trainer, hooks = self.trainer, self.trainer._hooks
        results, precision = trainer._results, trainer.precision_plugin
        multiple = len(self.loaders) > 1
        outputs: List[List[Any]] = [[] for _ in self.loaders]
        self.predictions_per_dataloader = [[] for _ in self.loaders]
        fetcher = DataLoaderIter(self._all_batches(max_batches))
        fetcher.done = max_batches == 0 or sum(self.num_batches) == 0  # no batch: the step is not entered
        while not fetcher.done:
            extra = (fetcher.dataloader_idx,) if multiple else ()
            self.batch_idx, self.dataloader_idx = fetcher.batch_idx, fetcher.dataloader_idx
            results.on_batch_start(fetcher.batch, fetcher.dataloader_idx)
            hooks.call(f"on_{self.hook}_batch_start", fetcher.batch, fetcher.batch_idx, *extra)
            try:
                with precision.forward_context():
                    output = hooks.call_step(step_name, step_fn, fetcher, 0)
            except StopIteration:
                break
            extra = (fetcher.dataloader_idx,) if multiple else ()
            if collect_outputs and output is not None:
                outputs[fetcher.dataloader_idx].append(output)
            if self.stage == "predict":
                _check_prediction(output)
                if self.return_predictions:
                    self.predictions_per_dataloader[fetcher.dataloader_idx].append(output)
            hooks.call(f"on_{self.hook}_batch_end", output, fetcher.batch, fetcher.batch_idx, *extra)
            if self.stage != "predict":
                self._log_eval_step(fetcher.dataloader_idx)
        return outputs

    def _all_batches(self, max_batches: Optional[int]):
        """(batch, batch_idx, dataloader_idx, is_last) over every dataloader in turn, within the batch limits."""
        def batches():
            for dataloader_idx, loader in enumerate(self.loaders):
                limit = self.num_batches[dataloader_idx]
                limit = limit if max_batches is None else min(limit, max_batches)
                count = None if limit == math.inf else int(limit)
                for batch_idx, batch in itertools.islice(enumerate(self._fetches(loader)), count):
                    yield batch, batch_idx, dataloader_idx

        items = batches()
        current = next(items, None)
        while current is not None:  # one batch ahead, to know which is the last
            upcoming = next(items, None)
            yield (*current, upcoming is None)
            current = upcoming

    def _run_dataloader(self, loader, limit, dataloader_idx, extra, step_name, step_fn, outputs, predictions,
                        collect_outputs) -> None:
        trainer, hooks = self.trainer, self.trainer._hooks
        results = trainer._results
        precision = trainer.precision_plugin
        keep_predictions = self.stage == "predict" and self.return_predictions
        pad = self.keeps_ranks_in_step and math.isfinite(limit)
        iterator = self._fetches(loader)
        batch_idx = 0
        raw = None
        try:
            while batch_idx < limit:
                if not results.filler:
                    try:
                        raw = next(iterator)
                    except StopIteration:
                        if not pad:
                            break
                        results.filler = True  # this rank's shard ran out: stay in step (module docstring)
                        raw = raw if raw is not None else _first_sample_batch(loader)
                self.batch_idx = batch_idx
                batch = hooks.prepare_batch(raw, dataloader_idx)
                results.on_batch_start(batch, dataloader_idx)
                hooks.call(f"on_{self.hook}_batch_start", batch, batch_idx, *extra)
                with precision.forward_context():
                    output = hooks.call_step(step_name, step_fn, batch, batch_idx, *extra)
                if collect_outputs and output is not None and not results.filler:
                    outputs.append(output)
                if self.stage == "predict":
                    _check_prediction(output)
                    if keep_predictions:
                        predictions.append(output)
                hooks.call(f"on_{self.hook}_batch_end", output, batch, batch_idx, *extra)
                batch_idx += 1
                if self.stage != "predict":
                    self._log_eval_step(dataloader_idx)
        finally:
            results.filler = False

    def _fetches(self, loader) -> Any:
        """An iterator over `loader`; while a profiler records, each fetch is timed under Lightning's action name."""
        iterator = iter(loader)
        if not self.trainer._profiling:
            return iterator
        action = ("[_PredictionLoop].predict_next" if self.stage == "predict"
                  else f"[_EvaluationLoop].{'val' if self.stage == 'validate' else self.stage}_next")
        return profiled_fetches(iterator, self.trainer.profiler, action)

    def _log_eval_step(self, dataloader_idx: int) -> None:
        self.trainer._results.log_eval_step(self.log_steps[dataloader_idx])
        if not self.trainer.sanity_checking:
            self.log_steps[dataloader_idx] += 1

    def _per_dataloader(self, metrics: Dict[str, torch.Tensor]) -> List[Dict[str, float]]:
        """Split epoch metrics by the dataloader they were logged for; those logged in epoch-level hooks go to every
        dataloader."""
        out: List[Dict[str, float]] = [{} for _ in self.loaders]
        origin = {metric.epoch_key: metric.dataloader_idx for metric in self.trainer._results.eval.metrics.values()}
        for key, value in metrics.items():
            value = value.item() if isinstance(value, torch.Tensor) else float(value)
            idx = origin.get(key)
            for d in out if idx is None or idx >= len(out) else [out[idx]]:
                d[key] = value
        return out


def _check_dataloader_idx(module, stage: str, multiple: bool, iterating: bool) -> None:
    """The step and batch hooks take `dataloader_idx` exactly when there are several dataloaders (a step taking
    `dataloader_iter` gets none), as Lightning checks before the loop starts, rather than a TypeError mid-run."""
    hook, prefix = _HOOK[stage], {"validate": "val"}.get(stage, stage)
    for name, expected in ((_STEP[stage], multiple and not iterating), (f"on_{hook}_batch_start", multiple),
                           (f"on_{hook}_batch_end", multiple)):
        try:
            parameters = inspect.signature(getattr(module, name)).parameters
        except (TypeError, ValueError):
            continue
        present = "dataloader_idx" in parameters or any(
            p.kind is inspect.Parameter.VAR_POSITIONAL for p in parameters.values())
        where = f"`{type(module).__name__}.{name}()`"
        if expected and not present:
            raise RuntimeError(f"You provided multiple `{prefix}_dataloader`, but no `dataloader_idx` argument in "
                               f"{where}. Try adding `dataloader_idx=0` to its signature.")
        required = "dataloader_idx" in parameters and parameters["dataloader_idx"].default is inspect.Parameter.empty
        if not expected and required:
            raise RuntimeError(f"You provided only a single `{prefix}_dataloader`, but have included `dataloader_idx` "
                               f"in {where}. Either remove the argument or give it a default value i.e. "
                               "`dataloader_idx=0`.")


def _first_sample_batch(loader) -> Any:
    """A filler batch for a rank whose shard is empty: the dataset's first sample, collated as the loader would."""
    sample = loader.dataset[0]
    return loader.collate_fn([sample]) if loader.batch_sampler is not None else loader.collate_fn(sample)


def _check_prediction(output: Any) -> None:
    if output is None:  # Python's warning filter shows it once
        rank_zero_warn("`predict_step` returned None: predict returned None if it was on purpose, ignore this "
                       "warning; otherwise return the batch's predictions.")
