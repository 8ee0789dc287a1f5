"""CSVLogger and TensorBoardLogger: files on disk, read back the way users read them, and Lightning's layout."""
import csv
import os
import pickle
import subprocess
import sys
import threading
import warnings
from argparse import Namespace

import pytest
import torch

from volt.loggers import CSVLogger, Logger, TensorBoardLogger
from volt.utilities.rank_zero import rank_zero_only


def read_csv(path):
    with open(path, newline="") as file:
        reader = csv.DictReader(file)
        return reader.fieldnames, list(reader)


def read_scalars(log_dir):
    """{tag: [(step, value), ...]} as TensorBoard itself reads the folder."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(log_dir)
    accumulator.Reload()
    return {tag: [(e.step, e.value) for e in accumulator.Scalars(tag)] for tag in accumulator.Tags()["scalars"]}


def read_tb_hparams(log_dir):
    """The hyperparameters TensorBoard's HPARAMS tab shows for the run."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    accumulator = EventAccumulator(log_dir)
    accumulator.Reload()
    content = accumulator.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    start_info = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info
    values = {}
    for key, value in start_info.hparams.items():
        kind = value.WhichOneof("kind")
        values[key] = getattr(value, kind)
    return values


# ----------------------------------------------------------------------------------------------------------- CSV


def test_csv_rows_header_and_tensor_values(tmp_path):
    logger = CSVLogger(tmp_path)
    logger.log_metrics({"train_loss": torch.tensor(0.5), "epoch": 0}, step=4)
    logger.save()
    logger.log_metrics({"train_loss": torch.tensor(0.25), "epoch": 0}, step=9)
    logger.log_metrics({"val_loss": torch.tensor(0.75), "epoch": 0}, step=9)  # new column: the file is rewritten
    logger.finalize("success")

    header, rows = read_csv(tmp_path / "lightning_logs" / "version_0" / "metrics.csv")
    assert header == ["epoch", "step", "train_loss", "val_loss"]
    assert rows == [
        {"epoch": "0", "step": "4", "train_loss": "0.5", "val_loss": ""},
        {"epoch": "0", "step": "9", "train_loss": "0.25", "val_loss": ""},
        {"epoch": "0", "step": "9", "train_loss": "", "val_loss": "0.75"},
    ]


def test_csv_matches_lightning_byte_for_byte(tmp_path):
    pl_loggers = pytest.importorskip("pytorch_lightning.loggers")
    # hparams.yaml: both write it with OmegaConf when it is installed (keys in insertion order; the test extra has
    # it), else with PyYAML (keys sorted).
    calls = [
        ({"a": torch.tensor(1.5)}, 0),
        ({"a": 2.0, "b": torch.tensor(3)}, 1),
        "save",
        ({"c": 4.0}, 2),
        ({"a": 5.0}, 3),
        "save",
        ({"b": 6}, 4),
    ]
    loggers = [CSVLogger(tmp_path / "volt", prefix="p"), pl_loggers.CSVLogger(tmp_path / "pl", prefix="p")]
    for logger in loggers:
        logger.log_hyperparams(Namespace(lr=0.01, net={"width": 8, "act": "relu"}, layers=[1, 2]))
        for call in calls:
            logger.save() if call == "save" else logger.log_metrics(*call)
        logger.finalize("success")
    for name in ("metrics.csv", "hparams.yaml"):
        ours, theirs = (open(os.path.join(lg.log_dir, name)).read() for lg in loggers)
        assert ours == theirs, name


def test_csv_flushes_every_n_steps(tmp_path):
    logger = CSVLogger(tmp_path, flush_logs_every_n_steps=2)
    metrics_file = os.path.join(logger.log_dir, "metrics.csv")
    logger.log_metrics({"x": 1.0}, step=0)
    assert not os.path.exists(metrics_file)
    logger.log_metrics({"x": 2.0}, step=1)  # (1 + 1) % 2 == 0
    assert [row["x"] for row in read_csv(metrics_file)[1]] == ["1.0", "2.0"]


