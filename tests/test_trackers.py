"""MLFlowLogger and WandbLogger on their real client libraries, read back through the trackers' own readers.

MLflow runs against a local file store and a SQLite store and is read back with `MlflowClient`. W&B runs offline
(WANDB_MODE=offline, files under tmp_path); wandb has no Python reader for its run files (`.wandb`, a LevelDB-style
log of protobuf records), so `wandb_records` reads them with wandb's own protobuf classes.
"""
import io
import json
import os
import struct
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import torch

import volt
from volt.callbacks import ModelCheckpoint
from volt.strategies import SingleDeviceStrategy

from helpers import BoringModel, MemoryLogger, boring_model_class

pytest.importorskip("mlflow")
pytest.importorskip("wandb")

SRC = Path(__file__).resolve().parents[1] / "src"
# HparamsModel's class-valued hyperparameter (how the trackers name callables) is stored by its repr in checkpoints
pytestmark = pytest.mark.filterwarnings("ignore:hparams\\['activation'\\]")


class HparamsModel(BoringModel):
    """BoringModel with nested hyperparameters and a validation metric to monitor."""

    def __init__(self, lr: float = 0.1, optim: dict = None, activation=torch.nn.ReLU):
        super().__init__(lr=lr)
        self.save_hyperparameters()


def fit(tmp_path, loggers, max_epochs=2, callbacks=None, **kwargs):
    trainer = volt.Trainer(default_root_dir=tmp_path, logger=loggers, max_epochs=max_epochs, log_every_n_steps=1,
                           enable_progress_bar=False, enable_model_summary=False, callbacks=callbacks, **kwargs)
    trainer.fit(HparamsModel(optim={"name": "sgd", "betas": {"b1": 0.9}}))
    return trainer


def history_by_key(memory):
    """{key: [(step, value), ...]} of what the Trainer sent a MemoryLogger."""
    history = {}
    for step, row in memory.metrics:
        for key, value in row.items():
            history.setdefault(key, []).append((step, pytest.approx(float(value))))
    return history


# --------------------------------------------------------------------------------------------------------- MLflow

@pytest.fixture(autouse=True)
def mlflow_env(monkeypatch, tmp_path):
    """Loggers call `mlflow.set_tracking_uri` (as Lightning's does), which exports MLFLOW_TRACKING_URI: removed
    after each test, so that later tests and their subprocesses do not inherit it. File stores allowed (mlflow 3
    refuses them unless asked). Run in tmp_path: a database store puts artifacts in ./mlruns."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "")
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")


@pytest.fixture(scope="module")
def sqlite_uri(tmp_path_factory):
    """One SQLite store for the module: MLflow spends seconds creating a database's tables."""
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow')}/mlflow.db"


@pytest.fixture(params=["file", "sqlite"])
def mlflow_store(request, tmp_path, sqlite_uri):
    """Keyword arguments for MLFlowLogger: a file store in tmp_path, or the shared SQLite store."""
    if request.param == "file":
        return {"save_dir": str(tmp_path / "mlruns")}
    return {"tracking_uri": sqlite_uri}


def mlflow_history(client, run_id):
    run = client.get_run(run_id)
    return {key: [(m.step, m.value) for m in sorted(client.get_metric_history(run_id, key), key=lambda m: m.step)]
            for key in run.data.metrics}


def test_mlflow_fit_metrics_params_and_status(tmp_path, mlflow_store, request):
    from volt.loggers import MLFlowLogger

    logger = MLFlowLogger(experiment_name=request.node.name, run_name="first", tags={"team": "a"}, **mlflow_store)
    memory = MemoryLogger()
    fit(tmp_path, [logger, memory])
    client = logger.experiment
    run = client.get_run(logger.run_id)
    assert run.info.status == "FINISHED" and run.data.tags["mlflow.runName"] == "first"
    assert run.data.tags["team"] == "a"
    assert run.data.params == {"lr": "0.1", "optim/name": "sgd", "optim/betas/b1": "0.9",
                               "activation": str(torch.nn.ReLU)}
    assert mlflow_history(client, logger.run_id) == history_by_key(memory)
    assert client.get_experiment(logger.experiment_id).name == request.node.name
    assert (logger.name, logger.version) == (logger.experiment_id, logger.run_id)


def artifact_files(client, run_id):
    folders = client.list_artifacts(run_id)
    return sorted(file.path for folder in folders for file in client.list_artifacts(run_id, folder.path))


@pytest.mark.parametrize("log_model", ["all", True])
def test_mlflow_uploads_checkpoints(tmp_path, mlflow_store, log_model, request):
    """"all": each checkpoint as it is saved (the epoch-0 one too, though deleted later); True: the files at the end."""
    import yaml
    from volt.loggers import MLFlowLogger

    logger = MLFlowLogger(experiment_name=request.node.name, log_model=log_model, **mlflow_store)
    checkpoint = ModelCheckpoint(monitor="step", mode="max", save_top_k=1)  # each save replaces the previous
    fit(tmp_path, logger, callbacks=[checkpoint])
    client = logger.experiment
    best = Path(checkpoint.best_model_path)
    names = ["epoch=0-step=4", "epoch=1-step=8"] if log_model == "all" else [best.stem]
    assert artifact_files(client, logger.run_id) == sorted(
        f"{name}/{file}" for name in names for file in ("aliases.txt", f"{name}.ckpt", "metadata.yaml"))
    folder = Path(client.download_artifacts(logger.run_id, best.stem, str(tmp_path / "download")))
    assert (folder / best.name).read_bytes() == best.read_bytes()
    metadata = yaml.safe_load((folder / "metadata.yaml").read_text())
    assert metadata["score"] == pytest.approx(checkpoint.best_model_score.item())
    assert metadata["ModelCheckpoint"]["monitor"] == "step"
    assert (folder / "aliases.txt").read_text() == "['latest', 'best']"


