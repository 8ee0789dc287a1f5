"""A user's training script for the recovery tests: the same file runs the first attempt and every restart.

    python recover.py OUT_DIR '{"option": ...}'          (volt's launcher; "max_restarts": N for restarts)
    torchrun --nproc-per-node 2 --max-restarts 1 recover.py OUT_DIR '{...}'

2 ranks, DDP on gloo, 2 epochs of a stateful stream of which each rank reads its own shard (its state is saved
per rank); ModelCheckpoint every 2 optimizer steps with last.ckpt. Options:
  max_restarts  DDPStrategy(max_restarts=...) (volt's launcher)
  fsdp          FSDPStrategy(max_restarts=...) instead: sharded checkpoint folders, written in the background
  kill          {"rank": r, "step": s, "attempts": [0, ...]}: rank r SIGKILLs itself at the start of the batch
                after global step s, in the listed attempts (TORCHELASTIC_RESTART_COUNT, 0 for the first start),
                after hanging for 1.5 s (so that every rank's watchdog publishes that step: what was lost)
Each rank writes OUT_DIR/rank{r}.pt: final weights, global step, and how many points its stream produced in the
last attempt.
"""
import json
import os
import signal
import sys
import time

import torch
from torch.nn import functional as F
from torch.utils.data import DataLoader, IterableDataset

import volt
from volt.callbacks import ModelCheckpoint

OUT = sys.argv[1]
OPTIONS = json.loads(sys.argv[2]) if len(sys.argv) > 2 else {}
N = 64


class RankStream(IterableDataset):
    """This rank's shard of N fixed points (every world-size-th), with noise from a generator of its own; resumable
    through state_dict()/load_state_dict(). `served` counts the points it produced in this process."""

    def __init__(self) -> None:
        generator = torch.Generator().manual_seed(0)
        self.x = torch.randn(N, 8, generator=generator)
        self.y = self.x.sum(1, keepdim=True)
        self.position, self.generator, self._resume, self.served = 0, None, None, 0

    def __iter__(self):
        rank, world = torch.distributed.get_rank(), torch.distributed.get_world_size()
        state, self._resume = self._resume, None
        self.generator = torch.Generator()
        if state is None:
            self.position = rank
            self.generator.manual_seed(int(torch.randint(2**31, ())))
        else:
            self.position = state["position"]
            self.generator.set_state(state["generator"])
        while self.position < N:
            i = self.position
            self.position += world
            self.served += 1
            yield self.x[i] + 0.01 * torch.randn(8, generator=self.generator), self.y[i]

    def state_dict(self):
        return {"position": self.position, "generator": self.generator.get_state()}

    def load_state_dict(self, state):
        self._resume = state


class Net(volt.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Dropout(0.2),
                                       torch.nn.Linear(16, 1))

    def training_step(self, batch, batch_idx):
        x, y = batch
        return F.mse_loss(self.net(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.05, momentum=0.9)


class Kill(volt.Callback):
    def __init__(self, rank: int, step: int, attempts) -> None:
        self.rank, self.step, self.attempts = rank, step, attempts

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        attempt = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))
        if trainer.global_rank == self.rank and trainer.global_step == self.step and attempt in self.attempts:
            time.sleep(1.5)
            os.kill(os.getpid(), signal.SIGKILL)


def main() -> None:
    volt.seed_everything(7)
    from volt.strategies import DDPStrategy, FSDPStrategy

    fsdp = OPTIONS.get("fsdp", False)
    callbacks = [ModelCheckpoint(dirpath=os.path.join(OUT, "ckpt"), every_n_train_steps=2, save_last=True,
                                 save_top_k=1, async_save=fsdp)]
    if OPTIONS.get("kill"):
        callbacks.append(Kill(**OPTIONS["kill"]))
    strategy = (FSDPStrategy if fsdp else DDPStrategy)(max_restarts=OPTIONS.get("max_restarts"))
    trainer = volt.Trainer(accelerator="cpu", devices=2, strategy=strategy, max_epochs=2, callbacks=callbacks,
                           logger=False, enable_progress_bar=False, enable_model_summary=False, default_root_dir=OUT)
    data = DataLoader(RankStream(), batch_size=4)
    model = Net()
    trainer.fit(model, data)
    weights = {k: v.full_tensor() if hasattr(v, "full_tensor") else v.clone() for k, v in model.state_dict().items()}
    torch.save({"weights": weights, "global_step": trainer.global_step, "served": data.dataset.served},
               os.path.join(OUT, f"rank{trainer.global_rank}.pt"))


if __name__ == "__main__":
    main()
