"""A user's training script, run as a file by the distributed tests: `python train.py OUT_DIR '{"option": ...}'`.

Each rank writes what it saw to OUT_DIR/rank{global_rank}.pt (torch.save of a dict). Phases (option "phases"):
  equiv    fit without shuffling (options: batch_size, accumulate, clip); val metrics logged with sync_dist in
           mean/sum/max/min; all_gather; records which ranks wrote checkpoint files (through a CheckpointIO plugin)
           and the final weights
  sampler  fit with shuffle=True for 2 epochs; records the training indices of every epoch and the val indices
  resume   fit with a checkpoint every 3 steps, then a second fit resumed from the step-3 checkpoint
  uneven   validate and test on shards of unequal length (11 samples, batch 5: 2 and 1 batches) and on a dataset
           smaller than the world (1 sample), with per-step collectives in the step; records the metrics, how many
           steps ran and what was gathered
  agree    EarlyStopping on a metric that only rank 1 sees stop improving; records the epoch each rank stopped at
  fail     raises (or SIGKILLs itself) on rank `fail_rank` at batch 3 ("fail": "raise" | "kill"), after writing
           the time to OUT_DIR/failed_at; or ("fail": "slow") trains slowly until stopped from outside. Every
           rank writes its pid to OUT_DIR/pid{rank} at batch 1
"""
import json
import os
import signal
import sys
import time

import torch
from torch.nn import functional as F
from torch.utils.data import DataLoader, Dataset

import volt
from volt.callbacks import EarlyStopping, ModelCheckpoint
from volt.plugins import TorchCheckpointIO

OUT = sys.argv[1]
OPTIONS = json.loads(sys.argv[2]) if len(sys.argv) > 2 else {}


class Indexed(Dataset):
    """Regression samples that also return their index, so ranks can report which samples they saw."""

    def __init__(self, n: int, seed: int) -> None:
        generator = torch.Generator().manual_seed(seed)
        self.x = torch.randn(n, 8, generator=generator)
        self.y = torch.randn(n, 1, generator=generator)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i], self.y[i], i


class Net(volt.LightningModule):
    def __init__(self, fail: str = "", fail_rank: int = 1) -> None:
        super().__init__()
        self.l1 = torch.nn.Linear(8, 16)
        self.l2 = torch.nn.Linear(16, 1)
        if OPTIONS.get("unused"):
            self.unused = torch.nn.Linear(2, 2)  # never called: needs find_unused_parameters under DDP
        self.fail, self.fail_rank = fail, fail_rank
        self.train_indices, self.val_indices, self.gathered = [], [], None

    def forward(self, x):
        return self.l2(torch.tanh(self.l1(x)))

    def on_fit_start(self):
        """Under DDP, count the gradient all-reduces (accumulating batches must skip them)."""
        from torch.nn.parallel import DistributedDataParallel

        if isinstance(self.trainer.model, DistributedDataParallel):
            from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook

            self.syncs = 0

            def counting_allreduce(state, bucket):
                self.syncs += 1
                return allreduce_hook(state, bucket)

            self.trainer.model.register_comm_hook(None, counting_allreduce)

    def training_step(self, batch, batch_idx):
        x, y, index = batch
        if self.fail and batch_idx == 1:  # so the test can check that no process outlives the job
            with open(os.path.join(OUT, f"pid{self.global_rank}"), "w") as f:
                f.write(str(os.getpid()))
        if self.fail in ("raise", "kill") and batch_idx == 3 and self.global_rank == self.fail_rank:
            with open(os.path.join(OUT, "failed_at"), "w") as f:
                f.write(repr(time.time()))
            if self.fail == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
            raise ValueError(f"planned failure on rank {self.global_rank}")
        if self.fail == "slow":  # a long run, stopped from outside
            time.sleep(0.05)
        self.train_indices.append((self.current_epoch, index.tolist()))
        loss = F.mse_loss(self(x), y)
        self.log("train_loss", loss, sync_dist=True)
        return loss

    def on_validation_epoch_start(self):
        self.val_indices = []  # keep the last validation run's only

    def validation_step(self, batch, batch_idx):
        x, y, index = batch
        self.val_indices.extend(index.tolist())
        errors = (self(x) - y).pow(2)
        self.log("val_loss", errors.mean(), sync_dist=True)
        self.log("val_sum", errors.sum(), reduce_fx="sum", sync_dist=True)
        self.log("val_max", errors.max(), reduce_fx="max", sync_dist=True)
        self.log("val_min", errors.min(), reduce_fx="min", sync_dist=True)

    def on_validation_epoch_end(self):
        self.gathered = self.all_gather({"rank": torch.tensor(float(self.global_rank)),
                                         "pair": torch.full((2,), float(self.global_rank))})

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1, momentum=0.9)


