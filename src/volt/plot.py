"""Pictures of a run, without a TensorBoard server: `volt plot [LOG_DIR ...] [-o out.png]`.

`plot_runs` reads the logs volt's loggers write, a run's metrics.csv (CSVLogger) or its TensorBoard event files
(TensorBoardLogger), and draws every logged metric against the step: a train metric and its validation counterpart
side by side on one row, sharing their y-axis, and several runs overlaid, one colour each, with a legend.
`plot_lr_find` draws the learning-rate finder's loss curve with the suggested rate marked.

Event files are read with tensorboardX's protobuf classes (what volt writes them with, and one of its required
dependencies) and a short reader of their TFRecord framing that checks every record's CRC. The tensorboard package
is optional, imports slowly, and its EventAccumulator keeps a random sample of at most 10,000 points per tag unless
told otherwise. As in TensorBoard, a session-start marker at step s (written when a run resumes from a checkpoint)
drops the points at or after s read before it.

matplotlib is imported only when a picture is drawn: `pip install "volt[plot]"`.
"""
import argparse
import csv
import math
import os
import re
import struct
import warnings
from typing import Dict, List, Optional, Sequence, Tuple, Union

# metric name -> (steps, values), in step order
Curves = Dict[str, Tuple[List[float], List[float]]]

_TRAIN_PREFIXES = ("train_", "train/", "train-", "training_", "training/")
_VAL_PREFIXES = ("val_", "val/", "val-", "valid_", "valid/", "validation_", "validation/")
_NOT_CURVES = ("step", "epoch")  # bookkeeping columns the loggers add
_PANEL_WIDTH, _PANEL_HEIGHT = 5.2, 3.0  # inches


# ------------------------------------------------------------------------------------------------------------------
# reading logs


def find_runs(paths: Sequence[str] = (), cwd: str = ".") -> List[str]:
    """The run directories to draw: each path given (a folder of `version_*` runs stands for all of them), or, with
    none, the newest `lightning_logs/version_*` under `cwd`."""
    if not paths:
        versions = _versions(os.path.join(cwd, "lightning_logs"))
        if not versions:
            raise FileNotFoundError(
                f"No lightning_logs/version_* under {os.path.abspath(cwd)}. Pass the log directory of a run, e.g."
                " `volt plot lightning_logs/version_0`."
            )
        return [os.path.normpath(versions[-1])]
    runs = []
    for path in paths:
        if os.path.isfile(path):
            path = os.path.dirname(path) or "."
        if not os.path.isdir(path):
            raise FileNotFoundError(f"{path} does not exist: pass a run's log directory (with metrics.csv or"
                                    " TensorBoard event files), or a folder of version_* runs.")
        runs += [path] if _has_logs(path) or not _versions(path) else _versions(path)
    return runs


def read_metrics(log_dir: str) -> Curves:
    """The scalars logged in `log_dir`: from metrics.csv when there is one, else from its TensorBoard event files."""
    csv_path = os.path.join(log_dir, "metrics.csv")
    curves = _read_csv(csv_path) if os.path.isfile(csv_path) else _read_event_files(log_dir)
    for name in list(curves):
        steps, values = curves[name]
        placeholder = name == "hp_metric" and all(value == -1 for value in values)  # TensorBoardLogger's default
        if name in _NOT_CURVES or placeholder or not steps:
            del curves[name]
    if not curves:
        raise ValueError(f"Found no logged metrics in {log_dir}: expected a metrics.csv (CSVLogger) or TensorBoard"
                         " event files (events.out.tfevents.*, TensorBoardLogger) with scalars in them.")
    return curves


def _read_csv(path: str) -> Curves:
    curves: Curves = {}
    with open(path, newline="") as file:
        reader = csv.DictReader(file)
        if "step" not in (reader.fieldnames or []):
            raise ValueError(f"{path} has no `step` column: it was not written by a CSVLogger.")
        for row in reader:
            step = float(row["step"])
            for name, cell in row.items():
                value = _number(cell)
                if name != "step" and value is not None:
                    steps, values = curves.setdefault(name, ([], []))
                    steps.append(step)
                    values.append(value)
    return curves


