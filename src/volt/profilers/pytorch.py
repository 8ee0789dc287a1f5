"""PyTorchProfiler: operators recorded with torch.profiler, written as Chrome traces and summed up in a table.

    Trainer(profiler="pytorch")
    Trainer(profiler=PyTorchProfiler(filename="perf", schedule=torch.profiler.schedule(wait=2, warmup=1, active=5)))

The schedule counts the batches of the stage: training batches in `fit` (validation inside `fit` is recorded when it
falls in a recorded window, but does not move the schedule), validation, test or predict batches in the other stages.
The default skips one batch, warms up on the next and records three; `schedule=None` records every batch. Each
recorded window becomes a Chrome trace, `<dirpath>/<stage>[-<filename>][-<local_rank>].<n>.pt.trace.json` (dirpath
defaults to the Trainer's log_dir), to open in Perfetto, chrome://tracing or TensorBoard's profiler plugin. In it,
every hook and step the Trainer runs is a range named `[pl][profile]<action>` and, with `record_module_names`, every
submodule's forward one named `[pl][module]<class>: <name>`: the names TensorBoard's plugin groups by. The table of
operators is printed when the stage ends, or written to `<dirpath>/<stage>-<filename>.txt` with a filename.
"""
import inspect
import os
from collections import defaultdict
from contextlib import ExitStack
from functools import partial
from typing import Any, Callable, Dict, List, Optional

import torch
from torch.autograd.profiler import record_function
from torch.autograd.profiler_util import EventList
from torch.profiler import ProfilerAction, ProfilerActivity

from volt.profilers.profiler import Profiler
from volt.utilities.exceptions import MisconfigurationException
from volt.utilities.rank_zero import rank_zero_warn

# In each stage, the step whose batches move the schedule forward.
_STAGE_STEP = {"fit": "training_step", "validate": "validation_step", "test": "test_step", "predict": "predict_step"}
_DEFAULT_SCHEDULE = {"wait": 1, "warmup": 1, "active": 3}
_DEFAULT = object()  # `schedule` not given