class RankDependent(Net):
    """Only rank 1's metric stops improving (after epoch 1): EarlyStopping must stop every rank together."""

    def on_validation_epoch_end(self):
        value = 1.0 if (self.global_rank == 1 and self.current_epoch >= 1) else 1.0 / (self.current_epoch + 1)
        self.log("score", torch.tensor(value))


def loaders(batch_size: int, shuffle: bool = False):
    train = DataLoader(Indexed(64, seed=0), batch_size=batch_size, shuffle=shuffle)
    val = DataLoader(Indexed(63, seed=1), batch_size=5)  # odd size: ranks get 32 and 31 samples
    return train, val


def trainer(**kwargs) -> volt.Trainer:
    strategy = OPTIONS.get("strategy", "ddp")
    if strategy == "ddp_find_unused":
        from volt.strategies import DDPStrategy

        strategy = DDPStrategy(find_unused_parameters=True)
    if strategy == "ddp_spawn_find_unused":
        from volt.strategies import DDPStrategy

        strategy = DDPStrategy(start_method="spawn", find_unused_parameters=True)
    if strategy == "fsdp_full":  # one checkpoint file, gathered to rank 0 (FSDP's default is a sharded folder)
        from volt.strategies import FSDPStrategy

        strategy = FSDPStrategy(state_dict_type="full")
    defaults = dict(accelerator="cpu", devices=OPTIONS.get("devices", 2), num_nodes=OPTIONS.get("num_nodes", 1),
                    strategy=strategy, logger=False, enable_progress_bar=False, enable_model_summary=False,
                    default_root_dir=OUT, num_sanity_val_steps=0)
    defaults.update(kwargs)
    return volt.Trainer(**defaults)


def weights(module) -> dict:
    state = module.trainer.strategy.lightning_module_state_dict()
    return {k: v.detach().cpu().clone() for k, v in state.items()}


class RecordingIO(TorchCheckpointIO):
    """volt's own files, through a CheckpointIO plugin that notes which rank writes and when it is torn down."""

    def __init__(self) -> None:
        self.writers, self.teardowns = [], 0

    def save_checkpoint(self, checkpoint, path, storage_options=None):
        from volt.utilities.rank_zero import rank_zero_only

        self.writers.append(rank_zero_only.rank)
        super().save_checkpoint(checkpoint, path, storage_options)

    def teardown(self):
        self.teardowns += 1


def phase_equiv(report: dict) -> None:
    io = RecordingIO()
    volt.seed_everything(0)
    model = Net()
    checkpoint = ModelCheckpoint(dirpath=os.path.join(OUT, "ckpt"), monitor="val_loss", save_top_k=1)
    # the ranks move checkpoint callbacks last: their states must still reach the right callbacks after a spawn
    extra = [EarlyStopping(monitor="val_loss", patience=100)] if OPTIONS.get("checkpoint_not_last") else []
    t = trainer(max_epochs=2, accumulate_grad_batches=OPTIONS.get("accumulate", 1), plugins=[io],
                gradient_clip_val=OPTIONS.get("clip"), callbacks=[checkpoint, *extra], enable_model_summary=bool(extra))
    train, val = loaders(OPTIONS.get("batch_size", 4))
    t.fit(model, train, val)
    report.update(
        weights=weights(model),
        metrics={k: float(v) for k, v in t.callback_metrics.items()},
        gathered=model.gathered,
        val_indices=model.val_indices,
        checkpoint_writers=io.writers,
        checkpoint_io_teardowns=io.teardowns,
        best_model_path=checkpoint.best_model_path,
        best_model_score=None if checkpoint.best_model_score is None else float(checkpoint.best_model_score),
        global_step=t.global_step,
        world_size=t.world_size,
        gradient_syncs=getattr(model, "syncs", None),
    )
    if t.strategy.strategy_name == "fsdp" and t.strategy.state_dict_type == "full":
        restored = Net()
        restored.load_state_dict(torch.load(checkpoint.best_model_path, weights_only=True)["state_dict"])
        report["checkpoint_loads"] = True


def phase_sampler(report: dict) -> None:
    volt.seed_everything(0)
    model = Net()
    train, val = loaders(4, shuffle=True)
    trainer(max_epochs=2, enable_checkpointing=False).fit(model, train, val)
    report.update(train_indices=model.train_indices, shuffled_val_indices=model.val_indices)


