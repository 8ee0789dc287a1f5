"""A user's script with MLflow, W&B and Comet loggers on 2 gloo ranks: `python trackers.py OUT_DIR`.

Each rank writes OUT_DIR/rank{global_rank}.pt: its checkpoint folder, the loggers' names and versions as it sees
them, and whether mlflow, wandb or comet_ml were ever imported in it (only rank 0 may use them).
"""
import os
import sys

import torch
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

import volt
from volt.loggers import CometLogger, MLFlowLogger, WandbLogger

OUT = sys.argv[1]


class Net(volt.LightningModule):
    def __init__(self, lr: float = 0.1) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.layer = torch.nn.Linear(4, 1)

    def training_step(self, batch, batch_idx):
        loss = F.mse_loss(self.layer(batch[0]), batch[1])
        self.log("train_loss", loss, sync_dist=True)
        return loss

    def validation_step(self, batch, batch_idx):
        self.log("val_loss", F.mse_loss(self.layer(batch[0]), batch[1]), sync_dist=True)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)


def main() -> None:
    generator = torch.Generator().manual_seed(0)
    data = TensorDataset(torch.randn(16, 4, generator=generator), torch.randn(16, 1, generator=generator))
    mlflow_logger = MLFlowLogger(experiment_name="ddp", save_dir=os.path.join(OUT, "mlruns"), log_model="all")
    wandb_logger = WandbLogger(project="ddp", save_dir=OUT, log_model="all")
    comet_logger = CometLogger(project="ddp", online=False, display_summary_level=0, log_env_details=False,
                               log_code=False, log_git_metadata=False, log_git_patch=False)
    trainer = volt.Trainer(accelerator="cpu", devices=2, strategy="ddp", max_epochs=2, log_every_n_steps=1,
                           logger=[mlflow_logger, wandb_logger, comet_logger], enable_progress_bar=False,
                           enable_model_summary=False, default_root_dir=OUT, num_sanity_val_steps=0)
    trainer.fit(Net(), DataLoader(data, batch_size=2), DataLoader(data, batch_size=4))
    report = {"dirpath": trainer.checkpoint_callback.dirpath, "best": trainer.checkpoint_callback.best_model_path,
              "global_step": trainer.global_step,
              "imported": sorted({name.split(".")[0] for name in sys.modules} & {"mlflow", "wandb", "comet_ml"})}
    if trainer.is_global_zero:
        report.update(mlflow=(mlflow_logger.experiment_id, mlflow_logger.run_id), wandb_run=wandb_logger.version,
                      comet_key=comet_logger.version)
        import wandb

        wandb.finish()
        comet_logger.experiment.end()
    torch.save(report, os.path.join(OUT, f"rank{trainer.global_rank}.pt"))


if __name__ == "__main__":
    main()