class PyTorchProfiler(Profiler):
    """Profile operators with torch.profiler over each Trainer stage (see the module docstring for the files).

    Args:
        dirpath: where traces and the report file go; default: the Trainer's log_dir.
        filename: write the table to `<stage>-<filename>.txt` instead of printing it; also names the traces.
        group_by_input_shapes: one table row per operator and input shapes (turns on `record_shapes`).
        emit_nvtx: emit NVTX ranges for NVIDIA Nsight Systems / nvprof instead of recording (needs CUDA).
        export_to_chrome: write a Chrome trace per recorded window.
        row_limit: rows in the table; -1 for all.
        sort_by_key: table order, one of `AVAILABLE_SORT_KEYS`; default the total CUDA time when CUDA is
            recorded, else the total CPU time.
        record_module_names: name each submodule's forward in the trace.
        table_kwargs: more arguments for torch's `EventList.table` (e.g. `max_name_column_width`).
        **profiler_kwargs: arguments of `torch.profiler.profile` (`schedule`, `activities`, `record_shapes`,
            `profile_memory`, `with_stack`, `with_flops`, `on_trace_ready`, ...), and Lightning's
            `export_to_flame_graph` (a `.stacks` file per window, for flamegraph.pl) with its `metric`.

    After a stage, `trace_paths` lists the traces it wrote and `function_events` holds what torch recorded.
    """

    STEP_FUNCTIONS = frozenset(_STAGE_STEP.values())
    AVAILABLE_SORT_KEYS = frozenset({
        "cpu_time", "cuda_time", "device_time", "cpu_time_total", "cuda_time_total", "device_time_total",
        "self_cpu_time_total", "self_cuda_time_total", "self_device_time_total", "cpu_memory_usage",
        "cuda_memory_usage", "device_memory_usage", "self_cpu_memory_usage", "self_cuda_memory_usage",
        "self_device_memory_usage", "count", "flops",
    })

    def __init__(
        self,
        dirpath: Optional[str] = None,
        filename: Optional[str] = None,
        group_by_input_shapes: bool = False,
        emit_nvtx: bool = False,
        export_to_chrome: bool = True,
        row_limit: int = 20,
        sort_by_key: Optional[str] = None,
        record_module_names: bool = True,
        table_kwargs: Optional[Dict[str, Any]] = None,
        **profiler_kwargs: Any,
    ) -> None:
        super().__init__(dirpath=dirpath, filename=filename)
        self._group_by_input_shapes = group_by_input_shapes
        self._emit_nvtx = emit_nvtx
        self._export_to_chrome = export_to_chrome
        self._row_limit = row_limit
        self._record_module_names = record_module_names
        self._table_kwargs = _checked_table_kwargs(table_kwargs or {})
        self._export_to_flame_graph = profiler_kwargs.pop("export_to_flame_graph", False)
        self._flame_graph_metric = profiler_kwargs.pop("metric", "self_cpu_time_total")
        schedule = profiler_kwargs.pop("schedule", _DEFAULT)
        self._uses_default_schedule = schedule is _DEFAULT
        self._schedule = _checked_schedule(torch.profiler.schedule(**_DEFAULT_SCHEDULE, repeat=1)
                                           if schedule is _DEFAULT else schedule)
        self._user_trace_handler = profiler_kwargs.pop("on_trace_ready", None)
        # read here (None: not given) so that LightningCLI (jsonargparse) offers it as an argument, as for Lightning's
        record_shapes = profiler_kwargs.pop("record_shapes", None)
        if record_shapes is not None:
            profiler_kwargs["record_shapes"] = record_shapes
        self._profiler_kwargs = _torch_profiler_kwargs(profiler_kwargs, group_by_input_shapes,
                                                       self._export_to_flame_graph)
        recording_cuda = ProfilerActivity.CUDA in self._profiler_kwargs["activities"]
        self._sort_by_key = sort_by_key or ("cuda_time_total" if recording_cuda else "cpu_time_total")
        if self._sort_by_key not in self.AVAILABLE_SORT_KEYS:
            raise MisconfigurationException(
                f"PyTorchProfiler(sort_by_key={sort_by_key!r}): use one of {sorted(self.AVAILABLE_SORT_KEYS)}."
            )

        self.profiler: Optional[torch.profiler.profile] = None  # the running torch profiler
        self.function_events: Optional[EventList] = None  # what the last stopped profiler recorded
        self.trace_paths: List[str] = []  # the Chrome traces written in this stage
        self._windows = 0  # recorded windows handed over so far in this stage
        self._record_all = False  # a stage too short for the default schedule records every batch
        self._nvtx: Optional[ExitStack] = None
        self._ranges: Dict[str, List[record_function]] = {}  # open `[pl][profile]` ranges by action
        self._module_ranges: Optional[_ModuleRanges] = None
        self._batch_steps = set(self.STEP_FUNCTIONS | {"optimizer_step"})  # until `setup` names the stage: any step

    def start(self, action_name: str) -> None:
        if self.profiler is None and self._nvtx is None:
            self._start_profiler()
        if self.profiler is not None and self._starts_batch(action_name):
            self._next_batch()
        recording = record_function("[pl][profile]" + action_name)
        recording.__enter__()
        self._ranges.setdefault(action_name, []).append(recording)

    def stop(self, action_name: str) -> None:
        open_ranges = self._ranges.get(action_name)
        if not open_ranges:
            raise ValueError(f"Attempting to stop recording an action ({action_name}) which was never started.")
        open_ranges.pop().__exit__(None, None, None)
        if not open_ranges:
            del self._ranges[action_name]

    def summary(self) -> str:
        self._stop_profiler()
        if not self.function_events:
            return ""
        averages = self.function_events.key_averages(group_by_input_shapes=self._group_by_input_shapes)
        table = averages.table(sort_by=self._sort_by_key, row_limit=self._row_limit, **self._table_kwargs)
        rank = "" if self._local_rank is None else f" rank: {self._local_rank}"
        lines = ["Profiler Report", "", f"Profile stats for: records{rank}", table]
        lines += [f"Chrome trace: {path}" for path in self.trace_paths]
        return "\n".join(lines)

    def teardown(self, stage: Optional[str]) -> None:
        self._stop_profiler()
        for open_ranges in self._ranges.values():
            for recording in reversed(open_ranges):
                recording.__exit__(None, None, None)
        self._ranges = {}

    def reset(self) -> None:
        self._stop_profiler()
        self.function_events = None
        self.trace_paths = []
        self._windows = 0
        self._record_all = False

    # ------------------------------------------------------------------------------------------------------------

    def _start_profiler(self) -> None:
        if self._emit_nvtx:
            if not torch.cuda.is_available():
                raise RuntimeError(
                    "PyTorchProfiler(emit_nvtx=True) emits NVTX ranges for NVIDIA's Nsight Systems or nvprof, which"
                    " needs a CUDA device, and none is available. Use emit_nvtx=False to record with torch.profiler."
                )
            self._nvtx = ExitStack()
            self._nvtx.enter_context(torch.cuda.profiler.profile())
            self._nvtx.enter_context(torch.autograd.profiler.emit_nvtx(
                record_shapes=self._profiler_kwargs.get("record_shapes", False)))
        else:
            self.profiler = torch.profiler.profile(
                schedule=None if self._schedule is None else self._batch_schedule,
                on_trace_ready=self._trace_ready, **self._profiler_kwargs)
            self.profiler.__enter__()
        if self._record_module_names and self.lightning_module is not None:
            self._module_ranges = _ModuleRanges(self.lightning_module)

    def _stop_profiler(self) -> None:
        if self._module_ranges is not None:
            self._module_ranges.remove()
            self._module_ranges = None
        if self._nvtx is not None:
            self._nvtx.close()
            self._nvtx = None
        if self.profiler is None:
            return
        profiler, self.profiler = self.profiler, None
        batches = profiler.step_num
        profiler.__exit__(None, None, None)
        self.function_events = profiler.events() if profiler.profiler is not None else None
        if self._windows == 0:
            rank_zero_warn(
                f"PyTorchProfiler recorded nothing in {self._stage or 'this run'}: its schedule records none of the"
                f" {batches} batches that ran (it waits and warms up first). Pass a schedule with fewer wait and"
                " warmup steps, or `schedule=None` to record every batch."
            )

    def setup(self, stage: str, local_rank: Optional[int] = None, log_dir: Optional[str] = None) -> None:
        super().setup(stage, local_rank, log_dir)
        step = _STAGE_STEP.get(stage)
        self._batch_steps = {step, "optimizer_step"} if step == "training_step" else {step}

    def _starts_batch(self, action_name: str) -> bool:
        """Whether this action begins a batch: a step of the stage (in fit, an optimizer step too) that no such step
        encloses (training_step runs inside optimizer_step)."""
        steps = self._batch_steps
        return _function_name(action_name) in steps and not any(_function_name(name) in steps for name in self._ranges)

    def _next_batch(self) -> None:
        if self.profiler.step_num == 0 and self._uses_default_schedule:
            self._record_all = self._stage_batches() < sum(_DEFAULT_SCHEDULE.values())
        self.profiler.step()

    def _batch_schedule(self, step: int) -> ProfilerAction:
        """torch's step `n` is batch `n - 1` of the stage; step 0 is what runs before the first batch."""
        if step == 0:
            return ProfilerAction.NONE
        return ProfilerAction.RECORD if self._record_all else self._schedule(step - 1)

    def _stage_batches(self) -> float:
        """How many batches the stage runs per epoch (inf when unknown)."""
        if self.lightning_module is None or self._stage not in _STAGE_STEP:
            return float("inf")
        trainer = self.lightning_module.trainer
        counts = {"fit": lambda: trainer.num_training_batches, "validate": lambda: sum(trainer.num_val_batches),
                  "test": lambda: sum(trainer.num_test_batches), "predict": lambda: sum(trainer.num_predict_batches)}
        return counts[self._stage]()

    def _trace_ready(self, profiler: torch.profiler.profile) -> None:
        """A recorded window is complete: hand it to the user's `on_trace_ready`, or write it out."""
        index, self._windows = self._windows, self._windows + 1
        if self._user_trace_handler is not None:
            self._user_trace_handler(profiler)
            return
        stem = os.path.join(self.output_dir, f"{self.file_stem(self._stage)}.{index}")
        if self._export_to_chrome or self._export_to_flame_graph:
            os.makedirs(self.output_dir, exist_ok=True)
        if self._export_to_chrome:
            profiler.export_chrome_trace(stem + ".pt.trace.json")
            self.trace_paths.append(stem + ".pt.trace.json")
        if self._export_to_flame_graph:
            profiler.export_stacks(stem + ".stacks", metric=self._flame_graph_metric)


