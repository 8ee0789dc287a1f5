"""A user's script logging to several trackers at once, run in a fresh process by tests/test_trackers.py:
`python tracker_fit.py OUT_DIR PHASE`: MLflow (a SQLite and a file store) and W&B, offline.

PHASE "interrupted": a fit with a checkpoint every 3 steps that fails at step 8, after logging past the step-6
checkpoint (an epoch end's validation included). PHASE "resumed": a new fit from that checkpoint, to the end. Both log `train_loss` every step and `phase`
(1 when interrupted, 2 when resumed), so the test can tell whose points the tracker kept. The loggers are built with
no run id: the checkpoint says which run to continue. Two of them upload every checkpoint (log_model="all").
"""
import os
import sys

import torch
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

import volt
from volt.callbacks import ModelCheckpoint

OUT, PHASE = sys.argv[1:3]
CHECKPOINT = os.path.join(OUT, "ckpt", "epoch=1-step=6.ckpt")


class Net(volt.LightningModule):
    def __init__(self, lr: float = 0.1) -> None:
        super().__init__()
        self.save_hyperparameters()  # logged before the resumed fit reads its checkpoint
        self.layer = torch.nn.Linear(4, 1)

    def training_step(self, batch, batch_idx):
        if PHASE == "interrupted" and self.global_step == 8:
            raise RuntimeError("planned interruption")
        loss = F.mse_loss(self.layer(batch[0]), batch[1])
        self.log("train_loss", loss)
        self.log("phase", 1.0 if PHASE == "interrupted" else 2.0)
        return loss

    def validation_step(self, batch, batch_idx):
        self.log("val_loss", F.mse_loss(self.layer(batch[0]), batch[1]))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)


def data() -> DataLoader:
    generator = torch.Generator().manual_seed(0)
    return DataLoader(TensorDataset(torch.randn(8, 4, generator=generator), torch.randn(8, 1, generator=generator)),
                      batch_size=2)


def make_loggers() -> dict:
    from volt.loggers import MLFlowLogger, WandbLogger

    return {
        "mlflow-sqlite": MLFlowLogger(experiment_name="resume", tracking_uri=f"sqlite:///{OUT}/mlflow.db",
                                      log_model="all"),
        "mlflow-file": MLFlowLogger(experiment_name="resume", save_dir=os.path.join(OUT, "mlruns")),
        "wandb": WandbLogger(project="resume", save_dir=OUT, log_model="all"),
    }


def main() -> None:
    volt.seed_everything(0)
    model = Net()
    loggers = make_loggers()
    # monitored, so every file stays among the best: a resumed run must not upload the earlier ones again
    checkpoints = ModelCheckpoint(dirpath=os.path.join(OUT, "ckpt"), every_n_train_steps=3, save_top_k=-1,
                                  monitor="step", mode="max")
    trainer = volt.Trainer(max_epochs=3, log_every_n_steps=1, logger=list(loggers.values()), callbacks=[checkpoints],
                           enable_progress_bar=False, enable_model_summary=False, default_root_dir=OUT)
    try:
        trainer.fit(model, data(), data(), ckpt_path=CHECKPOINT if PHASE == "resumed" else None)
    finally:
        torch.save({name: logger.version for name, logger in loggers.items()}, os.path.join(OUT, f"{PHASE}.pt"))
        import wandb

        wandb.finish()


if __name__ == "__main__":
    main()