def test_csv_hparams_written_when_logged_and_rows_flushed_through_save(tmp_path):
    """As Lightning: hparams.yaml is written by each `log_hyperparams` (all so far), and a flush every
    `flush_logs_every_n_steps` goes through the logger's own `save()`."""
    from unittest import mock

    import yaml

    logger = CSVLogger(tmp_path, name="exp", version="run_a", flush_logs_every_n_steps=2)
    logger.log_hyperparams({"lr": 0.1, "opt": {"name": "sgd"}})
    hparams_file = tmp_path / "exp" / "run_a" / "hparams.yaml"
    assert yaml.safe_load(hparams_file.read_text()) == {"lr": 0.1, "opt": {"name": "sgd"}}
    logger.log_hyperparams(Namespace(batch_size=32))
    assert yaml.safe_load(hparams_file.read_text()) == {"lr": 0.1, "opt": {"name": "sgd"}, "batch_size": 32}
    with mock.patch.object(logger, "save", wraps=logger.save) as save:
        logger.log_metrics({"a": 1.0}, step=0)
        assert save.call_count == 0
        logger.log_metrics({"a": 2.0}, step=1)
        assert save.call_count == 1
    assert (tmp_path / "exp" / "run_a" / "metrics.csv").read_text().splitlines() == ["a,step", "1.0,0", "2.0,1"]


def test_csv_warns_before_overwriting_a_used_version(tmp_path):
    """The old metrics.csv goes as soon as the experiment starts (as in Lightning), so a run that logs nothing
    leaves no metrics of another run beside its own hparams.yaml."""
    first = CSVLogger(tmp_path, version=0)
    first.log_metrics({"old": 1.0}, step=0)
    first.finalize("success")
    second = CSVLogger(tmp_path, version=0)
    with pytest.warns(UserWarning, match="exists and is not empty. Its metrics.csv is deleted now"):
        second.log_hyperparams({"lr": 0.1})
    assert sorted(os.listdir(second.log_dir)) == ["hparams.yaml"]
    second.log_metrics({"new": 2.0}, step=0)
    second.finalize("success")
    assert read_csv(os.path.join(second.log_dir, "metrics.csv")) == (["new", "step"], [{"new": "2.0", "step": "0"}])


def test_csv_bad_flush_interval():
    with pytest.raises(ValueError, match=r"flush_logs_every_n_steps=0.*positive integer"):
        CSVLogger("unused", flush_logs_every_n_steps=0)


# ---------------------------------------------------------------------------------------------- layout, versions


@pytest.mark.parametrize("logger_cls", [CSVLogger, TensorBoardLogger])
def test_versions_increment_and_ignore_other_entries(tmp_path, logger_cls):
    (tmp_path / "lightning_logs" / "version_x").mkdir(parents=True)
    (tmp_path / "lightning_logs" / "version_7").write_text("a file, not a version folder")
    versions = []
    for _ in range(3):
        logger = logger_cls(tmp_path)
        logger.log_metrics({"m": 1.0}, step=0)
        logger.finalize("success")
        versions.append(logger.version)
    assert versions == [0, 1, 2]
    assert sorted(os.listdir(tmp_path / "lightning_logs")) == [
        "version_0", "version_1", "version_2", "version_7", "version_x"
    ]


LAYOUTS = [{}, {"name": "exp"}, {"name": ""}, {"name": None}, {"version": 3}, {"version": "my_run"}]


@pytest.mark.parametrize(
    "cls_name, kwargs",
    [(cls_name, kwargs) for cls_name in ("CSVLogger", "TensorBoardLogger") for kwargs in LAYOUTS]
    + [("TensorBoardLogger", {"name": "exp", "version": "my_run", "sub_dir": "fold_0"})],
)
def test_layout_matches_lightning(tmp_path, cls_name, kwargs):
    pl_loggers = pytest.importorskip("pytorch_lightning.loggers")
    (tmp_path / "lightning_logs" / "version_0").mkdir(parents=True)
    (tmp_path / "exp" / "version_4").mkdir(parents=True)
    ours = getattr(sys.modules["volt.loggers"], cls_name)(tmp_path, **kwargs)
    theirs = getattr(pl_loggers, cls_name)(tmp_path, **kwargs)
    for attribute in ("name", "version", "save_dir", "root_dir", "log_dir"):
        assert getattr(ours, attribute) == getattr(theirs, attribute), attribute