class _ModuleRanges:
    """Forward hooks that put every submodule's forward in a range named `[pl][module]<class>: <name>`."""

    def __init__(self, module: torch.nn.Module) -> None:
        self._open: Dict[str, List[record_function]] = defaultdict(list)
        self._handles = []
        for name, submodule in module.named_modules():
            if not name:
                continue
            kind = type(submodule)
            label = f"[pl][module]{kind.__module__}.{kind.__qualname__}: {name}"
            self._handles.append(submodule.register_forward_pre_hook(partial(self._enter, label)))
            # always_call: the range closes even when forward raises
            self._handles.append(submodule.register_forward_hook(partial(self._exit, label), always_call=True))

    def _enter(self, label: str, module: torch.nn.Module, args: Any) -> None:
        recording = record_function(label)
        recording.__enter__()
        self._open[label].append(recording)

    def _exit(self, label: str, module: torch.nn.Module, args: Any, output: Any) -> None:
        if self._open[label]:
            self._open[label].pop().__exit__(None, None, None)

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []


def _function_name(action_name: str) -> str:
    """`[Strategy]SingleDeviceStrategy.training_step` -> `training_step`."""
    return action_name.rsplit("]", 1)[-1].rsplit(".", 1)[-1]


def _checked_schedule(schedule: Optional[Callable[[int], ProfilerAction]]):
    if schedule is None:
        return None
    action = schedule(0) if callable(schedule) else None
    if not isinstance(action, ProfilerAction):
        raise MisconfigurationException(
            f"PyTorchProfiler(schedule={schedule!r}): expected a function from a step number to a"
            " torch.profiler.ProfilerAction, such as `torch.profiler.schedule(wait=1, warmup=1, active=3)`."
        )
    return schedule