def _number(cell: Optional[str]) -> Optional[float]:
    try:
        return float(cell) if cell not in (None, "") else None
    except ValueError:  # a text column
        return None


def _read_event_files(log_dir: str) -> Curves:
    from tensorboardX.proto.event_pb2 import Event, SessionLog

    points: Dict[str, List[Tuple[float, float]]] = {}
    for name in sorted(os.listdir(log_dir)):  # TensorBoard's order; volt names them in creation order
        if "tfevents" not in name:
            continue
        for record in _records(os.path.join(log_dir, name)):
            event = Event.FromString(record)
            if event.HasField("session_log") and event.session_log.status == SessionLog.START:
                for tag in points:  # a resumed run logs these steps again
                    points[tag] = [point for point in points[tag] if point[0] < event.step]
            for value in event.summary.value:
                number = _scalar(value)
                if number is not None:
                    points.setdefault(value.tag, []).append((float(event.step), number))
    curves: Curves = {}
    for tag, tag_points in points.items():
        tag_points.sort(key=lambda point: point[0])
        curves[tag] = ([step for step, _ in tag_points], [value for _, value in tag_points])
    return curves


def _records(path: str):
    """The records of a TFRecord file (length, masked CRC, data, masked CRC). A run still writing, or killed, may
    end in a partial record: reading stops there. A damaged record stops reading with a warning."""
    from tensorboardX.record_writer import masked_crc32c

    with open(path, "rb") as file:
        while True:
            header = file.read(12)
            if len(header) < 12:
                return
            length, header_crc = struct.unpack("<QI", header)
            data, data_crc = file.read(length), file.read(4)
            if len(data) < length or len(data_crc) < 4:
                return
            if header_crc != masked_crc32c(header[:8]) or struct.unpack("<I", data_crc)[0] != masked_crc32c(data):
                warnings.warn(f"{path} is damaged after {file.tell() - length - 16} bytes; the rest of it is not read.")
                return
            yield data


def _scalar(value) -> Optional[float]:
    """The number in a summary value: a `simple_value`, or a one-element float/int tensor (tensorboard's style)."""
    kind = value.WhichOneof("value")
    if kind == "simple_value":
        return float(value.simple_value)
    if kind != "tensor" or value.metadata.plugin_data.plugin_name not in ("", "scalars"):
        return None
    tensor = value.tensor
    for field in ("float_val", "double_val", "int_val", "int64_val"):
        if len(getattr(tensor, field)) == 1:
            return float(getattr(tensor, field)[0])
    formats = {1: "<f", 2: "<d", 3: "<i", 9: "<q"}  # TensorFlow's DT_FLOAT, DT_DOUBLE, DT_INT32, DT_INT64
    fmt = formats.get(tensor.dtype)
    if fmt and len(tensor.tensor_content) == struct.calcsize(fmt):
        return float(struct.unpack(fmt, tensor.tensor_content)[0])
    return None


def _has_logs(path: str) -> bool:
    return os.path.isfile(os.path.join(path, "metrics.csv")) or any("tfevents" in n for n in os.listdir(path))


def _versions(path: str) -> List[str]:
    """`path/version_N` folders, by N."""
    if not os.path.isdir(path):
        return []
    found = [(int(m.group(1)), name) for name in os.listdir(path) if (m := re.fullmatch(r"version_(\d+)", name))]
    return [os.path.join(path, name) for _, name in sorted(found)]


# ------------------------------------------------------------------------------------------------------------------
# drawing


