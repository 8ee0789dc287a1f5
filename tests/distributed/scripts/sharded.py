"""A user's script for the sharded-checkpoint tests: `python sharded.py OUT '{"option": ...}'`.

Trains a small regression net (two Linear layers: under FSDP, two shard groups) with Adam on 64 samples, split over
the ranks without shuffling, so that the k-th global batch holds the same samples on any number of ranks. Options:
  strategy         "ddp" | "fsdp" | "auto" (one process); devices (default 2); state_dict_type (default "sharded")
  ddp_kwargs       more DDPStrategy arguments (e.g. find_unused_parameters); fsdp_kwargs: more FSDPStrategy ones
  batch_size       per rank (default 8 // devices: the global batch stays 8); max_epochs (default 2)
  checkpoints      a list of ModelCheckpoint arguments (dirpath relative to OUT)
  resume_from      a checkpoint path, or "last"
  stall_after      a checkpoint path: once it is complete, file writes block (fsync sleeps, as on a hung storage
                   server) and each rank marks OUT/stalled{rank}; the test then kills the job
Each rank writes OUT/rank{rank}.pt: the full weights and optimizer state when training starts (after a restore)
and when it ends, the global step, the world size and how its parameters are placed on the ranks (DTensor
placements, under FSDP); every training step writes OUT/step{rank}.
"""
import json
import os
import sys
import time

import torch
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

import volt
from volt.callbacks import ModelCheckpoint
from volt.checkpoint import checkpoint_exists, stage
from volt.strategies import DDPStrategy, FSDPStrategy

OUT = sys.argv[1]
OPTIONS = json.loads(sys.argv[2]) if len(sys.argv) > 2 else {}
DEVICES = OPTIONS.get("devices", 2)


class Net(volt.LightningModule):
    def __init__(self, hidden: int = 16) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.l1 = torch.nn.Linear(8, hidden)
        self.l2 = torch.nn.Linear(hidden, 1)
        self.report = {}

    def forward(self, x):
        return self.l2(torch.tanh(self.l1(x)))

    def training_step(self, batch, batch_idx):
        with open(os.path.join(OUT, f"step{self.global_rank}"), "w") as f:
            f.write(str(self.global_step))
        x, y = batch
        loss = F.mse_loss(self(x), y)
        self.log("loss", loss, sync_dist=True)
        return loss

    def on_train_start(self):
        self.report["start"] = state(self.trainer)
        self.report["placements"] = {name: str(getattr(p, "placements", None)) for name, p in self.named_parameters()}

    def on_train_end(self):
        self.report["end"] = state(self.trainer)

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=0.01)


def state(trainer) -> dict:
    """The full weights and optimizer state (every rank takes part; under FSDP they land on rank 0)."""
    strategy = trainer.strategy
    return stage({"weights": strategy.lightning_module_state_dict(), "global_step": trainer.global_step,
                  "optimizer": strategy.optimizer_state(trainer.optimizers[0])})  # copies: training goes on


def stall_writes_after(path: str) -> None:
    """From the moment `path` is a complete checkpoint, the fsync of every file written under a temporary name (the
    next checkpoint's) blocks: that write never finishes."""
    from volt.utilities.rank_zero import rank_zero_only

    real_fsync = os.fsync

    def fsync(fd):
        if checkpoint_exists(path) and ".tmp-" in os.readlink(f"/proc/self/fd/{fd}"):
            with open(os.path.join(OUT, f"stalled{rank_zero_only.rank}"), "w") as f:
                f.write(os.readlink(f"/proc/self/fd/{fd}"))
            time.sleep(3600)
        real_fsync(fd)

    os.fsync = fsync


def make_strategy():
    name, state_dict_type = OPTIONS.get("strategy", "fsdp"), OPTIONS.get("state_dict_type", "sharded")
    if name == "ddp":
        return DDPStrategy(state_dict_type=state_dict_type, **OPTIONS.get("ddp_kwargs", {}))
    if name == "fsdp":
        return FSDPStrategy(state_dict_type=state_dict_type, **OPTIONS.get("fsdp_kwargs", {}))
    return name


def main() -> None:
    if "stall_after" in OPTIONS:
        stall_writes_after(OPTIONS["stall_after"])
    volt.seed_everything(0)
    generator = torch.Generator().manual_seed(0)
    data = TensorDataset(torch.randn(64, 8, generator=generator), torch.randn(64, 1, generator=generator))
    loader = DataLoader(data, batch_size=OPTIONS.get("batch_size", 8 // DEVICES))
    checkpoints = [ModelCheckpoint(**{**args, "dirpath": os.path.join(OUT, args.get("dirpath", "ckpt"))})
                   for args in OPTIONS.get("checkpoints", [])]
    trainer = volt.Trainer(accelerator="cpu", devices=DEVICES, strategy=make_strategy(),
                           max_epochs=OPTIONS.get("max_epochs", 2), callbacks=checkpoints,
                           enable_checkpointing=bool(checkpoints), logger=False, enable_progress_bar=False,
                           enable_model_summary=False, default_root_dir=OUT)
    model = Net()
    trainer.fit(model, loader, ckpt_path=OPTIONS.get("resume_from"))
    torch.save({**model.report, "world_size": trainer.world_size},
               os.path.join(OUT, f"rank{trainer.global_rank}.pt"))


if __name__ == "__main__":
    main()
