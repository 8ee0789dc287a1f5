"""Pictures: `volt plot` / plot_runs from real CSV and TensorBoard logs, and the learning-rate finder's plot."""
import csv
import math
import os
import subprocess
import sys

import pytest
from helpers import BoringModel, loader, trainer
from volt.callbacks import ModelCheckpoint
from volt.cli import main as volt_main
from volt.loggers import CSVLogger, TensorBoardLogger
from volt.plot import find_runs, plot_lr_find, plot_runs, read_metrics

pytest.importorskip("matplotlib")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class Logged(BoringModel):
    """Logs a train metric every step, a validation metric per epoch, and a per-step value that a test can set."""

    def __init__(self, lr=0.1, offset=0.0):
        super().__init__(lr=lr)
        self.offset = offset

    def training_step(self, batch, batch_idx):
        loss = super().training_step(batch, batch_idx)
        self.log("marker", self.global_step + self.offset)
        return loss


def _fit(root, loggers, lr=0.1, epochs=3, **kwargs):
    run = trainer(root, logger=loggers, max_epochs=epochs, log_every_n_steps=1, **kwargs)
    run.fit(Logged(lr=lr), loader(n=8), loader(n=4, seed=1))
    return run


def _visible_titles(figure):
    return [ax.get_title() for ax in figure.axes if ax.axison]


def _is_png(path):
    with open(path, "rb") as file:
        return file.read(8) == PNG_SIGNATURE


def test_csv_and_tensorboard_logs_of_one_run_read_the_same(tmp_path):
    run = _fit(tmp_path, [CSVLogger(tmp_path, name="csv"), TensorBoardLogger(tmp_path, name="tb")])
    from_csv = read_metrics(run.loggers[0].log_dir)
    from_events = read_metrics(run.loggers[1].log_dir)
    assert set(from_csv) == {"train_loss", "val_loss", "marker"}  # step/epoch columns and hp_metric left out
    assert from_csv["marker"] == ([float(step) for step in range(12)], [float(step) for step in range(12)])
    assert from_events.keys() == from_csv.keys()
    for name, (steps, values) in from_csv.items():
        assert from_events[name][0] == steps
        assert from_events[name][1] == pytest.approx(values, rel=1e-6)  # event files hold float32


def test_event_files_read_as_tensorboard_reads_them_after_a_resume(tmp_path):
    """A run resumed from a step-4 checkpoint logs steps 4.. again; a purge marker hides the first run's values."""
    event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    checkpoints = ModelCheckpoint(tmp_path / "ckpt", every_n_train_steps=4, save_top_k=-1)
    first = trainer(tmp_path, logger=TensorBoardLogger(tmp_path, version=0), max_steps=8, log_every_n_steps=1,
                    callbacks=[checkpoints], enable_checkpointing=True)
    first.fit(Logged(), loader(n=16))
    resumed = trainer(tmp_path, logger=TensorBoardLogger(tmp_path, version=0), max_steps=8, log_every_n_steps=1)
    resumed.fit(Logged(offset=100.0), loader(n=16), ckpt_path=str(tmp_path / "ckpt" / "epoch=0-step=4.ckpt"))

    steps, values = read_metrics(resumed.log_dir)["marker"]
    assert steps == [float(step) for step in range(8)]
    assert values == [float(step) for step in range(4)] + [100.0 + step for step in range(4, 8)]
    accumulator = event_accumulator.EventAccumulator(resumed.log_dir)
    accumulator.Reload()
    assert [(e.step, e.value) for e in accumulator.Scalars("marker")] == list(zip(range(8), values))


def test_event_files_of_torch_summary_writer_in_both_scalar_styles(tmp_path):
    pytest.importorskip("tensorboard")
    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(str(tmp_path)) as writer:
        for step in range(3):
            writer.add_scalar("simple_value", step * 0.5, step)
            writer.add_scalar("tensor", step * 2.0, step, new_style=True)  # TensorBoard 2's one-element tensors
    assert read_metrics(str(tmp_path)) == {"simple_value": ([0.0, 1.0, 2.0], [0.0, 0.5, 1.0]),
                                           "tensor": ([0.0, 1.0, 2.0], [0.0, 2.0, 4.0])}


