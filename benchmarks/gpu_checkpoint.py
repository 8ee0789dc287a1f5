"""GPU check for sharded, asynchronous checkpoints: FSDP on nccl, `state_dict_type="sharded"`, ModelCheckpoint(async_save).

On all the GPUs of one node (or --devices N) it runs volt's Trainer on a stack of Linear layers (--size millions of
parameters, bf16-mixed autocast, SGD with momentum) and:

  1. times the saves: the training stall and the time until the checkpoint is durable, sharded synchronous against
     sharded in the background (the same measures as benchmarks/checkpoint_scaling.py);
  2. checks exact resume: a run that saves in the background every few steps, and a run resumed from one of those
     checkpoints, must end with the same weights (deterministic algorithms on; bit for bit);
  3. checks the folder: written by every rank (one file per rank), readable in one process
     (`volt.sharded_checkpoint.load`, as `volt checkpoint consolidate` does), all tensors finite.

It prints the figures and PASS/FAIL per check, and exits non-zero if a check fails. Without a GPU it prints "no GPU:
skipping" and exits 0; `--cpu` runs the same on CPU processes with gloo instead (a check of the script, not of
nccl), at whatever --size is given.

    python benchmarks/gpu_checkpoint.py [--devices N] [--size 500] [--every 4] [--saves 3] [--cpu]
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import torch
from torch.utils.data import DataLoader, TensorDataset

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.join(os.path.dirname(HERE), "src")
for path in (SRC, HERE):
    if path not in sys.path:
        sys.path.insert(0, path)

import volt  # noqa: E402
from checkpoint_scaling import WIDTH, Stack, TimedCheckpoint, measure  # noqa: E402


def worker(config: dict) -> None:
    """One run on every rank (volt starts the other ranks by running this script again)."""
    from volt.strategies import FSDPStrategy
    from volt.utilities.rank_zero import rank_zero_only

    gpu = config["accelerator"] == "gpu"
    volt.seed_everything(0)
    model = Stack(config["layers"])
    checkpoint = TimedCheckpoint(dirpath=config["dir"], every_n_train_steps=config["every"],
                                 save_top_k=config["top_k"], async_save=config["async"])
    steps = config["every"] * (config["saves"] + 1)
    data = TensorDataset(torch.randn(steps * 8 * config["devices"], WIDTH, generator=torch.Generator().manual_seed(0)))
    trainer = volt.Trainer(accelerator=config["accelerator"], devices=config["devices"], max_steps=steps,
                           strategy=FSDPStrategy(state_dict_type="sharded", auto_wrap_policy={torch.nn.Linear}),
                           precision="bf16-mixed" if gpu else "32-true", deterministic=True, logger=False,
                           callbacks=[checkpoint], enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(model, DataLoader(data, batch_size=8), ckpt_path=config.get("resume_from"))
    weights = {k: v.detach().float().cpu() for k, v in trainer.strategy.lightning_module_state_dict().items()}
    if rank_zero_only.rank == 0:
        timing = measure(checkpoint.batches, checkpoint.durable) if not config.get("resume_from") else {}
        torch.save({"weights": weights, "timing": timing, "backend": torch.distributed.get_backend(),
                    "device": str(trainer.strategy.root_device)}, config["result"])


def run(config: dict, timeout: float) -> dict:
    env = {**os.environ, "PYTHONPATH": SRC, "CUBLAS_WORKSPACE_CONFIG": ":4096:8", "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, os.path.abspath(__file__), "--worker", json.dumps(config)], env=env,
                          capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"run {config} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return torch.load(config["result"], weights_only=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=None, help="GPUs to use (default: all)")
    parser.add_argument("--size", type=int, default=500, help="model size in millions of parameters")
    parser.add_argument("--every", type=int, default=4, help="training steps between saves")
    parser.add_argument("--saves", type=int, default=3)
    parser.add_argument("--cpu", action="store_true", help="run on CPU processes with gloo (a check of the script)")
    parser.add_argument("--timeout", type=float, default=1200)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(json.loads(args.worker))
        return 0
    if not args.cpu and not torch.cuda.is_available():
        print("no GPU: skipping the GPU checkpoint check (pass --cpu to run it on CPU processes with gloo)")
        return 0
    accelerator = "cpu" if args.cpu else "gpu"
    devices = args.devices or (2 if args.cpu else torch.cuda.device_count())
    layers = max(1, round(args.size * 1e6 / (WIDTH * WIDTH + WIDTH)))
    checks = []
    with tempfile.TemporaryDirectory(prefix="volt-gpu-ckpt-") as scratch:
        base = {"accelerator": accelerator, "devices": devices, "layers": layers, "every": args.every,
                "saves": args.saves}
        results = {}
        for how in ("sync", "async"):
            config = {**base, "async": how == "async", "dir": os.path.join(scratch, how),
                      "top_k": -1 if how == "async" else 1,  # the async run's first checkpoint is resumed below
                      "result": os.path.join(scratch, f"{how}.pt")}
            started = time.perf_counter()
            results[how] = run(config, args.timeout)
            timing = results[how]["timing"]
            print(f"sharded {how:5}: stall {timing['stall']:.3f} s per save (blocked {timing['blocked']:.3f} s + "
                  f"slowdown {timing['slowdown']:.3f} s), durable after {timing['durable']:.3f} s; a step takes "
                  f"{timing['step']:.3f} s [{time.perf_counter() - started:.0f} s, {results[how]['backend']}, "
                  f"{results[how]['device']}]")
        expected_backend = "gloo" if args.cpu else "nccl"
        checks.append((f"process group backend is {expected_backend}",
                       results["async"]["backend"] == expected_backend))

        folder = os.path.join(scratch, "async", f"epoch=0-step={args.every}.ckpt")
        from volt.sharded_checkpoint import load

        shard_files = sorted(name for name in os.listdir(folder) if name.endswith(".distcp"))
        checks.append((f"every rank wrote its shards ({len(shard_files)} files for {devices} ranks)",
                       len(shard_files) == devices))
        saved = load(folder)
        checks.append(("the folder reads in one process, all tensors finite",
                       all(torch.isfinite(v.float()).all() for v in saved["state_dict"].values())))

        shutil.rmtree(os.path.join(scratch, "sync"))  # disk space: a checkpoint holds 8 bytes a parameter
        resumed = run({**base, "async": True, "dir": os.path.join(scratch, "resumed"), "resume_from": folder,
                       "top_k": 1, "result": os.path.join(scratch, "resumed.pt")}, args.timeout)
        differences = [(name, (resumed["weights"][name] - value).abs().max().item())
                       for name, value in results["async"]["weights"].items()]
        worst = max(differences, key=lambda item: item[1])
        checks.append((f"resumed from a background-written checkpoint = uninterrupted, bit for bit (largest "
                       f"difference {worst[1]:.3g} in {worst[0]})", worst[1] == 0.0))
        checks.append(("background saves stall training less than synchronous ones",
                       results["async"]["timing"]["stall"] < results["sync"]["timing"]["stall"]))
    for name, passed in checks:
        print(f"{'PASS' if passed else 'FAIL'}: {name}")
    return 0 if all(passed for _, passed in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