def phase_resume(report: dict) -> None:
    ckpt_dir = os.path.join(OUT, "resume")
    volt.seed_everything(0)
    model = Net()
    every = ModelCheckpoint(dirpath=ckpt_dir, every_n_train_steps=3, save_top_k=-1)
    train, val = loaders(4, shuffle=True)
    trainer(max_epochs=2, callbacks=[every]).fit(model, train, val)
    volt.seed_everything(0)  # as a rerun of the same script would: the shuffled order derives from this seed
    resumed = Net()
    train, val = loaders(4, shuffle=True)
    trainer(max_epochs=2, enable_checkpointing=False).fit(
        resumed, train, val, ckpt_path=os.path.join(ckpt_dir, "epoch=0-step=3.ckpt"))
    report.update(uninterrupted=weights(model), resumed=weights(resumed))


class PerStepCollectives(Net):
    """Evaluation steps that talk to the other ranks at every batch: on_step sync_dist and all_gather."""

    def validation_step(self, batch, batch_idx):
        x, y, index = batch
        errors = (self(x) - y).pow(2)
        self.steps += 1
        self.gathered_sizes.append(self.all_gather(torch.tensor(len(x))).tolist())
        self.log("step_mean", errors.mean(), on_step=True, on_epoch=False, sync_dist=True)
        self.log("step_max", errors.max(), on_step=True, on_epoch=False, reduce_fx="max", sync_dist=True)
        self.log("loss", errors.mean(), sync_dist=True)
        self.log("sum", errors.sum(), reduce_fx="sum", sync_dist=True)
        self.log("max", errors.max(), reduce_fx="max", sync_dist=True)
        self.log("min", errors.min(), reduce_fx="min", sync_dist=True)
        return {"n": len(x)}

    test_step = validation_step

    def on_validation_epoch_start(self):
        self.steps, self.gathered_sizes = 0, []

    on_test_epoch_start = on_validation_epoch_start

    def on_validation_epoch_end(self):
        pass

    def validation_epoch_end(self, outputs):  # 1.x form: the outputs of real batches only, no filler
        self.samples_in_outputs = sum(output["n"] for output in outputs)


def phase_uneven(report: dict) -> None:
    torch.manual_seed(0)
    model = PerStepCollectives()
    for size in (11, 1):
        t = trainer(logger=volt.loggers.CSVLogger(OUT, name=f"size{size}"))
        loader = DataLoader(Indexed(size, seed=2), batch_size=5)
        validated = t.validate(model, loader, verbose=False)[0]
        report[f"validate{size}"] = dict(metrics=validated, steps=model.steps, gathered=model.gathered_sizes,
                                         step_metrics=_step_rows(t), samples_in_outputs=model.samples_in_outputs)
        tested = t.test(model, loader, verbose=False)[0]
        report[f"test{size}"] = dict(metrics=tested, steps=model.steps)


def _step_rows(t) -> list:
    """The per-step values rank 0's logger wrote (other ranks write none)."""
    import csv

    if not t.is_global_zero:
        return []
    with open(os.path.join(t.logger.log_dir, "metrics.csv")) as f:
        return [{k: float(v) for k, v in row.items() if v and k.startswith("step_")} for row in csv.DictReader(f)
                if row.get("step_mean")]


def phase_agree(report: dict) -> None:
    volt.seed_everything(0)
    model = RankDependent()
    stop = EarlyStopping(monitor="score", mode="min", patience=1)
    t = trainer(max_epochs=10, enable_checkpointing=False, callbacks=[stop])
    train, val = loaders(16)
    t.fit(model, train, val)
    report.update(stopped_epoch=t.current_epoch)


class RecordStop(volt.Callback):
    """Writes OUT_DIR/stopped{rank}: the number of training batches this rank finished before it stopped."""

    def on_exception(self, trainer, pl_module, exception):
        with open(os.path.join(OUT, f"stopped{trainer.global_rank}"), "w") as f:
            f.write(f"{trainer.fit_loop.state.total_batch_idx} {type(exception).__name__}")


def phase_fail(report: dict) -> None:
    model = Net(fail=OPTIONS["fail"], fail_rank=OPTIONS.get("fail_rank", 1))
    train, val = loaders(2)
    trainer(max_epochs=1000 if OPTIONS["fail"] == "slow" else 1, callbacks=[RecordStop()]).fit(model, train, val)


def main() -> None:
    report: dict = {}
    for phase in OPTIONS.get("phases", ["equiv"]):
        globals()[f"phase_{phase}"](report)
    from volt.utilities.rank_zero import rank_zero_only

    report["rank"] = rank_zero_only.rank
    torch.save(report, os.path.join(OUT, f"rank{rank_zero_only.rank}.pt"))


if __name__ == "__main__":
    main()