def test_fresh_folders_match_lightning_file_for_file(tmp_path):
    pl_loggers = pytest.importorskip("pytorch_lightning.loggers")
    for root, module in ((tmp_path / "volt", sys.modules["volt.loggers"]), (tmp_path / "pl", pl_loggers)):
        for cls in (module.CSVLogger, module.TensorBoardLogger):
            logger = cls(root / cls.__name__)
            logger.log_hyperparams({"lr": 0.1})
            logger.save()
            logger.log_metrics({"loss": 1.0}, step=0)
            logger.save()
            logger.finalize("success")

    def listing(root):
        return sorted(
            os.path.relpath(os.path.join(path, name), root).split(".out.tfevents.")[0]
            for path, _, files in os.walk(root)
            for name in files
        )

    assert listing(tmp_path / "volt") == listing(tmp_path / "pl")


# ---------------------------------------------------------------------------------------------------- TensorBoard


def test_tensorboard_scalars_read_back(tmp_path):
    logger = TensorBoardLogger(tmp_path, prefix="train")
    for step in range(3):
        logger.log_metrics({"loss": torch.tensor(1.0 / (step + 1)), "lr": 0.5}, step=step)
    logger.log_metrics({"pair": {"a": 1.0, "b": torch.tensor(2.0)}}, step=3)
    logger.finalize("success")

    scalars = read_scalars(logger.log_dir)
    assert scalars["train-loss"] == [(0, 1.0), (1, 0.5), (2, pytest.approx(1 / 3))]
    assert scalars["train-lr"] == [(0, 0.5), (1, 0.5), (2, 0.5)]
    assert read_scalars(os.path.join(logger.log_dir, "train-pair", "a")) == {"train-pair": [(3, 1.0)]}
    assert read_scalars(os.path.join(logger.log_dir, "train-pair", "b")) == {"train-pair": [(3, 2.0)]}


def test_tensorboard_hparams_plugin_and_yaml(tmp_path):
    import yaml

    logger = TensorBoardLogger(tmp_path)
    params = {
        "lr": 0.1,
        "model": {"width": 8, "act": torch.nn.ReLU},
        "args": Namespace(seed=3),
        "flag": True,
        "layers": [1, 2],
        "scale": torch.tensor(2.0),
    }
    logger.log_hyperparams(params)
    logger.log_metrics({"loss": 1.0}, step=1)
    logger.save()

    assert read_scalars(logger.log_dir)["hp_metric"] == [(0, -1.0)]
    assert read_tb_hparams(logger.log_dir) == {
        "lr": 0.1,
        "model/width": 8.0,
        "model/act": "<class 'torch.nn.modules.activation.ReLU'>",
        "args/seed": 3.0,
        "flag": True,
        "layers": "[1, 2]",
        "scale": 2.0,
    }
    saved = yaml.unsafe_load(open(os.path.join(logger.log_dir, "hparams.yaml")))
    assert saved["lr"] == 0.1 and saved["model"]["width"] == 8 and saved["layers"] == [1, 2]
    logger.finalize("success")


def test_tensorboard_hparams_with_metrics_and_without_default(tmp_path):
    logger = TensorBoardLogger(tmp_path, default_hp_metric=False)
    logger.log_hyperparams({"lr": 0.1})  # no metrics and no default: nothing for TensorBoard
    logger.log_hyperparams({"depth": 2}, metrics={"hp/acc": torch.tensor(0.9)}, step=5)
    logger.finalize("success")
    assert read_scalars(logger.log_dir) == {"hp/acc": [(5, pytest.approx(0.9))]}
    assert read_tb_hparams(logger.log_dir) == {"depth": 2.0}


