"""A LightningCLI script run with ddp_spawn: `python cli_spawn.py OUT_DIR`. The spawned ranks receive the pickled
Trainer (with the config-saving callback and its parser) and the model whose `configure_optimizers` the CLI set
from `--optimizer`. Writes OUT_DIR/result.pt from the main process."""
import sys

import torch
from torch.utils.data import DataLoader

import volt
from volt.cli import LightningCLI


class Model(volt.LightningModule):
    def __init__(self, width: int = 4):
        super().__init__()
        self.save_hyperparameters()
        self.layer = torch.nn.Linear(width, 1)

    def training_step(self, batch, batch_idx):
        return self.layer(batch).pow(2).mean()

    def train_dataloader(self):
        return DataLoader(torch.arange(32.0).view(8, 4) / 32, batch_size=2)


if __name__ == "__main__":
    out = sys.argv[1]
    cli = LightningCLI(Model, args=[
        "fit", "--optimizer", "SGD", "--optimizer.lr", "0.1", "--trainer.strategy", "ddp_spawn",
        "--trainer.accelerator", "cpu", "--trainer.devices", "2", "--trainer.max_epochs", "1",
        "--trainer.default_root_dir", out, "--trainer.enable_progress_bar", "false",
        "--trainer.enable_model_summary", "false"])
    torch.save({"global_step": cli.trainer.global_step, "weight": cli.model.layer.weight.detach().clone()},
               f"{out}/result.pt")