def test_mlflow_checkpoint_folder_matches_lightning(tmp_path, mlflow_store, quiet_lightning, request):
    """`<save_dir>/<experiment id>/<run id>/checkpoints` for a file store, `<default_root_dir>/...` otherwise."""
    from pytorch_lightning.loggers import MLFlowLogger as LightningMLFlowLogger
    from volt.loggers import MLFlowLogger

    folders = []
    for logger_class, framework in ((MLFlowLogger, volt), (LightningMLFlowLogger, quiet_lightning)):
        logger = logger_class(experiment_name=request.node.name, **mlflow_store)
        trainer = framework.Trainer(default_root_dir=tmp_path / framework.__name__, logger=logger, max_steps=1,
                                    limit_val_batches=0, enable_progress_bar=False, enable_model_summary=False)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            trainer.fit(BoringModel() if framework is volt else boring_model_class(quiet_lightning)())
        relative = os.path.relpath(trainer.checkpoint_callback.dirpath, logger.save_dir or trainer.default_root_dir)
        folders.append(relative.replace(logger.run_id, "<run>"))
        assert os.listdir(trainer.checkpoint_callback.dirpath) == ["epoch=0-step=1.ckpt"]
    assert folders[0] == folders[1]


def test_mlflow_existing_run_id_and_prefix(tmp_path, mlflow_store, request):
    from volt.loggers import MLFlowLogger

    first = MLFlowLogger(experiment_name=request.node.name, **mlflow_store)
    first.log_metrics({"a": 1.0}, step=0)
    first.finalize("success")
    again = MLFlowLogger(run_id=first.run_id, prefix="p", **mlflow_store)
    again.log_metrics({"a": 2.0, "bad#key": 3.0, "text": "skipped"}, step=1)
    with pytest.warns(RuntimeWarning, match="Replacing p-bad#key with p-badkey"):
        again.log_metrics({"bad#key": 3.0}, step=2)
    with pytest.raises(ValueError, match=r"cannot log 'p-nested'=\{'x': 1\}: log a number or a one-element tensor"):
        again.log_metrics({"nested": {"x": 1}}, step=3)
    assert again.experiment_id == first.experiment_id
    assert mlflow_history(again.experiment, first.run_id) == {"a": [(0, 1.0)], "p-a": [(1, 2.0)],
                                                               "p-badkey": [(1, 3.0), (2, 3.0)]}


def test_mlflow_failed_fit_marks_the_run_failed(tmp_path, mlflow_store, request):
    from volt.loggers import MLFlowLogger

    class Failing(BoringModel):
        def training_step(self, batch, batch_idx):
            if batch_idx == 2:
                raise RuntimeError("planned")
            return super().training_step(batch, batch_idx)

    logger = MLFlowLogger(experiment_name=request.node.name, **mlflow_store)
    trainer = volt.Trainer(default_root_dir=tmp_path, logger=logger, max_epochs=1, log_every_n_steps=1,
                           enable_progress_bar=False, enable_model_summary=False)
    with pytest.raises(RuntimeError, match="planned"):
        trainer.fit(Failing())
    run = logger.experiment.get_run(logger.run_id)
    assert run.info.status == "FAILED"
    assert [m.step for m in logger.experiment.get_metric_history(logger.run_id, "train_loss")] == [0, 1]


def test_mlflow_default_store_is_not_an_earlier_loggers(tmp_path, sqlite_uri, request):
    """Starting a run exports MLFLOW_TRACKING_URI (mlflow.set_tracking_uri); a logger made later still defaults to
    `file:./mlruns`, as in Lightning."""
    from volt.loggers import MLFlowLogger

    import mlflow

    mlflow.set_tracking_uri("file:./elsewhere")  # as a first logger's run start or the user's own code does
    _ = MLFlowLogger(experiment_name=request.node.name, tracking_uri=sqlite_uri).experiment
    assert os.environ["MLFLOW_TRACKING_URI"] == sqlite_uri
    assert MLFlowLogger().save_dir == "./mlruns"


def test_mlflow_bad_log_model():
    from volt.loggers import MLFlowLogger

    with pytest.raises(ValueError, match=r"log_model='best'\): expected True, False or 'all'"):
        MLFlowLogger(log_model="best")


def test_mlflow_file_store_refused_by_mlflow_says_how_to_fix(tmp_path, monkeypatch):
    """mlflow 3 refuses `file:` stores unless asked; its own error names the fix (a database URI)."""
    import mlflow
    from volt.loggers import MLFlowLogger

    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE")
    with pytest.raises(mlflow.exceptions.MlflowException, match="sqlite:///mlflow.db"):
        MLFlowLogger(save_dir=str(tmp_path)).experiment