def test_tensorboard_imports_tensorboardx_at_its_first_write(tmp_path):
    """Hyperparameters without metrics (default_hp_metric=False) go to hparams.yaml only, without importing
    tensorboardX (a quarter of a second); with the hp_metric placeholder they are written at once, as in
    Lightning."""
    script = f"""
import os, sys
from volt.loggers import TensorBoardLogger
logger = TensorBoardLogger({str(tmp_path)!r}, name="quiet", default_hp_metric=False)
logger.log_hyperparams({{"lr": 0.1}})
logger.log_graph(None)
logger.save()
assert "tensorboardX" not in sys.modules, "imported too early"
written = [name for _, _, files in os.walk({str(tmp_path)!r}) for name in files]
assert written == ["hparams.yaml"], "wrote more than the hyperparameters before the first metrics"
TensorBoardLogger({str(tmp_path)!r}, name="eager").log_hyperparams({{"lr": 0.1}})
assert "tensorboardX" in sys.modules
assert os.listdir(os.path.join({str(tmp_path)!r}, "eager", "version_0"))[0].startswith("events.out.tfevents.")
"""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr


def test_tensorboard_fit_then_test_in_the_same_second_keeps_both_files(tmp_path):
    logger = TensorBoardLogger(tmp_path)
    logger.log_metrics({"train_loss": 1.0}, step=0)
    logger.finalize("success")
    logger.log_metrics({"test_loss": 2.0}, step=0)  # a new writer: must not overwrite the first event file
    logger.finalize("success")
    scalars = read_scalars(logger.log_dir)
    assert scalars["train_loss"] == [(0, 1.0)] and scalars["test_loss"] == [(0, 2.0)]


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.jit.trace, used by TensorBoard's graph export
def test_tensorboard_log_graph(tmp_path):
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU())
    model.example_input_array = torch.randn(2, 3)
    logger = TensorBoardLogger(tmp_path, log_graph=True)
    with pytest.warns(UserWarning, match=r"Could not log computational graph to TensorBoard: The "
                                         r"`model.example_input_array` .* was not given"):
        logger.log_graph(torch.nn.Linear(3, 4))
    with pytest.warns(UserWarning, match="Could not log computational graph to TensorBoard: .* can't be traced"):
        logger.log_graph(model, {"x": 1})
    logger.log_graph(model)
    from volt.demos.boring_classes import BoringModel

    unattached = BoringModel()  # no Trainer: its `trainer` raises outside tracing
    logger.log_graph(unattached, torch.randn(2, 32))
    with pytest.raises(RuntimeError, match="not attached to a `Trainer`"):
        unattached.trainer
    logger.finalize("success")

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(logger.log_dir)
    accumulator.Reload()
    assert accumulator.Tags()["graph"]


def test_tensorboard_rejects_non_numeric_metric(tmp_path):
    logger = TensorBoardLogger(tmp_path)
    with pytest.raises(ValueError, match=r"cannot log 'name'='abc'.*a number, a one-element tensor"):
        logger.log_metrics({"name": "abc"}, step=0)
    with pytest.raises(ValueError, match=r"cannot log 'vec'"):
        logger.log_metrics({"vec": torch.ones(3)}, step=0)


@pytest.mark.parametrize("logger_cls", [CSVLogger, TensorBoardLogger])
def test_log_hyperparams_rejects_other_types(tmp_path, logger_cls):
    with pytest.raises(TypeError, match=r"expects a dict or an argparse.Namespace, got list"):
        logger_cls(tmp_path).log_hyperparams([0.1, 32])


def test_tensorboard_logger_pickles_without_its_writer(tmp_path):
    logger = TensorBoardLogger(tmp_path)
    logger.log_metrics({"a": 1.0}, step=0)
    clone = pickle.loads(pickle.dumps(logger))
    assert clone.log_dir == logger.log_dir and clone._experiment is None
    logger.finalize("success")


