"""A small but complete training run used by the fault-tolerance tests, in-process or as a script.

    python run_training.py config.json

The run uses every source of randomness exact resume has to get right: a shuffled DataLoader without a
generator (or a stream: "iterable" True, "stateful", "hf"; torchdata's StatefulDataLoader with "stateful_loader"),
dropout, numpy and `random` in `training_step`, numpy/torch/`random` noise inside the dataset (in the
worker processes when `num_workers` > 0), step and epoch LR schedulers, optional fp16 autocast with a GradScaler,
accumulation, validation inside the epoch, EarlyStopping and a ModelCheckpoint; optionally BatchNorm and more
callbacks with state of their own (weight averaging, fine-tuning, an accumulation schedule). It can send itself a signal
(SIGKILL by default) at a chosen hook and global step, and writes its final state to `<root>/final.pt` for the tests
to compare.
"""
import json
import os
import random
import signal
import sys

import numpy as np
import torch
from torch.nn import functional as F
from torch.utils.data import DataLoader, Dataset, IterableDataset, get_worker_info

import volt
from volt.callbacks import EarlyStopping, ModelCheckpoint
from volt.loggers import CSVLogger, TensorBoardLogger
from volt.utilities.seed import get_rng_states

DEFAULTS = dict(
    root=None, seed=7, seed_workers=False, max_epochs=3, max_steps=-1, n=24, batch_size=4, num_workers=0,
    persistent_workers=False, iterable=False, stateful_loader=False, generator=False, accumulate=1,
    val_check_interval=1.0, precision="32-true", early_stopping=False,
    checkpoint={"every_n_train_steps": 1, "save_last": True, "save_top_k": -1},
    save_everywhere=False, signal=None, crash_at_step=None, ckpt_path=None, log_every_n_steps=1, tensorboard=False,
    schedulers=("step", "epoch"), batchnorm=False, callbacks={},
)


class NoisyData(Dataset):
    """Fixed points plus fresh noise from torch, numpy and `random` on every access."""

    def __init__(self, n: int) -> None:
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(n, 6, generator=g)
        self.y = self.x.sum(1, keepdim=True) + 0.1 * torch.randn(n, 1, generator=g)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i):
        noise = 0.01 * torch.randn(6) + 0.01 * float(np.random.rand()) + 0.01 * random.random()
        return self.x[i] + noise, self.y[i]


class NoisyStream(IterableDataset):
    """The same samples as a stream (no length, no sampler): resume replays the consumed batches. Its order and
    noise come from a generator seeded from the global RNG when iteration starts."""

    def __init__(self, n: int) -> None:
        self.data = NoisyData(n)

    def __iter__(self):
        g = torch.Generator().manual_seed(int(torch.randint(2**31, ())))
        order = torch.randperm(len(self.data), generator=g).tolist()
        return ((self.data.x[i] + 0.01 * torch.randn(6, generator=g), self.data.y[i]) for i in order)


class StatefulNoisyStream(IterableDataset):
    """A user's own resumable stream: fixed points in order plus noise from a generator of its own, seeded from the
    global RNG when iteration starts, with the `state_dict()`/`load_state_dict()` pair (its position and the
    generator's state), so a resumed run continues it without replaying. In worker processes, worker w yields every
    num_workers-th point. `served` counts the points this copy produced."""

    def __init__(self, n: int) -> None:
        self.data = NoisyData(n)
        self.position, self.generator, self._resume, self.served = 0, None, None, 0

    def __iter__(self):
        info = get_worker_info()
        first, step = (info.id, info.num_workers) if info is not None else (0, 1)
        state, self._resume = self._resume or None, None  # {}: saved before this copy had started
        self.generator = torch.Generator()
        if state is None:
            self.position = first
            self.generator.manual_seed(int(torch.randint(2**31, ())))
        else:
            self.position = state["position"]
            self.generator.set_state(state["generator"])
        while self.position < len(self.data.x):
            i = self.position
            self.position += step
            self.served += 1
            yield self.data.x[i] + 0.01 * torch.randn(6, generator=self.generator), self.data.y[i]

    def state_dict(self):
        return {"position": self.position, "generator": self.generator.get_state()} if self.generator else {}

    def load_state_dict(self, state):
        self._resume = state


def hugging_face_stream(n: int):
    """The same points as a Hugging Face `datasets` IterableDataset (built locally, two shards)."""
    import datasets

    data = NoisyData(n)
    table = datasets.Dataset.from_dict({"x": data.x.tolist(), "y": data.y.tolist()})
    return table.to_iterable_dataset(num_shards=2).with_format("torch")


def collate_pairs(rows):
    """Hugging Face rows ({"x": ..., "y": ...}) as the (x, y) batches the model takes."""
    return torch.stack([row["x"] for row in rows]), torch.stack([row["y"] for row in rows])


