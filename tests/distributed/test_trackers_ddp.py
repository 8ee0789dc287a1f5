"""MLflow, W&B and Comet loggers under DDP (2 gloo ranks, volt's launcher): rank 0 alone creates and writes the runs;
the other rank never even imports the client libraries. Script: scripts/trackers.py."""
import subprocess
import sys

import pytest

from distributed.helpers import SCRIPTS, finish, reports, script_env

pytestmark = pytest.mark.distributed
pytest.importorskip("mlflow")
pytest.importorskip("wandb")
pytest.importorskip("comet_ml")


@pytest.mark.timeout(120)
def test_only_rank_zero_creates_and_writes_runs(tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    env = script_env(WANDB_MODE="offline", WANDB_DIR=str(tmp_path), WANDB_SILENT="true",
                     COMET_OFFLINE_DIRECTORY=str(tmp_path / "comet"),
                     MLFLOW_ALLOW_FILE_STORE="true",  # a file store: no database tables to create (seconds)
                     MLFLOW_TRACKING_URI="")
    proc = subprocess.Popen([sys.executable, str(SCRIPTS / "trackers.py"), str(tmp_path)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    output = finish(proc, timeout=100)
    assert proc.returncode == 0, output[-6000:]
    ranks = reports(tmp_path)
    assert sorted(ranks) == [0, 1]
    assert ranks[0]["imported"] == ["comet_ml", "mlflow", "wandb"] and ranks[1]["imported"] == []
    experiment_id, run_id = ranks[0]["mlflow"]
    # both ranks use rank 0's folder: <save_dir>/<experiment id>/<run id>/checkpoints
    store = tmp_path / "mlruns"
    assert ranks[0]["dirpath"] == ranks[1]["dirpath"] == str(store / experiment_id / run_id / "checkpoints")

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    client = MlflowClient(f"file:{store}")
    runs = client.search_runs([experiment_id])
    assert [run.info.run_id for run in runs] == [run_id]
    steps = [m.step for m in client.get_metric_history(run_id, "train_loss")]
    assert steps == list(range(ranks[0]["global_step"]))  # each step once: one writer
    assert runs[0].data.params == {"lr": "0.1"} and runs[0].info.status == "FINISHED"
    assert [a.path for a in client.list_artifacts(run_id)] == ["epoch=0-step=4", "epoch=1-step=8"]

    wandb_runs = sorted(p.name for p in (tmp_path / "wandb").glob("offline-run-*"))
    assert len(wandb_runs) == 1 and wandb_runs[0].endswith(ranks[0]["wandb_run"])
    assert [p.name.split("-")[0] for p in (tmp_path / "comet").glob("*.zip")] == [ranks[0]["comet_key"]]