@pytest.mark.parametrize("logger_cls", [CSVLogger, TensorBoardLogger])
def test_other_ranks_write_nothing(tmp_path, logger_cls, monkeypatch):
    monkeypatch.setattr(rank_zero_only, "rank", 1)
    logger = logger_cls(tmp_path)
    logger.log_hyperparams({"lr": 0.1})
    logger.log_metrics({"a": 1.0}, step=0)
    logger.experiment.anything(1, 2)  # a do-nothing stand-in on ranks > 0
    logger.save()
    logger.finalize("success")
    assert not any(files for _, _, files in os.walk(tmp_path))


def test_hparams_yaml_skips_values_yaml_cannot_hold(tmp_path):
    logger = CSVLogger(tmp_path)
    with pytest.warns(UserWarning, match="Skipping 'lock' parameter"):
        logger.log_hyperparams({"lr": 0.1, "lock": threading.Lock()})
    assert open(os.path.join(logger.log_dir, "hparams.yaml")).read() == "lr: 0.1\n"


def test_hparams_yaml_with_a_class_reads_back_here_and_in_lightning(tmp_path, quiet_lightning):
    """PyYAML writes a class as `!!python/name:`; volt reads it back (from modules already imported, running no code)
    as Lightning does, and each reads the other's file."""
    from volt.core.saving import load_hparams_from_yaml

    hparams = {"lr": 0.1, "layer": torch.nn.BatchNorm1d, "nested": {"a": [1, 2]}}
    volt_logger = CSVLogger(tmp_path / "volt")
    volt_logger.log_hyperparams(hparams)
    lightning_logger = quiet_lightning.loggers.CSVLogger(tmp_path / "pl")
    lightning_logger.log_hyperparams(hparams)
    for log_dir in (volt_logger.log_dir, lightning_logger.log_dir):
        path = os.path.join(log_dir, "hparams.yaml")
        for load in (load_hparams_from_yaml, quiet_lightning.core.saving.load_hparams_from_yaml):
            assert dict(load(path)) == hparams
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("layer: !!python/name:not_imported_package.Layer\n")
    with pytest.raises(Exception, match="'not_imported_package.Layer' names an object in a module that is not"):
        load_hparams_from_yaml(unknown)


# --------------------------------------------------------------------------------- resume: the logger state pair


def test_csv_state_dict_resumes_the_log_at_the_checkpoint_step(tmp_path):
    first = CSVLogger(tmp_path)
    for step in range(4):
        first.log_metrics({"loss": float(step)}, step=step)
    state = first.state_dict()  # a checkpoint taken after step 3
    assert state == {"step": 3, "rows": [{"loss": 3.0}]}
    first.log_metrics({"loss": 4.0}, step=4)
    first.log_metrics({"loss": 5.0}, step=5)
    first.log_metrics({"val_loss": 9.0}, step=5)
    first.finalize("failed")  # killed after step 5

    resumed = CSVLogger(tmp_path, version=first.version)
    resumed.load_state_dict(state)
    for step in range(4, 6):
        resumed.log_metrics({"loss": step + 0.5}, step=step)
    resumed.finalize("success")

    header, rows = read_csv(os.path.join(first.log_dir, "metrics.csv"))
    assert header == ["loss", "step", "val_loss"]
    assert [(row["step"], row["loss"], row["val_loss"]) for row in rows] == [
        ("0", "0.0", ""), ("1", "1.0", ""), ("2", "2.0", ""), ("3", "3.0", ""), ("4", "4.5", ""), ("5", "5.5", "")
    ]


def test_csv_drop_from_drops_buffered_rows(tmp_path):
    logger = CSVLogger(tmp_path)
    for step in range(4):
        logger.log_metrics({"loss": float(step)}, step=step)
    logger.drop_from(2)
    logger.finalize("success")
    assert [row["step"] for row in read_csv(os.path.join(logger.log_dir, "metrics.csv"))[1]] == ["0", "1"]