class Net(volt.LightningModule):
    def __init__(self, lr: float = 0.05, schedulers=("step", "epoch"), batchnorm: bool = False):
        super().__init__()
        self.save_hyperparameters("lr")
        self.schedulers = schedulers
        norm = [torch.nn.BatchNorm1d(16)] if batchnorm else []
        self.net = torch.nn.Sequential(torch.nn.Linear(6, 16), *norm, torch.nn.ReLU(), torch.nn.Dropout(0.3),
                                       torch.nn.Linear(16, 1))

    @property
    def backbone(self):  # what BackboneFinetuning freezes and unfreezes
        return self.net[0]

    def training_step(self, batch, batch_idx):
        x, y = batch
        x = x * (1 + 0.01 * float(np.random.randn())) + 0.01 * random.random()
        loss = F.mse_loss(self.net(x).float(), y)
        self.log("train_loss", loss, on_step=True, on_epoch=True, prog_bar=True)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_loss", F.mse_loss(self.net(x).float(), y))

    def configure_optimizers(self):
        # SGD with momentum: every gradient bit shows in the weights (Adam's first steps hide a lost gradient)
        trainable = [p for p in self.parameters() if p.requires_grad]  # a fine-tuning callback adds the rest
        optimizer = torch.optim.SGD(trainable, lr=self.hparams.lr, momentum=0.9, weight_decay=1e-3)
        schedulers = {"step": {"scheduler": torch.optim.lr_scheduler.StepLR(optimizer, step_size=2, gamma=0.9),
                               "interval": "step"},
                      "epoch": {"scheduler": torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=0.7)}}
        return [optimizer], [schedulers[kind] for kind in self.schedulers]


class SaveEverywhere(ModelCheckpoint):
    """Writes a checkpoint at every point where ModelCheckpoint can save: every batch end (also inside an
    accumulation window), validation end, epoch end. A ModelCheckpoint subclass, so it runs where checkpoint
    callbacks run and its files are written the way ModelCheckpoint writes them.
    """

    def __init__(self, dirpath: str) -> None:
        super().__init__(dirpath=dirpath, save_top_k=0)
        self.count = 0

    def _write(self, trainer, where: str) -> None:
        name = f"{self.count:03d}-{where}-e{trainer.current_epoch}-s{trainer.global_step}.ckpt"
        self._save_checkpoint(trainer, os.path.join(self.dirpath, name))  # as ModelCheckpoint's own saves
        self.count += 1

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self._write(trainer, f"batch{batch_idx}")

    def on_validation_end(self, trainer, pl_module):
        if not trainer.sanity_checking:
            self._write(trainer, "val")

    def on_train_epoch_end(self, trainer, pl_module):
        self._write(trainer, "epochend")

    def state_dict(self):
        return {"count": self.count}

    def load_state_dict(self, state):
        self.count = state["count"]


class SendSignal(volt.Callback):
    """Send `signum` to this process `times` times at `hook`, once `global_step` reaches `step`. SIGKILL (the
    default) ends the process on the spot; other signals go to volt's handlers."""

    def __init__(self, hook: str, step: int, signum: str = "SIGKILL", times: int = 1) -> None:
        self.hook, self.step, self.signum, self.times = hook, step, getattr(signal, signum), times

    def _maybe_send(self, trainer, hook):
        if hook == self.hook and trainer.global_step >= self.step and self.times:
            for _ in range(self.times):
                os.kill(os.getpid(), self.signum)
            self.times = 0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self._maybe_send(trainer, "on_train_batch_start")

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        self._maybe_send(trainer, "on_before_optimizer_step")

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        if not trainer.sanity_checking:
            self._maybe_send(trainer, "on_validation_batch_end")

    def on_train_epoch_start(self, trainer, pl_module):
        self._maybe_send(trainer, "on_train_epoch_start")