def test_mlflow_remote_store_is_not_rewritten():
    """No MLflow call deletes points: behind a tracking server volt leaves them (and warns, see load_state_dict)."""
    from volt.loggers.mlflow import _delete_points_from

    assert _delete_points_from("http://127.0.0.1:5000", "0", "abc", 3) is False
    assert _delete_points_from("databricks", "0", "abc", 3) is False


# ------------------------------------------------------------------------------------------------------------ W&B

@pytest.fixture
def wandb_dir(tmp_path, monkeypatch):
    """Offline W&B with its files under tmp_path; the run is finished after the test."""
    import wandb

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("WANDB_PROJECT", raising=False)
    yield tmp_path
    if wandb.run is not None:
        wandb.finish()


def wandb_records(path):
    """The protobuf records of a `.wandb` run file: a header, then LevelDB-log framing (32 KiB blocks; each
    chunk: checksum, length, type 1 full / 2 first / 3 middle / 4 last)."""
    from wandb.proto import wandb_internal_pb2

    data = Path(path).read_bytes()
    assert data[:4] == b":W&B"
    position, chunks = 7, []
    while position + 7 <= len(data):
        left_in_block = 32768 - position % 32768
        if left_in_block < 7:
            position += left_in_block
            continue
        _, length, kind = struct.unpack("<IHB", data[position:position + 7])
        if kind == 0:  # zero padding to the end of the block
            position += left_in_block
            continue
        chunks.append(data[position + 7:position + 7 + length])
        position += 7 + length
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(b"".join(chunks))
            chunks = []
            yield record


def finish_wandb(root):
    """`wandb.finish()`, then wait for W&B's service process to write the run file's closing record (it writes
    the file on its own, after `finish` returns)."""
    import wandb

    wandb.finish()
    newest = wandb_run_files(root)[-1]
    deadline = time.monotonic() + 20
    while not any(record.WhichOneof("record_type") == "exit" for record in wandb_records(newest)):
        assert time.monotonic() < deadline, f"W&B never finished writing {newest}"
        time.sleep(0.05)


def wandb_run_files(root):
    """Every offline run file under `root`, oldest first."""
    return sorted(Path(root).glob("wandb/offline-run-*/run-*.wandb"), key=lambda p: p.parent.name)


def wandb_history(root, run_id):
    """The run's history rows as W&B would hold them after `wandb sync`: each run file in start order, a rewind
    (`resume_from`, recorded as the run's branch point) keeping the rows up to its `_step` (wandb continues the
    rewound run's history right after it)."""
    rows = []
    for path in wandb_run_files(root):
        for record in wandb_records(path):
            kind = record.WhichOneof("record_type")
            if kind == "run":
                assert record.run.run_id == run_id
                if record.run.branch_point.run == run_id:
                    rows = [row for row in rows if row["_step"] <= record.run.branch_point.value]
            elif kind == "history":
                rows.append(nested_items(record.history.item))
    return rows


def nested_items(items):
    """History items as a dict; an item with a nested key (a media object's fields) goes into nested dicts."""
    row = {}
    for item in items:
        path = [item.key] if item.key else list(item.nested_key)
        target = row
        for part in path[:-1]:
            target = target.setdefault(part, {})
        target[path[-1]] = json.loads(item.value_json)
    return row


def wandb_config(root):
    config = {}
    for path in wandb_run_files(root):
        for record in wandb_records(path):
            if record.WhichOneof("record_type") == "config":
                config.update({item.key: json.loads(item.value_json) for item in record.config.update})
    return config


def wandb_artifacts(root):
    """(name, aliases, metadata, {file name in the artifact: local path}, digest) of each logged artifact."""
    found = []
    for path in wandb_run_files(root):
        for record in wandb_records(path):
            if record.WhichOneof("record_type") == "artifact":
                artifact = record.artifact
                files = {entry.path: entry.local_path for entry in artifact.manifest.contents}
                found.append((artifact.name, list(artifact.aliases), json.loads(artifact.metadata), files,
                              artifact.digest))
    return found


def test_wandb_fit_offline_history_config_and_placement(tmp_path, wandb_dir):
    from volt.loggers import WandbLogger

    logger = WandbLogger(project="proj", name="first", save_dir=tmp_path)
    memory = MemoryLogger()
    trainer = fit(tmp_path, [logger, memory])
    run_id = logger.version
    assert logger.experiment.id == run_id and logger.name == "proj" and logger.save_dir == str(tmp_path)
    assert trainer.checkpoint_callback.dirpath == str(tmp_path / "proj" / run_id / "checkpoints")
    finish_wandb(tmp_path)
    rows = wandb_history(tmp_path, run_id)
    assert [row["_step"] for row in rows] == list(range(len(memory.metrics)))
    for row, (step, metrics) in zip(rows, memory.metrics):
        assert row["trainer/global_step"] == step
        assert {key: row[key] for key in metrics} == pytest.approx(metrics)
    assert wandb_config(tmp_path) == {"lr": 0.1, "optim": {"name": "sgd", "betas": {"b1": 0.9}},
                                      "activation": "ReLU"}


