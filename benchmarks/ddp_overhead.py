"""Per-step cost of volt's DDP against a hand-written torch DDP loop, on CPU with 2 processes (gloo).

Both variants train the same MLP on the same data, sharded the same way (strided, no shuffle), batch 32 per rank,
SGD. The hand-written loop is `DistributedDataParallel` + `DistributedSampler` + the four usual lines; volt's is a
LightningModule on `Trainer(accelerator="cpu", devices=2, strategy="ddp")`, volt's own launcher starting rank 1.
Wall-clock and CPU time (rank 0's process, every thread: volt's watchdog included) per step are measured after
a warm-up. The variants alternate in rounds and each round's ratio is taken against the hand-written loop of the
same round, so a change in the machine's load between rounds cancels out; the median ratio and its interquartile
range are reported.

    python benchmarks/ddp_overhead.py [--steps 1000] [--rounds 7]
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, TensorDataset

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.join(os.path.dirname(HERE), "src")
if SRC not in sys.path:
    sys.path.insert(0, SRC)

WARMUP = 100
WORLD = 2
BATCH = 32


def make_data(steps: int) -> TensorDataset:
    g = torch.Generator().manual_seed(0)
    n = steps * BATCH * WORLD
    return TensorDataset(torch.randn(n, 32, generator=g), torch.randint(0, 10, (n,), generator=g))


def make_net() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(32, 128), torch.nn.ReLU(), torch.nn.Linear(128, 10))


def per_step(stamps) -> dict:
    """Wall and CPU (this process, all threads) seconds per step after the warm-up, from (wall, cpu) stamps."""
    steps = len(stamps) - 1 - WARMUP
    return {"wall": (stamps[-1][0] - stamps[WARMUP][0]) / steps, "cpu": (stamps[-1][1] - stamps[WARMUP][1]) / steps}


def stamp() -> tuple:
    return time.perf_counter(), time.process_time()


def raw(steps: int) -> None:
    """One rank of the hand-written loop (ranks come from RANK/WORLD_SIZE/MASTER_* set by the driver)."""
    from torch.nn.parallel import DistributedDataParallel
    from torch.utils.data import DistributedSampler

    dist.init_process_group("gloo")
    dataset = make_data(steps)
    model = DistributedDataParallel(make_net())
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    loader = DataLoader(dataset, batch_size=BATCH, sampler=DistributedSampler(dataset, shuffle=False))
    stamps = []
    for x, y in loader:
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        stamps.append(stamp())
    if dist.get_rank() == 0:
        print("RESULT " + json.dumps(per_step(stamps)), flush=True)
    dist.destroy_process_group()


def volt_run(steps: int) -> None:
    """volt's Trainer with DDP; this process is rank 0 and volt's launcher re-runs this command for rank 1."""
    import volt

    class Net(volt.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = make_net()

        def training_step(self, batch, batch_idx):
            x, y = batch
            return torch.nn.functional.cross_entropy(self.net(x), y)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.01)

    class Clock(volt.Callback):
        def __init__(self):
            self.stamps = []

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            self.stamps.append(stamp())

    clock = Clock()
    trainer = volt.Trainer(accelerator="cpu", devices=WORLD, strategy="ddp", max_epochs=1, logger=False,
                           enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                           callbacks=[clock])
    trainer.fit(Net(), DataLoader(make_data(steps), batch_size=BATCH))
    if trainer.is_global_zero:
        print("RESULT " + json.dumps(per_step(clock.stamps)), flush=True)


def measure(variant: str, steps: int) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_PORT")}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join([SRC, env.get("PYTHONPATH", "")]))
    command = [sys.executable, os.path.abspath(__file__), "--run", variant, "--steps", str(steps)]
    if variant == "raw":
        from volt.distributed.environments import find_free_port

        env.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(find_free_port()), WORLD_SIZE=str(WORLD))
        procs = [subprocess.Popen(command, env={**env, "RANK": str(r)}, stdout=subprocess.PIPE, text=True)
                 for r in range(WORLD)]
        outputs = [p.communicate()[0] for p in procs]
    else:
        proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, text=True)
        outputs = [proc.communicate()[0]]
        procs = [proc]
    if any(p.returncode for p in procs):
        raise SystemExit(f"the {variant} run failed (exit codes {[p.returncode for p in procs]})")
    line = next(l for out in outputs for l in out.splitlines() if l.startswith("RESULT "))
    return json.loads(line[len("RESULT "):])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=1000, help="training steps per rank")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--run", choices=["raw", "volt"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run == "raw":
        return raw(args.steps)
    if args.run == "volt":
        return volt_run(args.steps)
    runs = {"raw": [], "volt": []}
    for _ in range(args.rounds):
        for variant in ("raw", "volt"):
            runs[variant].append(measure(variant, args.steps))
    print(f"DDP on CPU, {WORLD} processes (gloo), MLP 32-128-10, batch {BATCH} per rank, {args.steps} steps, "
          f"{args.rounds} alternating rounds; per step on rank 0")
    for clock in ("wall", "cpu"):
        raw_s = [r[clock] for r in runs["raw"]]
        volt_s = [r[clock] for r in runs["volt"]]
        ratios = sorted(v / r for v, r in zip(volt_s, raw_s))
        print(f"  {clock:>4}: hand-written torch DDP {statistics.median(raw_s) * 1e3:.3f} ms, volt "
              f"{statistics.median(volt_s) * 1e3:.3f} ms; volt / hand-written of the same round: median "
              f"{statistics.median(ratios):.3f}x (interquartile {ratios[len(ratios) // 4]:.3f}-"
              f"{ratios[(3 * len(ratios)) // 4]:.3f}x)")


if __name__ == "__main__":
    main()
