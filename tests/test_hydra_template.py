"""A Hydra-configured project in the layout of the popular Lightning + Hydra templates (configs/train.yaml with a
defaults list; `_target_` for the datamodule, the model and its partial optimizer and scheduler, the callbacks, the
logger and the Trainer; torchmetrics in the module; `@hydra.main` in train.py), run unmodified under `volt run` and
under pytorch-lightning 2.6.6 with the same seed: the same checkpoints, weights and logged metrics.
"""
import csv
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
# `lightning` for the Lightning run: the pytorch-lightning oracle under the unified package's name
LIGHTNING_ALIAS = ROOT / "scripts" / "lightning_examples" / "lightning_alias"

PROJECT = {
    "configs/train.yaml": """
        defaults:
          - _self_
          - data: blobs
          - model: classifier
          - callbacks: default
          - logger: csv
          - trainer: cpu

        task_name: train
        seed: 12345
        ckpt_path: null
        paths:
          output_dir: ${hydra:runtime.output_dir}
        hydra:
          run:
            dir: outputs
    """,
    "configs/data/blobs.yaml": """
        _target_: project.data.BlobsDataModule
        batch_size: 16
    """,
    "configs/model/classifier.yaml": """
        _target_: project.model.ClassifierModule
        net:
          _target_: project.model.MLP
          hidden: 16
        optimizer:
          _target_: torch.optim.Adam
          _partial_: true
          lr: 0.01
        scheduler:
          _target_: torch.optim.lr_scheduler.ReduceLROnPlateau
          _partial_: true
          mode: min
          factor: 0.5
          patience: 0
    """,
    "configs/callbacks/default.yaml": """
        model_checkpoint:
          _target_: lightning.pytorch.callbacks.ModelCheckpoint
          dirpath: ${paths.output_dir}/checkpoints
          filename: epoch_{epoch:03d}
          monitor: val/acc
          mode: max
          save_last: true
          auto_insert_metric_name: false
        early_stopping:
          _target_: lightning.pytorch.callbacks.EarlyStopping
          monitor: val/acc
          patience: 5
          mode: max
        lr_monitor:
          _target_: lightning.pytorch.callbacks.LearningRateMonitor
          logging_interval: epoch
    """,
    "configs/logger/csv.yaml": """
        csv:
          _target_: lightning.pytorch.loggers.csv_logs.CSVLogger
          save_dir: ${paths.output_dir}
          name: csv/
    """,
    "configs/trainer/cpu.yaml": """
        _target_: lightning.pytorch.trainer.Trainer
        default_root_dir: ${paths.output_dir}
        min_epochs: 1
        max_epochs: 3
        accelerator: cpu
        devices: 1
        enable_progress_bar: false
        log_every_n_steps: 2
    """,
    "project/__init__.py": "",
    "project/data.py": """
        import torch
        from lightning import LightningDataModule
        from torch.utils.data import DataLoader, TensorDataset


        class BlobsDataModule(LightningDataModule):
            \"\"\"Three Gaussian blobs in 8 dimensions: 96 training, 32 validation and 32 test points.\"\"\"

            def __init__(self, batch_size: int = 16):
                super().__init__()
                self.save_hyperparameters(logger=False, ignore=["net"])

            def setup(self, stage):
                generator = torch.Generator().manual_seed(0)
                centres = torch.randn(3, 8, generator=generator) * 2
                labels = torch.randint(0, 3, (160,), generator=generator)
                points = centres[labels] + torch.randn(160, 8, generator=generator)
                self.train_set = TensorDataset(points[:96], labels[:96])
                self.val_set = TensorDataset(points[96:128], labels[96:128])
                self.test_set = TensorDataset(points[128:], labels[128:])

            def train_dataloader(self):
                return DataLoader(self.train_set, batch_size=self.hparams.batch_size, shuffle=True)

            def val_dataloader(self):
                return DataLoader(self.val_set, batch_size=self.hparams.batch_size)

            def test_dataloader(self):
                return DataLoader(self.test_set, batch_size=self.hparams.batch_size)
    """,
    "project/model.py": """
        import torch
        from lightning import LightningModule
        from torchmetrics import MaxMetric, MeanMetric
        from torchmetrics.classification.accuracy import Accuracy


        class MLP(torch.nn.Module):
            def __init__(self, hidden: int = 16):
                super().__init__()
                self.layers = torch.nn.Sequential(torch.nn.Linear(8, hidden), torch.nn.Dropout(0.1),
                                                  torch.nn.ReLU(), torch.nn.Linear(hidden, 3))

            def forward(self, x):
                return self.layers(x)


        class ClassifierModule(LightningModule):
            def __init__(self, net, optimizer, scheduler):
                super().__init__()
                self.save_hyperparameters(logger=False, ignore=["net"])
                self.net = net
                self.criterion = torch.nn.CrossEntropyLoss()
                self.train_acc, self.val_acc, self.test_acc = (Accuracy(task="multiclass", num_classes=3)
                                                               for _ in range(3))
                self.train_loss, self.val_loss, self.test_loss = MeanMetric(), MeanMetric(), MeanMetric()
                self.val_acc_best = MaxMetric()

            def forward(self, x):
                return self.net(x)

            def on_train_start(self):
                self.val_loss.reset()
                self.val_acc.reset()
                self.val_acc_best.reset()

            def model_step(self, batch):
                x, y = batch
                logits = self(x)
                return self.criterion(logits, y), logits.argmax(dim=1), y

            def training_step(self, batch, batch_idx):
                loss, preds, targets = self.model_step(batch)
                self.train_loss(loss)
                self.train_acc(preds, targets)
                self.log("train/loss", self.train_loss, on_step=True, on_epoch=True, prog_bar=True)
                self.log("train/acc", self.train_acc, on_step=False, on_epoch=True, prog_bar=True)
                return loss

            def validation_step(self, batch, batch_idx):
                loss, preds, targets = self.model_step(batch)
                self.val_loss(loss)
                self.val_acc(preds, targets)
                self.log("val/loss", self.val_loss, on_step=False, on_epoch=True, prog_bar=True)
                self.log("val/acc", self.val_acc, on_step=False, on_epoch=True, prog_bar=True)

            def on_validation_epoch_end(self):
                self.val_acc_best(self.val_acc.compute())
                self.log("val/acc_best", self.val_acc_best.compute(), sync_dist=True, prog_bar=True)

            def test_step(self, batch, batch_idx):
                loss, preds, targets = self.model_step(batch)
                self.test_loss(loss)
                self.test_acc(preds, targets)
                self.log("test/loss", self.test_loss, on_step=False, on_epoch=True)
                self.log("test/acc", self.test_acc, on_step=False, on_epoch=True)

            def configure_optimizers(self):
                optimizer = self.hparams.optimizer(params=self.trainer.model.parameters())
                scheduler = self.hparams.scheduler(optimizer=optimizer)
                return {"optimizer": optimizer,
                        "lr_scheduler": {"scheduler": scheduler, "monitor": "val/loss", "interval": "epoch"}}
    """,
    "train.py": """
        import json
        from pathlib import Path

        import hydra
        import lightning as L
        from lightning import Callback, LightningDataModule, LightningModule, Trainer
        from lightning.pytorch.loggers import Logger
        from omegaconf import DictConfig


        def instantiate_all(group: DictConfig) -> list:
            return [hydra.utils.instantiate(c) for c in group.values() if isinstance(c, DictConfig) and "_target_" in c]


        @hydra.main(version_base="1.3", config_path="configs", config_name="train")
        def main(cfg: DictConfig) -> float:
            L.seed_everything(cfg.seed, workers=True)
            datamodule: LightningDataModule = hydra.utils.instantiate(cfg.data)
            model: LightningModule = hydra.utils.instantiate(cfg.model)
            callbacks: list[Callback] = instantiate_all(cfg.callbacks)
            loggers: list[Logger] = instantiate_all(cfg.logger)
            trainer: Trainer = hydra.utils.instantiate(cfg.trainer, callbacks=callbacks, logger=loggers)
            trainer.fit(model=model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
            fit_metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
            # the partial optimizer and scheduler in the hyperparameters: Lightning's checkpoint pickles them
            trainer.test(model=model, datamodule=datamodule, ckpt_path="best", weights_only=False)
            test_metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
            best = Path(trainer.checkpoint_callback.best_model_path).relative_to(Path.cwd())
            Path("summary.json").write_text(json.dumps({
                "trainer": type(trainer).__module__, "fit": fit_metrics, "test": test_metrics,
                "best": str(best), "global_step": trainer.global_step, "epoch": trainer.current_epoch}))
            return fit_metrics["val/acc_best"]


        if __name__ == "__main__":
            main()
    """,
}