def test_wandb_checkpoint_folder_matches_lightning(tmp_path, wandb_dir, quiet_lightning):
    """Lightning starts the run before `setup`; volt only picks its id: both end in `<project>/<run id>/checkpoints`."""
    import wandb
    from pytorch_lightning.loggers import WandbLogger as LightningWandbLogger
    from volt.loggers import WandbLogger

    for logger_class, framework in ((WandbLogger, volt), (LightningWandbLogger, quiet_lightning)):
        logger = logger_class(project="proj", save_dir=tmp_path / framework.__name__)
        trainer = framework.Trainer(default_root_dir=tmp_path, logger=logger, max_steps=1, limit_val_batches=0,
                                    enable_progress_bar=False, enable_model_summary=False)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            trainer.fit(BoringModel() if framework is volt else boring_model_class(quiet_lightning)())
        run_id = logger.experiment.id
        wandb.finish()
        assert trainer.checkpoint_callback.dirpath == os.path.join(logger.save_dir, "proj", run_id, "checkpoints")
        assert os.listdir(trainer.checkpoint_callback.dirpath) == ["epoch=0-step=1.ckpt"]


@pytest.mark.parametrize("log_model", ["all", True])
def test_wandb_uploads_checkpoints_as_model_artifacts(tmp_path, wandb_dir, log_model):
    from volt.loggers import WandbLogger

    logger = WandbLogger(project="proj", save_dir=tmp_path, log_model=log_model)
    checkpoint = ModelCheckpoint(monitor="step", mode="max", save_top_k=1)  # each save replaces the previous
    fit(tmp_path, logger, callbacks=[checkpoint])
    run_id = logger.version
    finish_wandb(tmp_path)
    artifacts = wandb_artifacts(tmp_path)
    expected = ["epoch=0-step=4.ckpt", "epoch=1-step=8.ckpt"] if log_model == "all" else \
        [os.path.basename(checkpoint.best_model_path)]
    assert [metadata["original_filename"] for _, _, metadata, _, _ in artifacts] == expected
    name, aliases, metadata, files, _ = artifacts[-1]
    assert name == f"model-{run_id}" and list(files) == ["model.ckpt"]
    assert sorted(aliases) == ["best", "latest"]
    assert metadata["score"] == pytest.approx(checkpoint.best_model_score.item())
    assert metadata["ModelCheckpoint"]["monitor"] == "step"
    assert Path(files["model.ckpt"]).read_bytes() == Path(checkpoint.best_model_path).read_bytes()


def test_wandb_media_and_tables(tmp_path, wandb_dir):
    from volt.loggers import WandbLogger

    logger = WandbLogger(project="proj", save_dir=tmp_path)
    logger.log_table("table", columns=["a", "b"], data=[[1, "x"], [2, "y"]], step=3)
    logger.log_image("pics", [torch.zeros(3, 4, 4), torch.ones(3, 4, 4)], step=4, caption=["zero", "one"])
    with pytest.raises(ValueError, match="Expected 2 items but only found 1 for caption"):
        logger.log_image("pics", [torch.zeros(3, 4, 4), torch.ones(3, 4, 4)], caption=["zero"])
    with pytest.raises(TypeError, match='Expected a list as "images"'):
        logger.log_image("pics", torch.zeros(3, 4, 4))
    run_id = logger.version
    finish_wandb(tmp_path)
    rows = wandb_history(tmp_path, run_id)
    assert [row["trainer/global_step"] for row in rows] == [3, 4]
    assert rows[0]["table"]["_type"] == "table-file" and rows[0]["table"]["nrows"] == 2
    assert rows[1]["pics"]["_type"] == "images/separated" and rows[1]["pics"]["count"] == 2
    assert rows[1]["pics"]["captions"] == ["zero", "one"]


def test_wandb_offline_with_log_model_is_refused():
    from volt.loggers import WandbLogger
    from volt.utilities.exceptions import MisconfigurationException

    with pytest.raises(MisconfigurationException, match="cannot be uploaded in offline mode"):
        WandbLogger(offline=True, log_model=True)


def test_wandb_rewind_refused_continues_the_run_with_a_warning(tmp_path, wandb_dir, monkeypatch):
    """Rewind is a server-side preview feature: where W&B refuses it, the run continues without it, and says so."""
    import wandb
    from volt.loggers import WandbLogger

    first = WandbLogger(project="proj", save_dir=tmp_path)
    first.log_metrics({"a": 1.0}, step=0)
    state = first.state_dict()
    wandb.finish()
    real_init = wandb.init

    def init_without_rewind(**kwargs):
        if "resume_from" in kwargs:
            raise wandb.errors.CommError("rewind is not enabled for this entity")
        return real_init(**kwargs)

    monkeypatch.setattr(wandb, "init", init_without_rewind)
    resumed = WandbLogger(project="proj", save_dir=tmp_path)
    resumed.load_state_dict(state)
    with pytest.warns(UserWarning, match=r"refused to rewind run \w+ to step 1 .*rewind is not enabled"):
        resumed.log_metrics({"a": 2.0}, step=1)
    assert resumed.version == first.version == state["run_id"]


# ------------------------------------------------------------------------------------------------- both, together