def test_tensorboard_state_dict_hides_replayed_steps(tmp_path):
    first = TensorBoardLogger(tmp_path)
    first.log_hyperparams({"lr": 0.1})
    for step in range(6):
        first.log_metrics({"loss": float(step)}, step=step)
        if step == 3:
            state = first.state_dict()
    first.finalize("failed")

    resumed = TensorBoardLogger(tmp_path, version=first.version)
    resumed.load_state_dict(state)
    resumed.log_hyperparams({"lr": 0.1})
    for step in range(4, 6):
        resumed.log_metrics({"loss": step + 0.5}, step=step)
    resumed.finalize("success")

    assert read_scalars(first.log_dir)["loss"] == [(0, 0.0), (1, 1.0), (2, 2.0), (3, 3.0), (4, 4.5), (5, 5.5)]


def test_tensorboard_drop_from_with_an_open_writer(tmp_path):
    logger = TensorBoardLogger(tmp_path)
    for step in range(4):
        logger.log_metrics({"loss": float(step)}, step=step)
    logger.drop_from(2)
    logger.log_metrics({"loss": 20.0}, step=2)
    logger.finalize("success")
    assert read_scalars(logger.log_dir)["loss"] == [(0, 0.0), (1, 1.0), (2, 20.0)]


def test_logger_base_class_resume_pair_defaults_to_nothing():
    class Minimal(Logger):
        name, version = "m", 0

        def log_metrics(self, metrics, step=None):
            pass

        def log_hyperparams(self, params, *args, **kwargs):
            pass

    logger = Minimal()
    assert logger.state_dict() == {}
    logger.load_state_dict({"anything": 1})  # a logger that cannot rewrite its history keeps it


# ------------------------------------------------------------------------------------------ with the Trainer


def make_module_class(pl):
    """The same tiny regression module for volt and for Lightning (the oracle)."""

    class TinyRegression(pl.LightningModule):
        def __init__(self, lr=0.1):
            super().__init__()
            self.save_hyperparameters()
            self.layer = torch.nn.Linear(2, 1)

        def training_step(self, batch, batch_idx):
            loss = self.layer(batch[0]).pow(2).mean()
            self.log("train_loss", loss)
            return loss

        def validation_step(self, batch, batch_idx):
            self.log("val_loss", self.layer(batch[0]).pow(2).mean())

        def test_step(self, batch, batch_idx):
            self.log("test_loss", self.layer(batch[0]).pow(2).mean())

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)

    return TinyRegression


def fit_tiny(pl, logger, root):
    from torch.utils.data import DataLoader, TensorDataset

    torch.manual_seed(0)
    data = TensorDataset(torch.randn(32, 2))
    model = make_module_class(pl)()
    trainer = pl.Trainer(
        default_root_dir=root, logger=logger, max_epochs=2, log_every_n_steps=3, enable_progress_bar=False,
        enable_model_summary=False, enable_checkpointing=False,
    )
    trainer.fit(model, DataLoader(data, batch_size=4), DataLoader(data, batch_size=4))
    return trainer, DataLoader(data, batch_size=4)


def test_fit_writes_csv_like_lightning(tmp_path):
    import volt

    fit_tiny(volt, CSVLogger(tmp_path / "volt"), tmp_path)
    header, rows = read_csv(tmp_path / "volt" / "lightning_logs" / "version_0" / "metrics.csv")
    assert header == ["epoch", "step", "train_loss", "val_loss"]
    train_rows = [(row["epoch"], row["step"]) for row in rows if row["train_loss"]]
    assert train_rows == [("0", "2"), ("0", "5"), ("1", "8"), ("1", "11"), ("1", "14")]  # every 3rd optimizer step
    assert [(row["epoch"], row["step"]) for row in rows if row["val_loss"]] == [("0", "7"), ("1", "15")]
    assert open(tmp_path / "volt" / "lightning_logs" / "version_0" / "hparams.yaml").read() == "lr: 0.1\n"

    pl = pytest.importorskip("pytorch_lightning")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit_tiny(pl, pl.loggers.CSVLogger(tmp_path / "pl"), tmp_path)
    _, oracle_rows = read_csv(tmp_path / "pl" / "lightning_logs" / "version_0" / "metrics.csv")
    assert len(rows) == len(oracle_rows)
    for ours, theirs in zip(rows, oracle_rows):
        assert ours.keys() == theirs.keys()
        for key in ours:
            assert (ours[key] == theirs[key]) or float(ours[key]) == pytest.approx(float(theirs[key]), rel=1e-5)


