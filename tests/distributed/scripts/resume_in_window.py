"""A user's script for the resume-inside-an-accumulation-window tests: `python resume_in_window.py OUT '{...}'`.

Ranks train with accumulate_grad_batches=3, shuffling, dropout drawing a different stream on each rank, and an epoch
metric logged without sync_dist (so each rank's differs). Without "resume_from", one uninterrupted run writes
checkpoints inside accumulation windows: ModelCheckpoint after each in-epoch validation (every 2 batches) and
`trainer.save_checkpoint` from on_train_batch_end at epoch 1, batch 4. With "resume_from" (a list of checkpoint
paths), a fresh run of the same script (same callbacks, writing elsewhere) resumes from each in turn. Options:
strategy, devices, state_dict_type ("full"/"sharded", for ddp and fsdp), async_save (ModelCheckpoint's).

Each rank writes OUT/rank{rank}.pt: {"runs": {name: final state}}, where name is "uninterrupted" or the checkpoint's
file name, and the final state holds the weights, optimizer state, RNG state and the epoch metric of each epoch run.
"""
import json
import os
import sys

import torch
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

import volt
from volt.callbacks import ModelCheckpoint
from volt.strategies import DDPStrategy, FSDPStrategy

OUT = sys.argv[1]
OPTIONS = json.loads(sys.argv[2]) if len(sys.argv) > 2 else {}


class Net(volt.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Dropout(0.5),
                                       torch.nn.Linear(16, 1))
        self.epoch_metric = {}

    def on_train_start(self):
        torch.manual_seed(1000 + self.global_rank)  # each rank draws its own dropout masks

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = F.mse_loss(self.net(x), y)
        self.log("rank_loss", loss, on_step=False, on_epoch=True)  # no sync_dist: this rank's batches only
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_loss", F.mse_loss(self.net(x), y), sync_dist=True)

    def on_train_epoch_end(self):
        self.epoch_metric[self.current_epoch] = self.trainer.callback_metrics["rank_loss"].clone()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1, momentum=0.9)


class SaveInWindow(volt.Callback):
    """Save from a batch hook at epoch 1, batch 4: the second batch of the window 3-5, no validation after it."""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.current_epoch == 1 and batch_idx == 4:
            trainer.save_checkpoint(os.path.join(OUT, "in_window.ckpt"))


def loaders():
    generator = torch.Generator().manual_seed(0)
    train = TensorDataset(torch.randn(48, 8, generator=generator), torch.randn(48, 1, generator=generator))
    val = TensorDataset(torch.randn(16, 8, generator=generator), torch.randn(16, 1, generator=generator))
    return DataLoader(train, batch_size=4, shuffle=True), DataLoader(val, batch_size=4)


def make_strategy():
    name, state_dict_type = OPTIONS.get("strategy", "ddp"), OPTIONS.get("state_dict_type")
    if state_dict_type is None or name not in ("ddp", "fsdp"):
        return name
    return (DDPStrategy if name == "ddp" else FSDPStrategy)(state_dict_type=state_dict_type)


def callbacks(folder: str) -> list:
    every_validation = ModelCheckpoint(dirpath=os.path.join(OUT, folder), save_top_k=-1,
                                       async_save=OPTIONS.get("async_save", False))
    return [every_validation, SaveInWindow()]


def fit(callbacks, ckpt_path=None) -> dict:
    volt.seed_everything(0)
    model = Net()
    trainer = volt.Trainer(accelerator="cpu", devices=OPTIONS.get("devices", 2), strategy=make_strategy(),
                           max_epochs=2, accumulate_grad_batches=3, val_check_interval=2, callbacks=callbacks,
                           enable_checkpointing=bool(callbacks), logger=False, enable_progress_bar=False,
                           enable_model_summary=False, num_sanity_val_steps=0, default_root_dir=OUT)
    trainer.fit(model, *loaders(), ckpt_path=ckpt_path)
    strategy = trainer.strategy
    return {
        "weights": {k: v.detach().cpu().clone() for k, v in strategy.lightning_module_state_dict().items()},
        "optimizer": strategy.optimizer_state(trainer.optimizers[0]),
        "rng": torch.get_rng_state(),
        "epoch_metric": model.epoch_metric,
        "global_step": trainer.global_step,
        "world_size": trainer.world_size,
    }


def main() -> None:
    runs = {}
    if "resume_from" in OPTIONS:
        for i, path in enumerate(OPTIONS["resume_from"]):
            runs[os.path.basename(path)] = fit(callbacks(f"ckpt-resumed-{i}"), ckpt_path=path)
    else:
        runs["uninterrupted"] = fit(callbacks("ckpt"))
    from volt.utilities.rank_zero import rank_zero_only

    torch.save({"runs": runs}, os.path.join(OUT, f"rank{rank_zero_only.rank}.pt"))


if __name__ == "__main__":
    main()