def test_several_trackers_in_one_trainer(tmp_path, wandb_dir, sqlite_uri):
    from volt.loggers import CSVLogger, MLFlowLogger, WandbLogger

    mlflow_logger = MLFlowLogger(experiment_name="together", tracking_uri=sqlite_uri, log_model="all")
    wandb_logger = WandbLogger(project="proj", save_dir=tmp_path, log_model="all")
    memory = MemoryLogger()
    trainer = fit(tmp_path, [mlflow_logger, wandb_logger, CSVLogger(tmp_path), memory])
    # the first logger places the checkpoints
    assert trainer.checkpoint_callback.dirpath == str(
        tmp_path / mlflow_logger.experiment_id / mlflow_logger.run_id / "checkpoints")
    assert mlflow_history(mlflow_logger.experiment, mlflow_logger.run_id) == history_by_key(memory)
    run_id = wandb_logger.version
    finish_wandb(tmp_path)
    assert len(wandb_history(tmp_path, run_id)) == len(memory.metrics)
    assert len(wandb_artifacts(tmp_path)) == 2
    assert len(artifact_files(mlflow_logger.experiment, mlflow_logger.run_id)) == 6


def test_import_volt_loads_no_tracker_library():
    """Neither `import volt`, `volt.loggers` nor building the loggers imports mlflow, wandb or comet_ml (seconds
    each)."""
    code = (
        "import sys, volt, volt.loggers\n"
        "from volt.loggers import CometLogger, MLFlowLogger, WandbLogger\n"
        "MLFlowLogger(tracking_uri='sqlite:///unused.db'); WandbLogger(project='p'); CometLogger(online=False)\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('mlflow', 'wandb', 'comet_ml')))\n"
    )
    env = dict(os.environ, PYTHONPATH=str(SRC))
    output = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert output.stdout.strip() == "[]"


@pytest.mark.parametrize("class_name, module, install", [("MLFlowLogger", "mlflow", "mlflow"),
                                                         ("WandbLogger", "wandb", "wandb"),
                                                         ("CometLogger", "comet_ml", "comet-ml")])
def test_missing_client_library_names_the_package(monkeypatch, class_name, module, install):
    import importlib.util

    import volt.loggers

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == module else
                        real_find_spec(name, *a))
    with pytest.raises(ModuleNotFoundError, match=rf"needs the `{module}` package.*pip install {install}`"):
        getattr(volt.loggers, class_name)()


# ---------------------------------------------------------------------------------------------------------- resume
# An interrupted run: rows at steps 0-3, a checkpoint (state_dict) after step 3's first row, then more rows at step
# 3 and later that the crash leaves behind. The resumed logger, built afresh as in a new process, gets the saved
# state and logs step 3's later rows and what follows; every step must show once, with the resumed run's values.

def interrupted_then_resumed(make_logger):
    first = make_logger()
    for step in range(4):
        first.log_metrics({"loss": float(step), "run": 1.0}, step=step)
    buffer = io.BytesIO()
    torch.save(first.state_dict(), buffer)  # plain data, as checkpoints hold
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    first.log_metrics({"val": 30.0, "run": 1.0}, step=3)
    for step in (4, 5):
        first.log_metrics({"loss": float(step), "run": 1.0}, step=step)
    resumed = make_logger()
    resumed.load_state_dict(state)
    resumed.log_metrics({"val": 31.0, "run": 2.0}, step=3)
    for step in (4, 5, 6):
        resumed.log_metrics({"loss": 10.0 * step, "run": 2.0}, step=step)
    return first, resumed


RESUMED_HISTORY = {
    "loss": [(0, 0.0), (1, 1.0), (2, 2.0), (3, 3.0), (4, 40.0), (5, 50.0), (6, 60.0)],
    "val": [(3, 31.0)],
    "run": [(0, 1.0), (1, 1.0), (2, 1.0), (3, 1.0), (3, 2.0), (4, 2.0), (5, 2.0), (6, 2.0)],
}


def test_mlflow_resume_replaces_points_after_the_checkpoint(tmp_path, mlflow_store, request):
    from volt.loggers import MLFlowLogger

    first, resumed = interrupted_then_resumed(lambda: MLFlowLogger(experiment_name=request.node.name, **mlflow_store))
    assert resumed.run_id == first.run_id
    client = resumed.experiment
    assert mlflow_history(client, first.run_id) == RESUMED_HISTORY
    run = client.get_run(first.run_id)
    assert run.info.status == "RUNNING" and run.data.metrics == {"loss": 60.0, "val": 31.0, "run": 2.0}
    runs = client.search_runs([first.experiment_id], run_view_type=3)  # active and deleted
    assert [r.info.run_id for r in runs] == [first.run_id]  # the resumed logger opened no run of its own


def test_mlflow_resume_after_the_folder_was_chosen_drops_the_fresh_run(tmp_path, mlflow_store, request):
    """A new process opens a run when the checkpoint folder is chosen (before the checkpoint is read): that empty
    run is deleted, and the checkpoint's run continues."""
    from volt.loggers import MLFlowLogger

    def opened_early():
        logger = MLFlowLogger(experiment_name=request.node.name, **mlflow_store)
        _ = logger.version
        return logger

    first, resumed = interrupted_then_resumed(opened_early)
    client = resumed.experiment
    assert resumed.run_id == first.run_id and mlflow_history(client, first.run_id) == RESUMED_HISTORY
    deleted = client.search_runs([first.experiment_id], run_view_type=2)
    assert len(deleted) == 1 and deleted[0].data.metrics == {}