def _checked_table_kwargs(table_kwargs: Dict[str, Any]) -> Dict[str, Any]:
    allowed = set(inspect.signature(EventList.table).parameters) - {"self", "sort_by", "row_limit"}
    for key in table_kwargs:
        if key in ("sort_by", "row_limit"):
            raise KeyError(f"Found invalid table_kwargs key: {key}. This is already a positional argument of the"
                           f" Profiler: pass it as PyTorchProfiler("
                           f"{'sort_by_key' if key == 'sort_by' else 'row_limit'}=...) instead.")
        if key not in allowed:
            raise KeyError(f"Found invalid table_kwargs key: {key}. torch's EventList.table takes {sorted(allowed)}.")
    return table_kwargs


def _torch_profiler_kwargs(kwargs: Dict[str, Any], group_by_input_shapes: bool, with_stack: bool) -> Dict[str, Any]:
    """Check the arguments meant for `torch.profiler.profile` and fill in volt's defaults."""
    accepted = set(inspect.signature(torch.profiler.profile.__init__).parameters) - {"self", "schedule",
                                                                                      "on_trace_ready"}
    # Lightning's older spelling of `activities`, kept so that ported code runs (torch deprecates `use_cuda`).
    use_cpu, use_cuda = kwargs.pop("use_cpu", True), kwargs.pop("use_cuda", torch.cuda.is_available())
    unknown = sorted(set(kwargs) - accepted)
    if unknown:
        raise MisconfigurationException(
            f"PyTorchProfiler got {unknown}, which torch.profiler.profile does not take. Its arguments are:"
            f" {sorted(accepted | {'schedule', 'on_trace_ready'})}."
        )
    if "activities" not in kwargs:
        kwargs["activities"] = ([ProfilerActivity.CPU] if use_cpu else []) + (
            [ProfilerActivity.CUDA] if use_cuda else [])
    if group_by_input_shapes:
        if kwargs.get("record_shapes") is False:
            raise MisconfigurationException(
                "PyTorchProfiler(group_by_input_shapes=True, record_shapes=False): grouping by input shapes needs"
                " the shapes recorded. Drop record_shapes=False."
            )
        kwargs["record_shapes"] = True
    if with_stack:
        kwargs["with_stack"] = True
    kwargs.setdefault("acc_events", True)  # the table covers every recorded window, not just the last
    return kwargs