def plot_runs(log_dirs: Sequence[str], path: Union[str, os.PathLike, None] = None, title: Optional[str] = None):
    """Draw every metric of the runs in `log_dirs` against the step; save a PNG to `path` if given.

    Returns the matplotlib Figure. Rows pair a train metric with its validation one (`train_loss` | `val_loss`),
    other metrics follow; each run has one colour in every panel.
    """
    Figure = _matplotlib_figure()
    runs = [(label, read_metrics(log_dir)) for label, log_dir in zip(_labels(log_dirs), log_dirs)]
    names = sorted({name for _, curves in runs for name in curves})
    grid = _grid(names)
    columns = len(grid[0])
    figure = Figure(figsize=(_PANEL_WIDTH * columns, _PANEL_HEIGHT * len(grid) + 0.8), layout="constrained")
    axes = figure.subplots(len(grid), columns, squeeze=False)
    colours = _colours(len(runs))
    for row, row_axes in zip(grid, axes):
        _draw_row(row, row_axes, axes[0][0], runs, colours)
    if len(runs) == 1:
        figure.suptitle(title or f"Training curves: {runs[0][0]}", fontsize="x-large")
    else:  # the title heads the legend of runs, so that both sit above the panels
        from matplotlib.lines import Line2D

        handles = [Line2D([], [], color=colour, linewidth=2) for colour in colours]
        figure.legend(handles, [label for label, _ in runs], loc="outside upper center", ncols=min(len(runs), 4),
                      frameon=False, fontsize="large", title=title or f"Training curves of {len(runs)} runs",
                      title_fontsize="x-large")
    if path is not None:
        _save(figure, path)
    return figure


def _colours(count: int) -> List:
    """matplotlib's ten default colours, or, for more runs, as many distinct ones spread over a colour map."""
    if count <= 10:
        return [f"C{index}" for index in range(count)]
    from matplotlib import colormaps

    return [colormaps["turbo"](index / (count - 1)) for index in range(count)]


def _draw_row(row: Sequence[Optional[str]], row_axes, first_ax, runs, colours: Sequence[str]) -> None:
    """Draw one row of panels. All panels share the step axis; a train/validation pair also shares its y-axis,
    drawn on a log scale when its values are positive and span two decades or more (an early loss, say)."""
    pair = len(row) == 2 and all(row) and _role(row[0])[0] == 0
    for ax in row_axes:
        if ax is not first_ax:
            ax.sharex(first_ax)
    if pair:
        row_axes[1].sharey(row_axes[0])
    ranges = []
    for slot, (name, ax) in enumerate(zip(row, row_axes)):
        if name is None:
            _leave_empty(ax, row, slot)
            ranges.append(None)
        else:
            ranges.append(_draw_metric(ax, name, [(label, curves.get(name)) for label, curves in runs], colours))
    for ax, value_range in zip(row_axes, [_joined(ranges)] * 2 if pair else ranges):
        if value_range and value_range[0] > 0 and value_range[1] / value_range[0] >= 100:
            ax.set_yscale("log")
            ax.set_ylabel("log scale")


def _grid(names: Sequence[str]) -> List[List[Optional[str]]]:
    """Panels in rows: [train metric, val metric] per quantity (one side may be empty), then the other metrics."""
    pairs: Dict[str, List[Optional[str]]] = {}
    others = []
    for name in names:
        role, quantity = _role(name)
        slots = pairs.setdefault(quantity, [None, None]) if role is not None else None
        if slots is None or slots[role] is not None:  # not train/validation, or its slot is taken (a_epoch and a)
            others.append(name)
        else:
            slots[role] = name
    if pairs:
        columns = 2
    else:
        columns = 1 if len(others) == 1 else 2 if len(others) <= 4 else 3
    rows = [pairs[quantity] for quantity in sorted(pairs, key=lambda q: ("loss" not in q.lower(), q))]
    rows += [others[i:i + columns] + [None] * (columns - len(others[i:i + columns]))
             for i in range(0, len(others), columns)]
    return rows