def test_mlflow_resume_into_a_run_given_by_the_user(tmp_path, mlflow_store, request):
    """`run_id` names another run: that run is continued as it is, the checkpoint's run left alone."""
    from volt.loggers import MLFlowLogger

    first = MLFlowLogger(experiment_name=request.node.name, **mlflow_store)
    first.log_metrics({"loss": 1.0}, step=5)
    other = MLFlowLogger(experiment_name=request.node.name, **mlflow_store)
    other.log_metrics({"loss": 2.0}, step=9)
    resumed = MLFlowLogger(run_id=other.run_id, **mlflow_store)
    resumed.load_state_dict(first.state_dict())
    resumed.log_metrics({"loss": 3.0}, step=5)
    assert mlflow_history(resumed.experiment, first.run_id) == {"loss": [(5, 1.0)]}
    assert mlflow_history(resumed.experiment, other.run_id) == {"loss": [(5, 3.0), (9, 2.0)]}


def test_mlflow_resume_behind_a_server_warns_that_points_stay(monkeypatch):
    from volt.loggers import MLFlowLogger

    logger = MLFlowLogger(tracking_uri="http://127.0.0.1:9")
    monkeypatch.setattr(MLFlowLogger, "_adopt_run", lambda self, run_id: setattr(self, "_run_id", run_id))
    with pytest.warns(UserWarning, match=r"resuming run abc from step 3, but MLflow's API cannot delete"):
        logger.load_state_dict({"run_id": "abc", "experiment_id": "0", "step": 3, "rows": [], "uploaded": {}})


def test_wandb_resume_rewinds_to_the_checkpoint(tmp_path, wandb_dir):
    """Offline, the rewind is the resumed run file's branch point (applied by `wandb sync`); after it the history
    holds every step once."""
    from volt.loggers import WandbLogger

    first, resumed = interrupted_then_resumed(lambda: WandbLogger(project="proj", save_dir=tmp_path))
    assert resumed.version == first.version
    assert resumed.state_dict()["row"] == 8  # 4 rows kept, 4 logged since: where a second resume would cut
    finish_wandb(tmp_path)
    files = wandb_run_files(tmp_path)
    assert len(files) == 2  # the interrupted session's file, and the resumed one's
    rows = wandb_history(tmp_path, first.version)
    history = {}
    for row in rows:
        for key in ("loss", "val", "run"):
            if key in row:
                history.setdefault(key, []).append((row["trainer/global_step"], row[key]))
    assert history == RESUMED_HISTORY
    assert [row["_step"] for row in rows] == list(range(len(rows)))


def test_wandb_resume_of_a_run_still_open_in_this_process(tmp_path, wandb_dir):
    """A second fit in the same process resumes with the same logger: its open run is finished and rewound."""
    from volt.loggers import WandbLogger

    logger = WandbLogger(project="proj", save_dir=tmp_path)
    logger.log_metrics({"loss": 0.0}, step=0)
    state = logger.state_dict()
    logger.log_metrics({"loss": 1.0}, step=1)
    logger.load_state_dict(state)
    logger.log_metrics({"loss": 2.0}, step=1)
    run_id = logger.version
    finish_wandb(tmp_path)
    assert [(r["trainer/global_step"], r["loss"]) for r in wandb_history(tmp_path, run_id)] == [(0, 0.0), (1, 2.0)]


# ---------------------------------------------------------------------------------------------------------- Comet
# Offline experiments write a zip archive (experiment.json, and messages.json: one JSON message per line) when they
# end; there is no reader for it in comet_ml, so `comet_archive` reads the messages.

COMET_QUIET = dict(online=False, display_summary_level=0, log_code=False, log_git_metadata=False,
                   log_git_patch=False, log_env_details=False, log_env_host=False, log_env_cpu=False,
                   log_env_gpu=False, log_env_network=False, log_env_disk=False, auto_output_logging=False)


def comet_archive(path):
    """(experiment.json, {metric: [(step, epoch, value)]}, {parameter: value}) of an offline archive."""
    import zipfile

    with zipfile.ZipFile(path) as archive:
        info = json.loads(archive.read("experiment.json"))
        messages = [json.loads(line) for line in archive.read("messages.json").splitlines()]
    metrics, params = {}, {}
    for message in messages:
        payload = message["payload"]
        if message["type"] == "metric_msg" and payload["metric"]["metricName"] != "process duration":
            metric = payload["metric"]
            metrics.setdefault(metric["metricName"], []).append((metric["step"], metric["epoch"],
                                                                 metric["metricValue"]))
        elif message["type"] == "parameter_msg" and payload["param"]["source"] == "manual":
            params[payload["param"]["paramName"]] = payload["param"]["paramValue"]
    return info, metrics, params


