"""PyTorchProfiler through Trainer.fit/validate: Chrome traces with the steps' ranges, the summary, the schedule."""
import json
import logging
import os

import pytest
import torch

from helpers import BoringModel, loader, trainer
from volt.profilers import PyTorchProfiler
from volt.utilities.exceptions import MisconfigurationException


@pytest.fixture
def volt_logs(caplog, monkeypatch):
    """caplog for volt's logger, which does not propagate to the root logger by default (reports are logged)."""
    monkeypatch.setattr(logging.getLogger("volt"), "propagate", True)
    with caplog.at_level(logging.INFO, logger="volt"):
        yield caplog

TRAINING_STEP = "[pl][profile][Strategy]SingleDeviceStrategy.training_step"


class TwoLayers(BoringModel):
    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1))


def _ranges(trace_path):
    """Names of the complete ("X") events in a Chrome trace, which must be valid JSON."""
    with open(trace_path) as file:
        trace = json.load(file)
    return [event["name"] for event in trace["traceEvents"] if event.get("ph") == "X"]


def _fit(tmp_path, profiler, batches=10, **kwargs):
    run = trainer(tmp_path, profiler=profiler, **kwargs)
    run.fit(TwoLayers(), loader(n=2 * batches), loader(n=4))
    return run


def test_default_records_three_training_steps_into_a_trace_in_the_log_dir(tmp_path, volt_logs):
    run = _fit(tmp_path, "pytorch", logger=True)
    assert run.log_dir == str(tmp_path / "lightning_logs" / "version_0")
    trace = os.path.join(run.log_dir, "fit.0.pt.trace.json")
    names = _ranges(trace)
    # default schedule: skip one batch, warm up on one, record three
    assert names.count(TRAINING_STEP) == 3
    assert sorted(n for n in names if n.startswith("ProfilerStep#")) == ["ProfilerStep#3", "ProfilerStep#4",
                                                                           "ProfilerStep#5"]
    assert names.count("[pl][profile][Strategy]SingleDeviceStrategy.optimizer_step") == 3
    assert "[pl][module]torch.nn.modules.linear.Linear: layer.0" in names
    assert "aten::addmm" in names
    out = volt_logs.text
    assert "FIT Profiler Report" in out and "Self CPU" in out and "aten::addmm" in out
    assert f"Chrome trace: {trace}" in out
    assert [name for name in os.listdir(run.log_dir) if "trace" in name] == ["fit.0.pt.trace.json"]


def test_schedule_is_honoured_window_by_window(tmp_path):
    schedule = torch.profiler.schedule(wait=1, warmup=1, active=2, repeat=2)
    profiler = PyTorchProfiler(dirpath=tmp_path / "prof", filename="perf", schedule=schedule)
    _fit(tmp_path, profiler, batches=12)
    files = sorted(os.listdir(tmp_path / "prof"))
    assert files == ["fit-perf.0.pt.trace.json", "fit-perf.1.pt.trace.json", "fit-perf.txt"]
    # batches 0..3 are the first cycle (record 2, 3), batches 4..7 the second (record 6, 7); then nothing
    for index, steps in ((0, ["ProfilerStep#3", "ProfilerStep#4"]), (1, ["ProfilerStep#7", "ProfilerStep#8"])):
        names = _ranges(tmp_path / "prof" / f"fit-perf.{index}.pt.trace.json")
        assert names.count(TRAINING_STEP) == 2
        assert sorted(n for n in names if n.startswith("ProfilerStep#")) == steps
    report = (tmp_path / "prof" / "fit-perf.txt").read_text()
    assert report.startswith("FIT Profiler Report") and "aten::addmm" in report
    # the table sums both windows: four training steps (torch's table cuts long names short)
    row = next(line for line in report.splitlines() if "[pl][profile][Strategy]SingleDeviceStrategy.tr" in line)
    assert row.split()[-1] == "4"


def test_stage_shorter_than_the_default_schedule_records_every_batch(tmp_path):
    profiler = PyTorchProfiler(dirpath=tmp_path)
    _fit(tmp_path, profiler, batches=3)
    assert _ranges(tmp_path / "fit.0.pt.trace.json").count(TRAINING_STEP) == 3


def test_validation_inside_fit_does_not_move_the_schedule(tmp_path):
    # Warm up on batch 0, record batches 1..3. With a 5th batch, its start closes the window before validation;
    # with 4, the window is still open when validation (2 batches) runs at the end of the epoch.
    for batches, validation_steps in ((5, 0), (4, 2)):
        profiler = PyTorchProfiler(dirpath=tmp_path / str(batches),
                                   schedule=torch.profiler.schedule(wait=0, warmup=1, active=3))
        trainer(tmp_path, profiler=profiler, num_sanity_val_steps=2).fit(TwoLayers(), loader(n=2 * batches),
                                                                         loader(n=4))
        names = _ranges(tmp_path / str(batches) / "fit.0.pt.trace.json")
        assert names.count(TRAINING_STEP) == 3
        assert names.count("[pl][profile][Strategy]SingleDeviceStrategy.validation_step") == validation_steps


def test_validate_stage_counts_validation_batches(tmp_path, volt_logs):
    profiler = PyTorchProfiler(dirpath=tmp_path, schedule=torch.profiler.schedule(wait=0, warmup=1, active=2))
    trainer(tmp_path, profiler=profiler).validate(TwoLayers(), loader(n=10))
    names = _ranges(tmp_path / "validate.0.pt.trace.json")
    assert names.count("[pl][profile][Strategy]SingleDeviceStrategy.validation_step") == 2
    assert "VALIDATE Profiler Report" in volt_logs.text


