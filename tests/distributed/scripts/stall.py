"""A user's script whose ranks stall, run as a file by tests/distributed/test_stall.py:
`python stall.py OUT_DIR '{"case": ..., "stall_warning": 2, "timeout": 8}'`.

Cases:
  one_sided_barrier  rank 0 calls `trainer.strategy.barrier()` alone at the end of epoch 0: the ranks go out of
                     step and wait until the collective timeout
  slow_steps         every rank sleeps 3 s in the same training_step; at the end of epoch 0 the run saves a
                     checkpoint that rank 0 takes 3 s to write; then the run finishes
  timeouts           records, on every rank, the process group's timeout (OUT_DIR/timeout{rank}), then finishes

Every rank writes its pid to OUT_DIR/pid{rank} at its first batch; `one_sided_barrier` writes the time rank 0
enters the barrier to OUT_DIR/barrier_at.
"""
import json
import os
import sys
import time
from datetime import timedelta

import torch
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

import volt
import volt.checkpoint
from volt.strategies import DDPStrategy

OUT = sys.argv[1]
OPTIONS = json.loads(sys.argv[2])
CASE = OPTIONS["case"]


class Net(volt.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(4, 1)

    def training_step(self, batch, batch_idx):
        if batch_idx == 0 and self.current_epoch == 0:
            with open(os.path.join(OUT, f"pid{self.global_rank}"), "w") as f:
                f.write(str(os.getpid()))
        if CASE == "slow_steps" and batch_idx == 1 and self.current_epoch == 0:
            time.sleep(3)
        x, y = batch
        return F.mse_loss(self.layer(x), y)

    def on_train_epoch_end(self):
        if CASE == "one_sided_barrier" and self.global_rank == 0 and self.current_epoch == 0:
            with open(os.path.join(OUT, "barrier_at"), "w") as f:
                f.write(repr(time.time()))
            self.trainer.strategy.barrier()
        if CASE == "slow_steps" and self.current_epoch == 0:
            self.trainer.save_checkpoint(os.path.join(OUT, "epoch0.ckpt"))

    def on_fit_end(self):
        if CASE == "timeouts":
            backend = torch.distributed.group.WORLD._get_backend(torch.device("cpu"))
            with open(os.path.join(OUT, f"timeout{self.global_rank}"), "w") as f:
                f.write(str(backend.options._timeout.total_seconds()))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def slow_save(checkpoint, path, *args, **kwargs):
    time.sleep(3)
    return SAVE(checkpoint, path, *args, **kwargs)


SAVE = volt.checkpoint.save_checkpoint


def main() -> None:
    if CASE == "slow_steps":
        volt.checkpoint.save_checkpoint = slow_save  # only rank 0 writes checkpoints
    kwargs = {}
    if "timeout" in OPTIONS:
        kwargs["timeout"] = timedelta(seconds=OPTIONS["timeout"])
    if "stall_warning" in OPTIONS:
        kwargs["stall_warning"] = OPTIONS["stall_warning"]
    strategy = DDPStrategy(start_method=OPTIONS.get("start_method", "popen"), **kwargs)
    data = TensorDataset(torch.randn(16, 4), torch.randn(16, 1))
    trainer = volt.Trainer(accelerator="cpu", devices=2, strategy=strategy, max_epochs=2, logger=False,
                           enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                           default_root_dir=OUT)
    trainer.fit(Net(), DataLoader(data, batch_size=4))


if __name__ == "__main__":
    main()