def test_comet_offline_fit_metrics_params_and_placement(tmp_path, quiet_lightning):
    pytest.importorskip("comet_ml")
    from pytorch_lightning.loggers import CometLogger as LightningCometLogger
    from volt.loggers import CometLogger

    logger = CometLogger(project="proj", offline_directory=str(tmp_path / "comet"), **COMET_QUIET)
    memory = MemoryLogger()
    trainer = fit(tmp_path, [logger, memory])
    key = logger.version
    assert trainer.checkpoint_callback.dirpath == str(tmp_path / "comet" / "proj" / key / "checkpoints")
    logger.experiment.end()
    [path] = (tmp_path / "comet").glob("*.zip")
    info, metrics, params = comet_archive(path)
    assert info["offline_id"] == key and info["project_name"] == "proj"
    expected = {}
    for step, row in memory.metrics:
        for name, value in row.items():
            if name != "epoch":
                expected.setdefault(name, []).append((step, row["epoch"], pytest.approx(value)))
    assert metrics == expected
    assert params == {"lr": 0.1, "optim|name": "sgd", "optim|betas|b1": 0.9, "activation": str(torch.nn.ReLU)}

    # Lightning's folder for the same arguments (its offline experiment writes nothing: it is created disabled)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lightning_logger = LightningCometLogger(project="proj", offline_directory=str(tmp_path / "lcomet"),
                                                **COMET_QUIET)
        lightning = quiet_lightning.Trainer(default_root_dir=tmp_path, logger=lightning_logger, max_steps=1,
                                            limit_val_batches=0, enable_progress_bar=False,
                                            enable_model_summary=False)
        lightning.fit(boring_model_class(quiet_lightning)())
    lightning_folder = os.path.relpath(lightning.checkpoint_callback.dirpath, tmp_path / "lcomet")
    assert lightning_folder.replace(lightning_logger.version, "<key>") == os.path.join("proj", "<key>", "checkpoints")


def test_comet_resume_continues_the_experiment_and_says_what_stays(tmp_path):
    pytest.importorskip("comet_ml")
    from volt.loggers import CometLogger

    def make_logger():
        return CometLogger(project="proj", offline_directory=str(tmp_path), **COMET_QUIET)

    first = make_logger()
    for step in range(3):
        first.log_metrics({"loss": float(step), "epoch": 0}, step=step)
    state = first.state_dict()
    first.log_metrics({"loss": 9.0, "epoch": 0}, step=3)  # after the checkpoint: stays in Comet
    first.experiment.end()
    resumed = make_logger()
    resumed.load_state_dict(state)
    with pytest.warns(UserWarning, match=rf"continuing experiment {first.version} from step 2. Comet cannot delete"):
        resumed.log_metrics({"loss": 30.0, "epoch": 1}, step=3)
    resumed.experiment.end()
    archives = sorted(tmp_path.glob("*.zip"), key=os.path.getmtime)
    (first_info, first_metrics, _), (resumed_info, resumed_metrics, _) = map(comet_archive, archives)
    assert first_info["offline_id"] == resumed_info["offline_id"] == first.version
    assert resumed_info["resume_strategy"] == "get"
    assert first_metrics["loss"][-1] == (3, 0, 9.0) and resumed_metrics["loss"] == [(3, 1, 30.0)]


def test_neptune_logger_is_importable_and_says_it_is_gone():
    """As in Lightning 2.6: the name imports, building one says why it cannot work and what to use."""
    from volt.loggers import NeptuneLogger

    with pytest.raises(RuntimeError, match="Neptune has been sunset.*MLFlowLogger, WandbLogger or CometLogger"):
        NeptuneLogger(project="workspace/project")


# ------------------------------------------------------------------------------------------- resume, end to end

def run_tracker_script(out, phase):
    env = dict(os.environ, PYTHONPATH=str(SRC), WANDB_MODE="offline", WANDB_DIR=str(out), WANDB_SILENT="true",
               MLFLOW_ALLOW_FILE_STORE="true", MLFLOW_TRACKING_URI="", OMP_NUM_THREADS="1")
    script = Path(__file__).parent / "scripts" / "tracker_fit.py"
    return subprocess.run([sys.executable, str(script), str(out), phase], env=env, capture_output=True, text=True,
                          timeout=150, cwd=out)


@pytest.mark.timeout(240)
def test_fit_interrupted_then_resumed_in_new_processes_continues_each_run(tmp_path):
    """A fit with three trackers fails at step 8, after its step-6 checkpoint; a new process resumes from that
    checkpoint with loggers given no run id. Each tracker continues the same run and holds every step once, the
    resumed run's from step 6 on ("phase" 2). (Comet's resume: test_comet_resume_continues_the_experiment...)"""
    from mlflow.tracking import MlflowClient

    interrupted = run_tracker_script(tmp_path, "interrupted")
    assert interrupted.returncode != 0 and "planned interruption" in interrupted.stderr, interrupted.stderr[-3000:]
    resumed = run_tracker_script(tmp_path, "resumed")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    runs = torch.load(tmp_path / "interrupted.pt")
    assert torch.load(tmp_path / "resumed.pt") == runs

    steps = list(range(12))  # 3 epochs of 4 batches
    phases = [(step, 1.0 if step < 6 else 2.0) for step in steps]
    for name, uri in (("mlflow-sqlite", f"sqlite:///{tmp_path}/mlflow.db"), ("mlflow-file", f"file:{tmp_path}/mlruns")):
        client = MlflowClient(uri)
        history = mlflow_history(client, runs[name])
        assert history["phase"] == phases, name
        assert [step for step, _ in history["train_loss"]] == steps, name
        assert [step for step, _ in history["val_loss"]] == [3, 7, 11], name
        experiment_id = client.get_run(runs[name]).info.experiment_id
        assert [run.info.run_id for run in client.search_runs([experiment_id])] == [runs[name]], name
        assert client.get_run(runs[name]).info.status == "FINISHED"
        assert client.get_run(runs[name]).data.params == {"lr": "0.1"}

    rows = wandb_history(tmp_path, runs["wandb"])  # every run file under tmp_path is this run's
    assert [(row["trainer/global_step"], row["phase"]) for row in rows if "phase" in row] == phases
    assert wandb_config(tmp_path) == {"lr": 0.1}

    # each checkpoint uploaded as it was saved; the resumed run uploads the one it resumed from once more (its upload
    # came after the checkpoint's logger state was taken; the same content makes no new W&B artifact version),
    # but not the earlier ones
    saved = sorted(os.listdir(tmp_path / "ckpt"), key=lambda name: int(name.split("step=")[1][:-5]))
    assert len(saved) == 4
    uploads = [(metadata["original_filename"], digest) for _, _, metadata, _, digest in wandb_artifacts(tmp_path)]
    assert [name for name, _ in uploads] == saved[:2] + saved[1:]
    assert uploads[1] == uploads[2]
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    assert sorted(a.path for a in client.list_artifacts(runs["mlflow-sqlite"])) == sorted(n[:-5] for n in saved)
    assert [row["trainer/global_step"] for row in rows if "val_loss" in row] == [3, 7, 11]


