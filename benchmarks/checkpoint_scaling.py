"""Checkpoint cost as models and ranks grow: full vs sharded, synchronous vs in the background, under FSDP.

For each model size (parameters of a stack of Linear layers, SGD with momentum: a checkpoint holds about 8 bytes a
parameter), number of ranks (gloo on CPU, launched by volt) and checkpoint mode:

    full, sync       FSDPStrategy(state_dict_type="full"): gathered to rank 0, one file written by it, ranks wait
    full, async      the same file, copied to CPU memory at the save and written by a thread: ModelCheckpoint(async_save)
    sharded, sync    state_dict_type="sharded": a folder, every rank writes its own shards (torch.distributed.checkpoint)
    sharded, async   the same, with DCP's async_save (staged to CPU memory, written by a thread on a gloo group)

a run trains a few steps, saves every few steps (ModelCheckpoint keeping the newest; the save at the last step,
which the end of fit waits for, is not counted), and rank 0 measures per save:

    blocked    how long the training loop stood still at the save (the checkpoint point, less a normal step's gap)
    slowdown   how much longer the training steps that ran during a background write took than normal steps (the
               writer competes for CPU cores and memory bandwidth with training; 0 for synchronous saves)
    stall      blocked + slowdown: what a save costs the training run
    durable    from the save point until the checkpoint is complete on disk (sync: = blocked)

Medians over the saves of a run; every configuration is a fresh launch. On a machine with few cores the writer
threads of several ranks compete with training for the same cores, so background saves show more slowdown here
than on a node with a core or GPU per rank.

    python benchmarks/checkpoint_scaling.py [--sizes 10,50,200] [--ranks 2,4] [--saves 3] [--every 3]
        [--modes full-sync,full-async,sharded-sync,sharded-async] [--json results.json]
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import torch
from torch.utils.data import DataLoader, TensorDataset

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.join(os.path.dirname(HERE), "src")
if SRC not in sys.path:
    sys.path.insert(0, SRC)

import volt  # noqa: E402
from volt.callbacks import ModelCheckpoint  # noqa: E402

WIDTH = 1792  # a layer is WIDTH x WIDTH: 3.2 M parameters
MODES = ("full-sync", "full-async", "sharded-sync", "sharded-async")


class Stack(volt.LightningModule):
    def __init__(self, layers: int) -> None:
        super().__init__()
        self.layers = torch.nn.Sequential(*[torch.nn.Linear(WIDTH, WIDTH) for _ in range(layers)])

    def training_step(self, batch, batch_idx):
        (x,) = batch
        return self.layers(x).pow(2).mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=1e-4, momentum=0.9)


class TimedCheckpoint(ModelCheckpoint):
    """ModelCheckpoint that notes, on rank 0, when each batch starts and ends and when each save is durable (its
    note is queued after the save's own file work, so it runs once the checkpoint is complete)."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.batches, self.durable = [], {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.batches.append([time.perf_counter(), None, trainer.global_step])

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.batches[-1][1] = time.perf_counter()
        saving_before = self._last_global_step_saved
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        if self._last_global_step_saved != saving_before:
            step = trainer.global_step
            trainer.at_checkpoint_point(lambda: self.durable.__setitem__(step, time.perf_counter()))


def worker(config: dict) -> None:
    """One configuration, on every rank (volt starts the other ranks by running this script again)."""
    from volt.strategies import FSDPStrategy

    torch.manual_seed(0)
    state_dict_type, how = config["mode"].split("-")
    model = Stack(config["layers"])
    every, saves = config["every"], config["saves"]
    checkpoint = TimedCheckpoint(dirpath=config["dir"], every_n_train_steps=every, save_top_k=1,
                                 async_save=how == "async")
    steps = every * (saves + 1)
    data = TensorDataset(torch.randn(steps * 8 * config["ranks"], WIDTH))
    trainer = volt.Trainer(accelerator="cpu", devices=config["ranks"], max_steps=steps, logger=False,
                           strategy=FSDPStrategy(state_dict_type=state_dict_type, auto_wrap_policy={torch.nn.Linear}),
                           callbacks=[checkpoint], enable_progress_bar=False, enable_model_summary=False,
                           num_sanity_val_steps=0)
    trainer.fit(model, DataLoader(data, batch_size=8))
    if trainer.is_global_zero:
        with open(config["result"], "w") as f:
            json.dump(measure(checkpoint.batches, checkpoint.durable), f)


def measure(batches: list, durable: dict) -> dict:
    """Per save: blocked, slowdown, stall, durable (seconds); medians over the saves."""
    gaps = {batches[i][2] + 1: batches[i + 1][0] - batches[i][1] for i in range(len(batches) - 1)}
    step_times = [(start, end, end - start) for start, end, _ in batches[1:]]  # the first step warms up
    normal_gap = statistics.median(gap for step, gap in gaps.items() if step not in durable)
    normal_step = statistics.median(duration for _, _, duration in step_times)
    last_step = batches[-1][2] + 1
    rows = []
    for step, done in sorted(durable.items()):
        if step == last_step:  # the end of fit waits for it: nothing trains after it
            continue
        saved_at = next(end for start, end, s in batches if s + 1 == step)  # the end of the batch that saved
        blocked = max(gaps[step] - normal_gap, 0.0)
        overlap = [duration for start, end, duration in step_times if start >= saved_at and start < done]
        slowdown = sum(max(duration - normal_step, 0.0) for duration in overlap)
        rows.append({"blocked": blocked, "slowdown": slowdown, "stall": blocked + slowdown, "durable": done - saved_at})
    summary = {key: statistics.median(row[key] for row in rows) for key in ("blocked", "slowdown", "stall", "durable")}
    return {**summary, "saves": len(rows), "step": normal_step}


def run(size_m: int, ranks: int, mode: str, args, scratch: str) -> dict:
    layers = max(1, round(size_m * 1e6 / (WIDTH * WIDTH + WIDTH)))
    config = {"layers": layers, "ranks": ranks, "mode": mode, "every": args.every, "saves": args.saves,
              "dir": os.path.join(scratch, "ckpt"), "result": os.path.join(scratch, "result.json")}
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": SRC}
    started = time.perf_counter()
    done = subprocess.run([sys.executable, os.path.abspath(__file__), "--worker", json.dumps(config)], env=env,
                          capture_output=True, text=True, timeout=args.timeout)
    if done.returncode != 0:
        raise RuntimeError(f"{size_m}M, {ranks} ranks, {mode} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    with open(config["result"]) as f:
        result = json.load(f)
    size = sum(os.path.getsize(os.path.join(folder, name)) for folder, _, names in os.walk(config["dir"])
               for name in names) / max(1, len(os.listdir(config["dir"])))
    shutil.rmtree(config["dir"])
    params = layers * (WIDTH * WIDTH + WIDTH)
    return {**result, "params": params, "checkpoint_bytes": size, "ranks": ranks, "mode": mode,
            "wall": time.perf_counter() - started}


def table(results: list) -> str:
    """Markdown: per cell the stall per save; for background saves also how long the loop was blocked, and when
    the checkpoint was durable."""
    lines = ["| parameters (checkpoint) | ranks | " + " | ".join(MODES) + " |",
             "|---|---:|" + "---:|" * len(MODES)]
    keys = sorted({(r["params"], r["ranks"]) for r in results})
    for params, ranks in keys:
        row = {r["mode"]: r for r in results if (r["params"], r["ranks"]) == (params, ranks)}
        size = max(r["checkpoint_bytes"] for r in row.values()) / 1e9
        cells = [_cell(row[mode]) if mode in row else "" for mode in MODES]
        lines.append(f"| {params / 1e6:.0f}M ({size:.1f} GB) | {ranks} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _cell(result: dict) -> str:
    if result["mode"].endswith("sync") and not result["mode"].endswith("async"):
        return f"**{result['stall']:.2f} s**"
    return f"**{result['stall']:.2f} s** (blocked {result['blocked']:.2f} s; durable {result['durable']:.1f} s)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10,50,200", help="model sizes in millions of parameters")
    parser.add_argument("--ranks", default="2,4")
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--saves", type=int, default=3, help="saves per run")
    parser.add_argument("--every", type=int, default=3, help="training steps between saves")
    parser.add_argument("--timeout", type=float, default=900)
    parser.add_argument("--json", help="also write the measurements here")
    parser.add_argument("--table", help="only print the table of measurements written by --json")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(json.loads(args.worker))
        return
    if args.table:
        with open(args.table) as f:
            print(table(json.load(f)))
        return
    results = []
    for size_m in (int(s) for s in args.sizes.split(",")):
        for ranks in (int(r) for r in args.ranks.split(",")):
            for mode in args.modes.split(","):
                with tempfile.TemporaryDirectory(prefix="volt-ckpt-bench-") as scratch:
                    result = run(size_m, ranks, mode, args, scratch)
                results.append(result)
                print(f"{size_m}M params, {ranks} ranks, {mode}: stall {result['stall']:.2f} s (blocked "
                      f"{result['blocked']:.2f} s + slowdown {result['slowdown']:.2f} s), durable after "
                      f"{result['durable']:.2f} s; a step takes {result['step']:.2f} s", flush=True)
                if args.json:
                    with open(args.json, "w") as f:
                        json.dump(results, f, indent=1)
    print("\nstall per save, median over the saves of a run:\n")
    print(table(results))


if __name__ == "__main__":
    main()