def _leave_empty(ax, row: Sequence[Optional[str]], slot: int) -> None:
    """An empty slot; beside a train or validation metric it says that the counterpart was not logged."""
    ax.axis("off")
    other = row[1 - slot] if len(row) == 2 else None
    role, quantity = _role(other) if other else (None, "")
    if role is not None and role != slot and not quantity.endswith("_step"):  # per-step values have no counterpart
        ax.text(0.5, 0.5, f"no {'train' if slot == 0 else 'validation'} {quantity} logged", transform=ax.transAxes,
                ha="center", va="center", color="0.6", fontsize="large")


def _role(name: str) -> Tuple[Optional[int], str]:
    """(0 for train, 1 for validation, None for other, the quantity): `train_loss_epoch` and `val_loss` pair up."""
    lowered = name.lower()
    for role, prefixes in ((0, _TRAIN_PREFIXES), (1, _VAL_PREFIXES)):
        for prefix in prefixes:
            if lowered.startswith(prefix):
                quantity = name[len(prefix):]
                return role, quantity[:-len("_epoch")] if quantity.endswith("_epoch") else quantity
    return None, name


def _draw_metric(ax, name: str, series, colours: Sequence[str]) -> Optional[Tuple[float, float]]:
    """One panel: the metric of every run that logged it, without its non-finite values (counted in the title).
    Returns the smallest and largest value drawn."""
    dropped, drawn = 0, []
    for (label, curve), colour in zip(series, colours):
        if curve is None:
            continue
        points = [(step, value) for step, value in zip(*curve) if math.isfinite(value)]
        dropped += len(curve[0]) - len(points)
        if points:
            steps, values = zip(*points)
            ax.plot(steps, values, color=colour, label=label, linewidth=1.5,
                    marker="o" if len(points) <= 30 else None, markersize=3.5)
            drawn += values
    if dropped:
        name += f" ({dropped} non-finite value{'s' if dropped > 1 else ''} not drawn)"
    ax.set_title(name, fontsize="large")
    ax.set_xlabel("step")
    ax.grid(True, alpha=0.3)
    return (min(drawn), max(drawn)) if drawn else None


def _joined(ranges: Sequence[Optional[Tuple[float, float]]]) -> Optional[Tuple[float, float]]:
    ranges = [value_range for value_range in ranges if value_range]
    return (min(r[0] for r in ranges), max(r[1] for r in ranges)) if ranges else None


def _labels(log_dirs: Sequence[str]) -> List[str]:
    """The shortest path endings that tell the runs apart (`version_3`, or `exp_a/version_0` vs `exp_b/...`)."""
    parts = [os.path.normpath(os.path.abspath(d)).split(os.sep) for d in log_dirs]
    for depth in range(1, max(len(p) for p in parts) + 1):
        labels = ["/".join(p[-depth:]) for p in parts]
        if len(set(labels)) == len(labels):
            return labels
    return [str(d) for d in log_dirs]