def write_project(directory: Path) -> None:
    for name, source in PROJECT.items():
        path = directory / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(source).lstrip())


def start_project(directory: Path, on_volt: bool) -> subprocess.Popen:
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("VOLT_", "PL_", "MASTER_"))}
    environment["OMP_NUM_THREADS"] = "1"
    if on_volt:
        environment["PYTHONPATH"] = str(ROOT / "src")
        command = [sys.executable, "-m", "volt", "run", "train.py"]
    else:
        environment["PYTHONPATH"] = str(LIGHTNING_ALIAS)
        command = [sys.executable, "train.py"]
    return subprocess.Popen(command, cwd=directory, env=environment, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)


def summary(process: subprocess.Popen, directory: Path) -> dict:
    output, _ = process.communicate(timeout=180)
    assert process.returncode == 0, output[-5000:]
    return json.loads((directory / "summary.json").read_text())


def metric_rows(directory: Path) -> list:
    (metrics_csv,) = (directory / "outputs" / "csv").glob("version_*/metrics.csv")
    with open(metrics_csv, newline="") as file:
        return [{k: float(v) for k, v in row.items() if v != ""} for row in csv.DictReader(file)]


def state_dict(path: Path) -> dict:
    # Lightning's checkpoint holds the partial optimizer and scheduler as pickled objects in its hyperparameters
    return torch.load(path, map_location="cpu", weights_only=False)["state_dict"]