def test_csv_logger_on_an_fsspec_url_as_lightning(tmp_path, monkeypatch):
    """`CSVLogger("memory://...")` writes metrics.csv and hparams.yaml into fsspec's memory filesystem, finds the
    versions already there, and resumes there; nothing lands in a local folder (it wrote to `./memory:/...`)."""
    fsspec = pytest.importorskip("fsspec")
    import volt

    monkeypatch.chdir(tmp_path)
    memory = fsspec.filesystem("memory")
    files = {}
    for name, pl in (("volt", volt), ("pl", pytest.importorskip("pytorch_lightning"))):
        root = f"memory://csv-{name}"
        loggers = [pl.loggers.CSVLogger(root) for _ in range(2)]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for logger in loggers:
                fit_tiny(pl, logger, tmp_path / name)
        assert [logger.log_dir for logger in loggers] == [f"{root}/lightning_logs/version_{v}" for v in (0, 1)]
        files[name] = {path.split("/", 2)[2]: memory.cat(path) for path in memory.find(f"/csv-{name}")}
    assert sorted(files["volt"]) == sorted(files["pl"]) == [
        f"lightning_logs/version_{v}/{f}" for v in (0, 1) for f in ("hparams.yaml", "metrics.csv")]
    assert files["volt"]["lightning_logs/version_1/hparams.yaml"] == b"lr: 0.1\n"
    header = files["volt"]["lightning_logs/version_1/metrics.csv"].decode().splitlines()[0]
    assert header == files["pl"]["lightning_logs/version_1/metrics.csv"].decode().splitlines()[0]
    assert os.listdir(tmp_path) == []  # no local "memory:" folder

    resumed = CSVLogger("memory://csv-volt", version=1)  # the resume pair cuts the remote file too
    resumed.drop_from(5)
    _, rows = read_csv_text(memory.cat("/csv-volt/lightning_logs/version_1/metrics.csv").decode())
    assert rows and max(int(row["step"]) for row in rows) < 5
    assert CSVLogger("file://" + str(tmp_path / "local")).log_dir == str(tmp_path / "local" / "lightning_logs" /
                                                                         "version_0")


def read_csv_text(text):
    import io

    reader = csv.DictReader(io.StringIO(text))
    return reader.fieldnames, list(reader)


def test_fit_then_test_with_tensorboard(tmp_path):
    import volt

    trainer, test_loader = fit_tiny(volt, None, tmp_path)  # the default logger: TensorBoard
    trainer.test(trainer.lightning_module, test_loader, verbose=False)
    log_dir = tmp_path / "lightning_logs" / "version_0"
    files = sorted(name.split(".out.tfevents.")[0] for name in os.listdir(log_dir))
    assert files == ["events", "events", "hparams.yaml"]  # fit's event file, then test's
    scalars = read_scalars(str(log_dir))
    assert [step for step, _ in scalars["train_loss"]] == [2, 5, 8, 11, 14]
    assert [step for step, _ in scalars["val_loss"]] == [7, 15]
    assert len(scalars["test_loss"]) == 1 and scalars["hp_metric"][0] == (0, -1.0)