def plot_lr_find(lrs: Sequence[float], losses: Sequence[float], suggested_lr: Optional[float] = None, ax=None,
                 path: Union[str, os.PathLike, None] = None, log_scale: bool = True, show: bool = False):
    """Loss against learning rate (on a log x-axis unless `log_scale=False`), for the learning-rate finder, with
    `suggested_lr` marked.

    Draws on `ax` if given, else on a new figure. Returns the Figure; `path` also saves it as a PNG; `show` opens it
    in a window through pyplot (which then makes the figure). Points with a non-finite loss (a run that diverged at
    high rates) are left out.
    """
    if len(lrs) != len(losses) or not lrs:
        raise ValueError(f"plot_lr_find needs one loss per learning rate, and at least one: got {len(lrs)} learning"
                         f" rates and {len(losses)} losses.")
    if log_scale and min(lrs) <= 0:
        raise ValueError(f"plot_lr_find draws learning rates on a log axis: they must be positive, got {min(lrs)}.")
    if ax is None:
        figure = (_pyplot().figure if show else _matplotlib_figure())(figsize=(7, 4.5), layout="constrained")
        ax = figure.subplots()
    points = [(float(lr), float(loss)) for lr, loss in zip(lrs, losses) if math.isfinite(float(loss))]
    if points:
        ax.plot(*zip(*points), color="C0", linewidth=1.8, label="loss")
        _clip_divergence(ax, [loss for _, loss in points])
    if suggested_lr is not None:
        ax.axvline(suggested_lr, color="C3", linestyle="--", linewidth=1.2, label=f"suggested lr = {suggested_lr:.2e}")
        if points:  # mark the curve at the rate nearest the suggestion
            scale = math.log if log_scale else float
            nearest = min(points, key=lambda point: abs(scale(point[0]) - scale(suggested_lr)))
            ax.plot(*nearest, marker="o", markersize=9, color="C3")
    if log_scale:
        ax.set_xscale("log")
    ax.set_xlabel("learning rate (log scale)" if log_scale else "learning rate")
    ax.set_ylabel("loss")
    ax.set_title("Learning-rate finder")
    ax.grid(True, which="major", alpha=0.3)
    ax.grid(True, which="minor", alpha=0.1)
    ax.legend()
    if path is not None:
        _save(ax.figure, path)
    if show:
        _pyplot().show()
    return ax.figure


def _clip_divergence(ax, losses: Sequence[float]) -> None:
    """When the loss shoots up at high rates far above where it started, cut the y-axis there, so that the dip
    the suggestion comes from stays visible rather than flattened."""
    first, lowest = losses[0], min(losses)
    span = first - lowest
    if span > 0 and max(losses) > first + span:
        ax.set_ylim(lowest - 0.1 * span, first + span)


def _save(figure, path: Union[str, os.PathLike]) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    figure.savefig(path, dpi=110)


def _pyplot():
    """matplotlib.pyplot, for figures shown in a window or a notebook (after `_matplotlib_figure`'s check)."""
    _matplotlib_figure()
    import matplotlib.pyplot

    return matplotlib.pyplot


def _matplotlib_figure():
    """matplotlib's Figure class (no pyplot: no GUI backend, no global state), or an error naming the package."""
    try:
        from matplotlib.figure import Figure
    except ModuleNotFoundError as error:
        if (error.name or "").partition(".")[0] != "matplotlib":
            raise
        raise ModuleNotFoundError("Drawing plots needs matplotlib, which is not installed: `pip install matplotlib`"
                                  ' (or `pip install "volt[plot]"`).') from error
    return Figure


# ------------------------------------------------------------------------------------------------------------------
# the `volt plot` command


def main(argv: Optional[Sequence[str]] = None) -> str:
    """`volt plot`: draw the runs' curves to a PNG and print its path (also returned)."""
    parser = argparse.ArgumentParser(
        prog="volt plot",
        description="Draw the training curves of one or several runs (every logged metric against step; train and"
                    " validation side by side; runs overlaid) to a PNG, from their metrics.csv or TensorBoard"
                    " event files.",
    )
    parser.add_argument("log_dirs", nargs="*", metavar="LOG_DIR",
                        help="a run's log directory, or a folder of version_* runs (default: the newest"
                             " lightning_logs/version_* here)")
    parser.add_argument("-o", "--output", help="the PNG to write (default: curves.png in the run's directory, or"
                                               " here for several runs)")
    args = parser.parse_args(argv)
    try:
        runs = find_runs(args.log_dirs)
        output = args.output or os.path.join(runs[0] if len(runs) == 1 else ".", "curves.png")
        plot_runs(runs, output)
    except (FileNotFoundError, ValueError, ModuleNotFoundError) as error:
        parser.exit(2, f"volt plot: {error}\n")
    print(f"Training curves of {len(runs)} run{'s' if len(runs) > 1 else ''}: {output}")
    return output