def test_hydra_template_project_matches_lightning_under_volt_run(tmp_path):
    pytest.importorskip("hydra")
    pytest.importorskip("pytorch_lightning")
    pytest.importorskip("torchmetrics")
    write_project(tmp_path / "volt")
    write_project(tmp_path / "lightning")
    # both at once: most of each run is importing torch, Hydra and the framework
    processes = {name: start_project(tmp_path / name, on_volt=name == "volt") for name in ("volt", "lightning")}
    ours, theirs = (summary(processes[name], tmp_path / name) for name in ("volt", "lightning"))

    assert ours["trainer"] == "volt.trainer.trainer" and theirs["trainer"] == "pytorch_lightning.trainer.trainer"
    assert (ours["global_step"], ours["epoch"]) == (theirs["global_step"], theirs["epoch"]) == (18, 3)
    assert ours["best"] == theirs["best"]
    for stage in ("fit", "test"):
        assert ours[stage].keys() == theirs[stage].keys()
        assert ours[stage] == pytest.approx(theirs[stage], rel=1e-6, abs=1e-7), stage

    checkpoints = sorted(p.name for p in (tmp_path / "lightning" / "outputs" / "checkpoints").iterdir())
    assert sorted(p.name for p in (tmp_path / "volt" / "outputs" / "checkpoints").iterdir()) == checkpoints
    assert "last.ckpt" in checkpoints and len(checkpoints) >= 2
    for name in checkpoints:
        volt_weights = state_dict(tmp_path / "volt" / "outputs" / "checkpoints" / name)
        lightning_weights = state_dict(tmp_path / "lightning" / "outputs" / "checkpoints" / name)
        assert volt_weights.keys() == lightning_weights.keys()
        for key, value in lightning_weights.items():
            torch.testing.assert_close(volt_weights[key], value, rtol=1e-6, atol=1e-7, msg=f"{name}: {key}")

    volt_rows, lightning_rows = metric_rows(tmp_path / "volt"), metric_rows(tmp_path / "lightning")
    assert [sorted(r) for r in volt_rows] == [sorted(r) for r in lightning_rows]
    for volt_row, lightning_row in zip(volt_rows, lightning_rows):
        assert volt_row == pytest.approx(lightning_row, rel=1e-6, abs=1e-7)