class Crash(volt.Callback):
    """Raise at the start of the batch that follows optimizer step `step` (the process survives, fit fails)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step >= self.step:
            raise RuntimeError(f"crash at step {trainer.global_step}")


def loaders(cfg):
    streams = {True: NoisyStream, "stateful": StatefulNoisyStream, "hf": hugging_face_stream}
    data = streams[cfg["iterable"]](cfg["n"]) if cfg["iterable"] else NoisyData(cfg["n"])
    options = dict(batch_size=cfg["batch_size"], num_workers=cfg["num_workers"],
                   persistent_workers=cfg["persistent_workers"] and cfg["num_workers"] > 0)
    generator = torch.Generator().manual_seed(3) if cfg["generator"] else None  # the order's own generator
    loader = DataLoader
    if cfg["stateful_loader"]:
        from torchdata.stateful_dataloader import StatefulDataLoader as loader
    collate = {"collate_fn": collate_pairs} if cfg["iterable"] == "hf" else {}
    train = loader(data, shuffle=not cfg["iterable"], generator=generator, **options, **collate)
    val = DataLoader(NoisyData(8), **options)
    return train, val


def extra_callbacks(cfg):
    """The callbacks named in `cfg["callbacks"]` ({class name in volt.callbacks: its arguments})."""
    return [getattr(volt.callbacks, name)(**options) for name, options in cfg["callbacks"].items()]


def run(cfg):
    """Train with `cfg` (see DEFAULTS); returns the Trainer. Writes `<root>/final.pt` when fit returns."""
    cfg = {**DEFAULTS, **cfg}
    root = cfg["root"]
    volt.seed_everything(cfg["seed"], workers=cfg["seed_workers"], verbose=False)
    callbacks = [ModelCheckpoint(dirpath=os.path.join(root, "ckpt"), **cfg["checkpoint"])]
    if cfg["early_stopping"]:  # True, or EarlyStopping arguments
        options = cfg["early_stopping"] if isinstance(cfg["early_stopping"], dict) else {}
        callbacks.append(EarlyStopping(monitor="val_loss", **{"patience": 1, "min_delta": 0.5, **options}))
    if cfg["save_everywhere"]:
        callbacks.append(SaveEverywhere(os.path.join(root, "all")))
    if cfg["signal"]:
        callbacks.append(SendSignal(**cfg["signal"]))
    if cfg["crash_at_step"] is not None:
        callbacks.append(Crash(cfg["crash_at_step"]))
    callbacks += extra_callbacks(cfg)
    loggers = [CSVLogger(root, name="logs", version=0)]
    if cfg["tensorboard"]:
        loggers.append(TensorBoardLogger(root, name="tb", version=0))
    trainer = volt.Trainer(
        default_root_dir=root, max_epochs=cfg["max_epochs"], max_steps=cfg["max_steps"],
        accumulate_grad_batches=cfg["accumulate"], val_check_interval=cfg["val_check_interval"],
        precision=cfg["precision"], limit_val_batches=2, log_every_n_steps=cfg["log_every_n_steps"],
        logger=loggers, callbacks=callbacks,
        enable_progress_bar=False, enable_model_summary=False,
    )
    model = Net(schedulers=list(cfg["schedulers"]), batchnorm=cfg["batchnorm"])
    train, val = loaders(cfg)
    trainer.fit(model, train, val, ckpt_path=cfg["ckpt_path"])
    torch.save(final_state(trainer), os.path.join(root, "final.pt"))
    return trainer


def final_state(trainer):
    """Everything that must come out bit-identical from an interrupted-and-resumed run."""
    early = trainer.early_stopping_callback
    checkpoint = trainer.checkpoint_callback
    name = os.path.basename
    return {
        "params": {k: v.clone() for k, v in trainer.lightning_module.state_dict().items()},
        "optimizer": trainer.optimizers[0].state_dict(),
        "schedulers": [c.scheduler.state_dict() for c in trainer.lr_scheduler_configs],
        "scaler": trainer.scaler.state_dict() if trainer.scaler is not None else {},
        "rng": get_rng_states(),
        "global_step": trainer.global_step,
        "epoch": trainer.current_epoch,
        "early_stopping": early.state_dict() if early is not None else None,
        "checkpoints": {  # file names only: the runs compared live in different folders
            "files": sorted(os.listdir(checkpoint.dirpath)) if os.path.isdir(checkpoint.dirpath) else [],
            "best_k_models": {name(k): v for k, v in checkpoint.best_k_models.items()},
            "best": name(checkpoint.best_model_path), "last": name(checkpoint.last_model_path),
            "best_model_score": checkpoint.best_model_score,
        },
        "callback_metrics": dict(trainer.callback_metrics),
        "logged_metrics": dict(trainer.logged_metrics),
        "callbacks": {type(cb).__name__: cb.state_dict() for cb in trainer.callbacks
                      if type(cb).__name__ in ("StochasticWeightAveraging", "EMAWeightAveraging", "BackboneFinetuning",
                                               "GradientAccumulationScheduler")},
        "average": averaged_weights(trainer),
        "requires_grad": {n: p.requires_grad for n, p in trainer.lightning_module.named_parameters()},
    }


def averaged_weights(trainer):
    """The weight average an averaging callback keeps (its own copy of the model), if there is one."""
    for callback in trainer.callbacks:
        average = getattr(callback, "_average_model", None)
        if average is not None:
            return {k: v.clone() for k, v in average.state_dict().items()}
    return None


if __name__ == "__main__":
    with open(sys.argv[1]) as f:
        run(json.load(f))