def test_schedule_that_records_nothing_warns(tmp_path):
    profiler = PyTorchProfiler(dirpath=tmp_path, schedule=torch.profiler.schedule(wait=50, warmup=1, active=1))
    with pytest.warns(UserWarning, match="recorded nothing in fit: its schedule records none of the 6 batches"):
        _fit(tmp_path, profiler, batches=6)
    assert os.listdir(tmp_path) == []


def test_schedule_none_records_every_batch_and_module_names_can_be_left_out(tmp_path):
    profiler = PyTorchProfiler(dirpath=tmp_path, schedule=None, record_module_names=False)
    _fit(tmp_path, profiler, batches=7)
    names = _ranges(tmp_path / "fit.0.pt.trace.json")
    assert names.count(TRAINING_STEP) == 7
    assert not [name for name in names if name.startswith("[pl][module]")]


def test_group_by_input_shapes_and_table_kwargs_shape_the_summary(tmp_path):
    profiler = PyTorchProfiler(filename="perf", dirpath=tmp_path, group_by_input_shapes=True, row_limit=5,
                               sort_by_key="count", table_kwargs={"max_name_column_width": 30})
    _fit(tmp_path, profiler, batches=6)
    report = (tmp_path / "fit-perf.txt").read_text()
    assert "Input Shapes" in report
    lines = report.splitlines()
    rules = [i for i, line in enumerate(lines) if line.startswith("---")]  # above and below the header, at the end
    rows = lines[rules[1] + 1:rules[2]]
    assert len(rows) == 5
    assert max(len(row.split("  ")[0]) for row in rows) <= 30


def test_user_trace_handler_replaces_the_chrome_export(tmp_path):
    windows = []
    profiler = PyTorchProfiler(dirpath=tmp_path, on_trace_ready=lambda prof: windows.append(prof.step_num))
    _fit(tmp_path, profiler, batches=8)
    assert windows == [6] and os.listdir(tmp_path) == []


def test_failed_fit_stops_the_torch_profiler(tmp_path):
    class Failing(TwoLayers):
        def training_step(self, batch, batch_idx):
            if batch_idx == 3:
                raise RuntimeError("boom")
            return super().training_step(batch, batch_idx)

    profiler = PyTorchProfiler(dirpath=tmp_path, schedule=None)
    with pytest.raises(RuntimeError, match="boom"):
        trainer(tmp_path, profiler=profiler).fit(Failing(), loader(n=20))
    assert not torch.autograd.profiler._is_profiler_enabled
    assert not any(hook for module in Failing().modules() for hook in module._forward_hooks.values())
    # the batches before the failure are in the trace, and the next run profiles again
    assert _ranges(tmp_path / "fit.0.pt.trace.json").count(TRAINING_STEP) == 4
    _fit(tmp_path, profiler, batches=3)
    assert _ranges(tmp_path / "fit.0.pt.trace.json").count(TRAINING_STEP) == 3


def test_used_without_a_trainer(tmp_path):
    profiler = PyTorchProfiler(dirpath=tmp_path, schedule=torch.profiler.schedule(wait=0, warmup=1, active=1))
    model = torch.nn.Linear(3, 1)
    for _ in range(3):
        with profiler.profile("training_step"):
            model(torch.randn(2, 3)).sum().backward()
    assert "Profile stats for: records" in profiler.summary()
    assert _ranges(tmp_path / "profile.0.pt.trace.json").count("[pl][profile]training_step") == 1


@pytest.mark.parametrize("kwargs, error, match", [
    ({"sort_by_key": "speed"}, MisconfigurationException, r"sort_by_key='speed'\): use one of \["),
    ({"schedule": 3}, MisconfigurationException, "expected a function from a step number to a torch.profiler"),
    ({"schedule": lambda step: "record"}, MisconfigurationException, "expected a function from a step number"),
    ({"table_kwargs": {"sort_by": "count"}}, KeyError,
     r"invalid table_kwargs key: sort_by. This is already a positional argument of the Profiler: pass it as "
     r"PyTorchProfiler\(sort_by_key=...\)"),
    ({"table_kwargs": {"colour": True}}, KeyError, "torch's EventList.table takes"),
    ({"with_gpu_magic": True}, MisconfigurationException, r"got \['with_gpu_magic'\], which torch.profiler.profile"),
    ({"group_by_input_shapes": True, "record_shapes": False}, MisconfigurationException, "needs the shapes recorded"),
])
def test_bad_arguments_are_clear_errors(kwargs, error, match):
    with pytest.raises(error, match=match):
        PyTorchProfiler(**kwargs)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without CUDA")
def test_emit_nvtx_without_cuda_is_a_clear_error(tmp_path):
    with pytest.raises(RuntimeError, match=r"emit_nvtx=True\) emits NVTX ranges .* needs a CUDA device"):
        _fit(tmp_path, PyTorchProfiler(emit_nvtx=True), batches=2)
    assert not torch.autograd.profiler._is_profiler_enabled


def test_profiler_string_lists_pytorch(tmp_path):
    assert isinstance(trainer(tmp_path, profiler="pytorch").profiler, PyTorchProfiler)
    with pytest.raises(MisconfigurationException, match="one of 'simple', 'advanced', 'pytorch' or 'passthrough'"):
        trainer(tmp_path, profiler="torch")


def test_describe_tears_down_so_the_profiler_can_be_deep_copied(tmp_path):
    """As Lightning: `describe()` ends profiling (open ranges closed, torch's profiler stopped)."""
    import copy

    profiler = PyTorchProfiler(dirpath=tmp_path, filename="perf", schedule=None)
    profiler.start("on_train_start")
    torch.ones(2).sum()
    profiler.describe()
    assert "aten::sum" in (tmp_path / "perf.txt").read_text()
    assert copy.deepcopy(profiler).function_events is not None