def test_wandb_hyperparameters_wait_for_the_run_and_are_never_lost(tmp_path, wandb_dir):
    """Logged before the run starts (a resumed fit logs them before reading its checkpoint), they go in when it
    starts; a fit that logs nothing else still starts the run at the end to record them."""
    from volt.loggers import WandbLogger

    logger = WandbLogger(project="proj", save_dir=tmp_path)
    logger.log_hyperparams({"lr": 0.1, "optim": {"name": "sgd"}})
    assert not wandb_run_files(tmp_path)  # no run yet
    logger.finalize("success")
    finish_wandb(tmp_path)
    assert wandb_config(tmp_path) == {"lr": 0.1, "optim": {"name": "sgd"}}


def test_fit_resumed_by_a_new_trainer_in_the_same_process(tmp_path, wandb_dir):
    """The interrupted fit's W&B run is still open in the process (Lightning's loggers leave it open): the new
    Trainer's loggers, given no run id, continue the checkpoint's runs all the same."""
    from volt.loggers import MLFlowLogger, WandbLogger

    class Interrupted(HparamsModel):
        def training_step(self, batch, batch_idx):
            if self.global_step == 5:
                raise RuntimeError("planned interruption")
            self.log("phase", 1.0)
            return super().training_step(batch, batch_idx)

    class Resumed(HparamsModel):
        def training_step(self, batch, batch_idx):
            self.log("phase", 2.0)
            return super().training_step(batch, batch_idx)

    def run(model, **fit_kwargs):
        loggers = [MLFlowLogger(save_dir=str(tmp_path / "mlruns")), WandbLogger(project="proj", save_dir=tmp_path)]
        checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=3, save_top_k=-1)
        trainer = volt.Trainer(max_epochs=2, log_every_n_steps=1, logger=loggers, callbacks=[checkpoint],
                               enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path)
        trainer.fit(model, **fit_kwargs)
        return loggers

    with pytest.raises(RuntimeError, match="planned interruption"):
        run(Interrupted())
    mlflow_logger, wandb_logger = run(Resumed(), ckpt_path=tmp_path / "ckpt" / "epoch=0-step=3.ckpt")
    phases = [(step, 1.0 if step < 3 else 2.0) for step in range(8)]
    assert mlflow_history(mlflow_logger.experiment, mlflow_logger.run_id)["phase"] == phases
    run_id = wandb_logger.version
    finish_wandb(tmp_path)
    assert [(row["trainer/global_step"], row["phase"]) for row in wandb_history(tmp_path, run_id)
            if "phase" in row] == phases


class _ShardedOneDevice(SingleDeviceStrategy):
    """One process writing its checkpoints as sharded folders (what FSDP does on several ranks)."""

    state_dict_type = "sharded"


def test_mlflow_uploads_checkpoint_folders(tmp_path, mlflow_store, request):
    from volt.loggers import MLFlowLogger

    logger = MLFlowLogger(experiment_name=request.node.name, log_model="all", **mlflow_store)
    checkpoint = ModelCheckpoint(monitor="step", mode="max", save_top_k=1)
    fit(tmp_path, logger, callbacks=[checkpoint], strategy=_ShardedOneDevice())
    assert os.path.isdir(checkpoint.best_model_path)
    name = Path(checkpoint.best_model_path).stem
    files = {file.path for file in logger.experiment.list_artifacts(logger.run_id, f"{name}/{name}.ckpt")}
    assert files == {f"{name}/{name}.ckpt/{file}" for file in os.listdir(checkpoint.best_model_path)}
    assert f"{name}/{name}.ckpt/volt_checkpoint.json" in files


def test_wandb_uploads_checkpoint_folders(tmp_path, wandb_dir):
    from volt.loggers import WandbLogger

    logger = WandbLogger(project="proj", save_dir=tmp_path, log_model=True)
    checkpoint = ModelCheckpoint(monitor="step", mode="max", save_top_k=1)
    fit(tmp_path, logger, callbacks=[checkpoint], strategy=_ShardedOneDevice())
    finish_wandb(tmp_path)
    _, _, metadata, files, _ = wandb_artifacts(tmp_path)[-1]
    assert metadata["original_filename"] == os.path.basename(checkpoint.best_model_path)
    assert sorted(files) == sorted(f"model.ckpt/{name}" for name in os.listdir(checkpoint.best_model_path))