def test_a_partial_last_record_is_ignored_and_a_damaged_one_warns(tmp_path):
    run = _fit(tmp_path, TensorBoardLogger(tmp_path), epochs=1)
    (events,) = [os.path.join(run.log_dir, name) for name in os.listdir(run.log_dir) if "tfevents" in name]
    complete = read_metrics(run.log_dir)
    with open(events, "ab") as file:  # a writer killed mid-record
        file.write(b"\x40\x00\x00\x00\x00\x00\x00\x00\x01\x02")
    assert read_metrics(run.log_dir) == complete
    with open(events, "r+b") as file:
        data = bytearray(file.read())
        data[len(data) // 2] ^= 0xFF  # flip a byte halfway: the records from there on are not read
        file.seek(0)
        file.write(data)
    with pytest.warns(UserWarning, match=r"tfevents.* is damaged after \d+ bytes; the rest of it is not read"):
        damaged = read_metrics(run.log_dir)
    assert 0 < sum(len(steps) for steps, _ in damaged.values()) < sum(len(steps) for steps, _ in complete.values())


def test_train_and_validation_side_by_side_and_runs_overlaid(tmp_path):
    runs = [_fit(tmp_path, CSVLogger(tmp_path), lr=lr).log_dir for lr in (0.1, 0.01)]
    figure = plot_runs(runs, tmp_path / "two.png")
    assert _is_png(tmp_path / "two.png")
    titles = [[ax.get_title() if ax.axison else None for ax in row] for row in _rows(figure)]
    assert titles == [["train_loss", "val_loss"], ["marker", None]]
    train_ax, val_ax = figure.axes[:2]
    assert val_ax.get_shared_y_axes().joined(train_ax, val_ax)  # one y scale for the pair
    assert [line.get_label() for line in train_ax.lines] == ["version_0", "version_1"]
    # the points drawn are the logged ones
    for line, log_dir in zip(val_ax.lines, runs):
        with open(os.path.join(log_dir, "metrics.csv")) as file:
            logged = [(float(r["step"]), float(r["val_loss"])) for r in csv.DictReader(file) if r["val_loss"]]
        assert list(zip(line.get_xdata(), line.get_ydata())) == logged
    legend = figure.legends[0]
    assert legend.get_title().get_text() == "Training curves of 2 runs"
    assert [text.get_text() for text in legend.get_texts()] == ["version_0", "version_1"]


def _rows(figure):
    columns = figure.axes[0].get_gridspec().ncols
    return [figure.axes[i:i + columns] for i in range(0, len(figure.axes), columns)]


@pytest.mark.parametrize("count, columns", [(1, 1), (3, 2), (7, 3), (12, 3)])
def test_layout_for_one_to_twelve_metrics(tmp_path, count, columns):
    names = [f"metric_{i:02d}" for i in range(count)]
    _write_csv(tmp_path, {name: [(0, 1.0 + i), (5, 2.0 + i)] for i, name in enumerate(names)})
    figure = plot_runs([str(tmp_path)])
    assert figure.axes[0].get_gridspec().ncols == columns
    assert _visible_titles(figure) == names
    assert figure.get_suptitle() == f"Training curves: {os.path.basename(tmp_path)}"


def test_unpaired_metrics_say_what_is_missing_and_wide_positive_ranges_use_a_log_scale(tmp_path):
    _write_csv(tmp_path, {"val_acc": [(3, 0.5), (7, 0.9)], "train_loss": [(0, 10.0), (7, 0.01)],
                          "val_loss": [(3, 1.0), (7, 0.5)], "lr": [(0, float("nan")), (3, 0.1)]})
    figure = plot_runs([str(tmp_path)])
    texts = [text.get_text() for ax in figure.axes for text in ax.texts]
    assert texts == ["no train acc logged"]
    by_title = {ax.get_title(): ax for ax in figure.axes if ax.axison}
    assert by_title["train_loss"].get_yscale() == by_title["val_loss"].get_yscale() == "log"
    assert by_title["val_acc"].get_yscale() == "linear"
    assert "lr (1 non-finite value not drawn)" in by_title


def test_no_metric_is_left_out_when_two_names_claim_one_slot(tmp_path):
    _write_csv(tmp_path, {"val_loss": [(1, 1.0)], "val_loss_epoch": [(1, 2.0)], "train_loss_epoch": [(1, 3.0)]})
    titles = [[ax.get_title() if ax.axison else None for ax in row] for row in _rows(plot_runs([str(tmp_path)]))]
    assert titles == [["train_loss_epoch", "val_loss"], ["val_loss_epoch", None]]


def _write_csv(directory, curves):
    rows = [{"step": step, name: value} for name, points in curves.items() for step, value in points]
    with open(os.path.join(directory, "metrics.csv"), "w", newline="") as file:
        writer = csv.DictWriter(file, ["step", *curves])
        writer.writeheader()
        writer.writerows(rows)


def test_find_runs(tmp_path):
    logs = tmp_path / "lightning_logs"
    for version in (0, 2, 10):
        (logs / f"version_{version}").mkdir(parents=True)
        _write_csv(logs / f"version_{version}", {"a": [(0, 1.0)]})
    assert find_runs(cwd=str(tmp_path)) == [str(logs / "version_10")]  # the newest by number, not by name
    assert find_runs([str(logs)]) == [str(logs / f"version_{v}") for v in (0, 2, 10)]
    assert find_runs([str(logs / "version_2" / "metrics.csv")]) == [str(logs / "version_2")]
    with pytest.raises(FileNotFoundError, match=r"No lightning_logs/version_\* under .*lightning_logs. Pass the log"):
        find_runs(cwd=str(tmp_path / "lightning_logs"))
    with pytest.raises(FileNotFoundError, match="nowhere does not exist: pass a run's log directory"):
        find_runs(["nowhere"])
    with pytest.raises(ValueError, match="Found no logged metrics in .*: expected a metrics.csv"):
        read_metrics(str(tmp_path))


def test_volt_plot_command(tmp_path, capsys, monkeypatch):
    first, second = (_fit(tmp_path, CSVLogger(tmp_path)).log_dir for _ in range(2))
    monkeypatch.chdir(tmp_path)
    volt_main(["plot"])  # the newest run, into its own folder
    assert capsys.readouterr().out == "Training curves of 1 run: lightning_logs/version_1/curves.png\n"
    assert _is_png(os.path.join(second, "curves.png"))
    volt_main(["plot", first, second, "-o", "both.png"])
    assert capsys.readouterr().out == "Training curves of 2 runs: both.png\n"
    assert _is_png(tmp_path / "both.png")
    with pytest.raises(SystemExit) as exit_info:
        volt_main(["plot", "missing"])
    assert exit_info.value.code == 2
    assert "volt plot: missing does not exist" in capsys.readouterr().err


def test_missing_matplotlib_is_named(tmp_path, monkeypatch):
    _write_csv(tmp_path, {"a": [(0, 1.0)]})
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    with pytest.raises(ModuleNotFoundError, match=r"Drawing plots needs matplotlib, which is not installed: `pip"
                                                  r" install matplotlib`"):
        plot_runs([str(tmp_path)])


def test_lr_find_plot_marks_the_suggestion(tmp_path):
    lrs = [10 ** (-6 + 6 * i / 49) for i in range(50)]
    losses = [2.0 - 1.5 / (1 + math.exp(-2.5 * (math.log10(lr) + 3))) + (30 * lr if lr > 0.1 else 0) for lr in lrs]
    losses[-1] = float("inf")  # a diverged last step is left out
    figure = plot_lr_find(lrs, losses, suggested_lr=1.1e-3, path=tmp_path / "lr.png")
    assert _is_png(tmp_path / "lr.png")
    (ax,) = figure.axes
    assert ax.get_xscale() == "log" and ax.get_xlabel() == "learning rate (log scale)" and ax.get_ylabel() == "loss"
    curve, line, marker = ax.lines
    assert len(curve.get_xdata()) == 49
    assert list(line.get_xdata()) == [1.1e-3, 1.1e-3]
    nearest = min(range(49), key=lambda i: abs(math.log(lrs[i] / 1.1e-3)))
    assert (marker.get_xdata()[0], marker.get_ydata()[0]) == (lrs[nearest], losses[nearest])
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["loss", "suggested lr = 1.10e-03"]
    assert ax.get_ylim()[1] < max(losses[:-1])  # the divergence at high rates is cut off


def test_lr_find_plot_on_given_axes_and_bad_input():
    from matplotlib.figure import Figure

    ax = Figure().subplots()
    assert plot_lr_find([1e-3, 1e-2], [1.0, 0.5], ax=ax) is ax.figure
    with pytest.raises(ValueError, match="one loss per learning rate, and at least one: got 2 learning rates and 1"):
        plot_lr_find([1e-3, 1e-2], [1.0])
    with pytest.raises(ValueError, match="learning rates on a log axis: they must be positive, got 0"):
        plot_lr_find([0, 1e-2], [1.0, 0.5])


def test_import_volt_loads_no_plotting_export_or_tensorboard_package():
    code = ("import sys, volt, volt.plot, volt.profilers, volt.cli, volt.examples; "
            "heavy = sorted({m.split('.')[0] for m in sys.modules} & {'matplotlib', 'onnx', 'onnxscript',"
            " 'onnxruntime', 'tensorboard', 'tensorboardX'}); assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], check=True)