def test_module_and_datamodule_hparams_merge_unless_they_differ(tmp_path):
    """As Lightning: a name both save is logged once when the values are equal; a different value, a tensor or an
    object (compared by identity, and each side holds its own copy) raises a RuntimeError naming the keys, which may
    be of any type."""
    import volt
    from helpers import BoringModel, MemoryLogger, loader, trainer

    class Model(BoringModel):
        def __init__(self, hparams):
            super().__init__()
            self.save_hyperparameters(hparams)

    class Data(volt.LightningDataModule):
        def __init__(self, hparams):
            super().__init__()
            self.save_hyperparameters(hparams)

        def train_dataloader(self):
            return loader()

    shared = {1: 1, "lr": 0.1, "name": "x"}
    logger = MemoryLogger()
    trainer(tmp_path, logger=logger, max_steps=1, limit_val_batches=0).fit(Model(shared), Data(dict(shared)))
    assert logger.hparams == shared
    for clash in ({1: 0}, {"t": torch.tensor([4, 5])}, {"obj": object()}):
        with pytest.raises(RuntimeError, match=rf"Error while merging hparams: the keys \[{list(clash)[0]!r}\] are "
                                               r"present in both.*different values"):
            trainer(tmp_path, logger=MemoryLogger(), max_steps=1).fit(Model({**shared, **clash, 1: 1}),
                                                                      Data({**shared, **clash}))


def test_tensorboard_save_writes_the_hyperparameters_logged_so_far(tmp_path, quiet_lightning):
    """As Lightning: `save()` before any metrics writes hparams.yaml with every call's hyperparameters merged."""
    from volt.core.saving import load_hparams_from_yaml

    saved = {}
    for name, logger_class in (("volt", TensorBoardLogger), ("lightning", quiet_lightning.loggers.TensorBoardLogger)):
        logger = logger_class(tmp_path / name, name="lightning_logs")
        logger.log_hyperparams(Namespace(some_str="a_str", an_int=1))
        logger.log_hyperparams({"batch_size": 32})
        logger.save()
        saved[name] = load_hparams_from_yaml(os.path.join(logger.log_dir, "hparams.yaml"))
    assert saved["volt"] == saved["lightning"] == {"some_str": "a_str", "an_int": 1, "batch_size": 32}


def test_tensorboard_logger_on_an_fsspec_url_as_lightning(tmp_path, monkeypatch):
    """The default logger under `default_root_dir="memory://..."` writes its event file there, as Lightning's does
    (it wrote to a local `./memory:/...` folder), so does its tensorboardX writer (`logger.experiment`), TensorBoard
    reads the same scalars from both, and `ckpt_path="hpc"` finds the newest `hpc_ckpt_<N>.ckpt` there."""
    fsspec = pytest.importorskip("fsspec")
    pl = pytest.importorskip("pytorch_lightning")
    import volt

    monkeypatch.chdir(tmp_path)
    memory = fsspec.filesystem("memory")
    scalars, loggers = {}, {}
    for name, framework in (("volt", volt), ("pl", pl)):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            trainer, _ = fit_tiny(framework, None, f"memory://tb-{name}")
        loggers[name] = trainer.logger
        files = [path.rsplit("/", 1)[1] for path in memory.find(f"/tb-{name}/lightning_logs/version_0")]
        assert sorted(file.split(".")[0] for file in files) == ["events", "hparams"]
        scalars[name] = read_scalars(trainer.logger.log_dir)
    assert scalars["volt"].keys() == scalars["pl"].keys() and scalars["volt"]["train_loss"]
    writer = loggers["volt"].experiment  # tensorboardX's writer, for images and histograms: there too
    writer.add_histogram("weights", torch.arange(10.0), 0)
    writer.close()  # fsspec shows a memory:// or object-store file once it is closed
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(loggers["volt"].log_dir)
    accumulator.Reload()
    assert accumulator.Tags()["histograms"] == ["weights"]
    assert os.listdir(tmp_path) == []  # no local "memory:" folder

    for number in (0, 33, 3):
        trainer.save_checkpoint(f"memory://tb-volt/hpc_ckpt_{number}.ckpt")
    resumed = volt.Trainer(default_root_dir="memory://tb-volt", max_epochs=3, logger=False, enable_progress_bar=False,
                           enable_model_summary=False, enable_checkpointing=False)
    resumed.fit(make_module_class(volt)(), trainer.train_dataloader, ckpt_path="hpc")
    assert resumed.ckpt_path == "memory://tb-volt/hpc_ckpt_33.ckpt"
    memory.rm(["/tb-volt", "/tb-pl"], recursive=True)
