"""GPU check: volt on one CUDA device against a raw loop, as a world of one on nccl and with mixed precision.

Runs, on one GPU, a hand-written loop and volt's Trainer on the same MLP and data, for:
  * fp32, single device                    (strategy="auto")
  * fp32, DDP as a world of one on nccl    (strategy="ddp", devices=1: the process group, DDP wrapper, sampler)
  * 16-mixed (autocast fp16 + GradScaler) and bf16-mixed (autocast bf16)
and prints samples/s for each with the ratio volt / raw. It also checks that training ran where it should (nccl
backend, CUDA weights, finite loss that went down). Exits non-zero if a check fails.

On a machine without a GPU it prints "no GPU: skipping ..." and exits 0.

    python benchmarks/gpu_check.py [--steps 300]
"""
import argparse
import os
import sys
import time

import torch
from torch.utils.data import DataLoader, TensorDataset

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.join(os.path.dirname(HERE), "src")
if SRC not in sys.path:
    sys.path.insert(0, SRC)

BATCH = 256
WARMUP = 30
_DTYPES = {"16-mixed": torch.float16, "bf16-mixed": torch.bfloat16}


def make_data(steps: int) -> TensorDataset:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(steps * BATCH, 512, generator=g)
    y = (x[:, :10].argmax(dim=1))  # learnable: the loss must go down
    return TensorDataset(x, y)


def make_net() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(512, 1024), torch.nn.ReLU(), torch.nn.Linear(1024, 1024),
                               torch.nn.ReLU(), torch.nn.Linear(1024, 10))


def raw_loop(dataset: TensorDataset, precision: str) -> dict:
    device = torch.device("cuda", 0)
    net = make_net().to(device)
    opt = torch.optim.SGD(net.parameters(), lr=0.05)
    dtype = _DTYPES.get(precision)
    scaler = torch.amp.GradScaler("cuda") if precision == "16-mixed" else None
    losses, stamps = [], []
    for x, y in DataLoader(dataset, batch_size=BATCH, pin_memory=True):
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with torch.autocast("cuda", dtype=dtype, enabled=dtype is not None):
            loss = torch.nn.functional.cross_entropy(net(x), y)
        opt.zero_grad()
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
        else:
            loss.backward()
            opt.step()
        losses.append(loss.detach())
        if len(losses) == WARMUP or len(losses) == len(dataset) // BATCH:
            torch.cuda.synchronize()
            stamps.append(time.perf_counter())
    return {"samples_per_s": (len(losses) - WARMUP) * BATCH / (stamps[1] - stamps[0]),
            "first_loss": losses[0].item(), "last_loss": losses[-1].item()}


def volt_loop(dataset: TensorDataset, precision: str, strategy: str) -> dict:
    import volt

    class Net(volt.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = make_net()
            self.losses = []

        def training_step(self, batch, batch_idx):
            x, y = batch
            loss = torch.nn.functional.cross_entropy(self.net(x), y)
            self.losses.append(loss.detach())
            return loss

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.05)

    class Clock(volt.Callback):
        """Times the steps after warm-up, and notes the process group backend the run used."""

        def __init__(self):
            self.stamps = []
            self.backend = None

        def on_train_start(self, trainer, module):
            if torch.distributed.is_available() and torch.distributed.is_initialized():
                self.backend = torch.distributed.get_backend()

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            if batch_idx + 1 in (WARMUP, trainer.num_training_batches):
                torch.cuda.synchronize()
                self.stamps.append(time.perf_counter())

    model, clock = Net(), Clock()
    trainer = volt.Trainer(accelerator="gpu", devices=1, strategy=strategy, precision=precision, max_epochs=1,
                           logger=False, enable_checkpointing=False, enable_progress_bar=False,
                           enable_model_summary=False, callbacks=[clock])
    trainer.fit(model, DataLoader(dataset, batch_size=BATCH, pin_memory=True))
    steps = len(model.losses)
    return {"samples_per_s": (steps - WARMUP) * BATCH / (clock.stamps[1] - clock.stamps[0]),
            "first_loss": model.losses[0].item(), "last_loss": model.losses[-1].item(), "backend": clock.backend,
            "device": next(model.parameters()).device.type}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=300)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print(f"no GPU: skipping the GPU checks (torch {torch.__version__}, CUDA build: "
              f"{torch.version.cuda is not None}, no CUDA device visible)")
        return 0
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")  # the nccl world of one rendezvous on this machine
    dataset = make_data(args.steps)
    print(f"GPU: {torch.cuda.get_device_name(0)}, torch {torch.__version__}, MLP 512-1024-1024-10, batch {BATCH}, "
          f"{args.steps} steps")
    print(f"{'run':<28} {'raw samples/s':>14} {'volt samples/s':>15} {'volt/raw':>9}  checks")
    failures = []
    runs = [("fp32 single device", "32-true", "auto"), ("fp32 DDP world of one, nccl", "32-true", "ddp"),
            ("16-mixed", "16-mixed", "auto"), ("bf16-mixed", "bf16-mixed", "auto")]
    for name, precision, strategy in runs:
        if precision == "bf16-mixed" and not torch.cuda.is_bf16_supported():
            print(f"{name:<28} skipped: this GPU has no bf16 support")
            continue
        raw = raw_loop(dataset, precision)
        ours = volt_loop(dataset, precision, strategy)
        problems = []
        if ours["device"] != "cuda":
            problems.append(f"weights on {ours['device']}")
        if strategy == "ddp" and ours["backend"] != "nccl":
            problems.append(f"backend {ours['backend']!r}, expected 'nccl'")
        if not (ours["last_loss"] < ours["first_loss"]) or ours["last_loss"] != ours["last_loss"]:
            problems.append(f"loss did not go down ({ours['first_loss']:.3f} -> {ours['last_loss']:.3f})")
        failures += [f"{name}: {p}" for p in problems]
        ratio = ours["samples_per_s"] / raw["samples_per_s"]
        print(f"{name:<28} {raw['samples_per_s']:>14.0f} {ours['samples_per_s']:>15.0f} {ratio:>9.3f}  "
              + ("ok" if not problems else "FAILED: " + "; ".join(problems)))
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    for failure in failures:
        print("check failed:", failure)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
