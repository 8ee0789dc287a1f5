"""Per-step overhead of volt against a hand-written PyTorch loop (and pytorch-lightning when installed).

One run measures, side by side:
  * steady-state time per training step (tiny MLP, batch 32, one `self.log(..., prog_bar=True)` a step,
    Trainer defaults: progress bar, logger, checkpointing, model summary), reported as a ratio to the raw loop.
    The contenders alternate in short rounds and each round's ratio is taken against the raw loop of the same
    round, so a change in the machine's load between rounds cancels out; the median and the spread of the
    per-round ratios are printed;
  * Python function calls per training step (a count, unaffected by load): what each framework adds to the
    raw loop's own calls (DataLoader, module, optimizer);
  * `import volt` (and `import pytorch_lightning`) time beyond `import torch`, in fresh processes;
  * time from `trainer.fit()` to the first `training_step`, in a fresh process (after creating one torch
    optimizer, whose first construction loads torch's compiler: a one-off cost a raw loop pays too).

    python benchmarks/overhead.py [--steps 1000] [--rounds 15] [--no-lightning]
"""
import argparse
import os
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

WARMUP = 200


def make_data(steps: int, batch_size: int = 32) -> TensorDataset:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(steps * batch_size, 32, generator=g)
    y = torch.randint(0, 10, (steps * batch_size,), generator=g)
    return TensorDataset(x, y)


def make_net() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10))


def _stamp():
    return time.perf_counter(), time.thread_time()


class _CallCounter:
    """Counts Python function calls between `start()` and `stop()` (sys.setprofile)."""

    def __init__(self) -> None:
        self.calls = 0

    def _profile(self, frame, event, arg) -> None:
        if event == "call":
            self.calls += 1

    def start(self) -> None:
        sys.setprofile(self._profile)

    def stop(self) -> None:
        sys.setprofile(None)


COUNTED = (WARMUP, WARMUP + 100)  # the steps whose Python calls are counted, when counting


def _per_step(stamps) -> tuple:
    """(wall, cpu) seconds per step between the warm-up stamp and the last one."""
    n = len(stamps) - 1 - WARMUP
    return tuple((stamps[-1][i] - stamps[WARMUP][i]) / n for i in range(2))


def raw_loop(dataset: TensorDataset, counter: "_CallCounter | None" = None) -> tuple:
    """The baseline: what a user writes by hand. Returns (wall, cpu) seconds per step after warm-up."""
    net = make_net()
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    loader = DataLoader(dataset, batch_size=32)
    stamps = []
    for x, y in loader:
        if counter is not None and len(stamps) in COUNTED:
            (counter.start if len(stamps) == COUNTED[0] else counter.stop)()
        loss = torch.nn.functional.cross_entropy(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        stamps.append(_stamp())
    return _per_step(stamps)


def framework_loop(pl, dataset: TensorDataset, root: str, counter: "_CallCounter | None" = None,
                   callbacks=None, **trainer_kwargs) -> tuple:
    """The same model and data through a framework's Trainer with its defaults (`trainer_kwargs` change them)."""
    stamps = []

    class Model(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = make_net()

        def training_step(self, batch, batch_idx):
            if counter is not None and len(stamps) in COUNTED:
                (counter.start if len(stamps) == COUNTED[0] else counter.stop)()
            x, y = batch
            loss = torch.nn.functional.cross_entropy(self.net(x), y)
            self.log("loss", loss, prog_bar=True)
            stamps.append(_stamp())
            return loss

        def configure_optimizers(self):
            return torch.optim.Adam(self.parameters(), lr=1e-3)

    trainer = pl.Trainer(max_epochs=1, default_root_dir=root, callbacks=callbacks, **trainer_kwargs)
    trainer.fit(Model(), DataLoader(dataset, batch_size=32))
    # stamps are taken inside training_step; step i's full cost lies between stamp i and stamp i+1
    return _per_step(stamps)


def import_time(module: str, repeats: int) -> float:
    code = ("import time, torch; t = time.perf_counter(); import {m}; print(time.perf_counter() - t)").format(m=module)
    env = dict(os.environ, PYTHONPATH=SRC + os.pathsep + os.environ.get("PYTHONPATH", ""))
    times = []
    for _ in range(repeats):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
        times.append(float(out.stdout.strip().splitlines()[-1]))
    return statistics.median(times)


_FIRST_STEP = r"""
import sys, time, tempfile, torch
from torch.utils.data import DataLoader, TensorDataset
import {m} as pl
stamp = []
class Model(pl.LightningModule):
    def __init__(self):
        super().__init__(); self.net = torch.nn.Linear(32, 10)
    def training_step(self, batch, batch_idx):
        stamp.append(time.perf_counter())
        return self.net(batch[0]).sum()
    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)
ds = TensorDataset(torch.randn(64, 32))
torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)  # torch's own one-off cost (it loads its compiler)
trainer = pl.Trainer(max_steps=1, default_root_dir=tempfile.mkdtemp())
t = time.perf_counter()
trainer.fit(Model(), DataLoader(ds, batch_size=32))
print(stamp[0] - t)
"""


def first_step_time(module: str, repeats: int) -> float:
    env = dict(os.environ, PYTHONPATH=SRC + os.pathsep + os.environ.get("PYTHONPATH", ""))
    times = []
    for _ in range(repeats):
        out = subprocess.run([sys.executable, "-c", _FIRST_STEP.format(m=module)], capture_output=True, text=True,
                             env=env)
        if out.returncode != 0:
            raise RuntimeError(out.stderr[-2000:])
        times.append(float(out.stdout.strip().splitlines()[-1]))
    return statistics.median(times)


def _quietly(fn, *args):
    devnull = open(os.devnull, "w")
    stderr, stdout = sys.stderr, sys.stdout
    sys.stderr = sys.stdout = devnull
    try:
        return fn(*args)
    finally:
        sys.stderr, sys.stdout = stderr, stdout
        devnull.close()


def _spread(ratios) -> str:
    ordered = sorted(ratios)
    return f"{ordered[len(ordered) // 4]:.3f}-{ordered[(3 * len(ordered)) // 4]:.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=1000, help="steps per run (the first 200 are warm-up)")
    parser.add_argument("--rounds", type=int, default=15, help="alternating rounds (Lightning runs in a third)")
    parser.add_argument("--no-lightning", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)

    import volt

    frameworks = {"volt": volt}
    if not args.no_lightning:
        try:
            import warnings

            warnings.filterwarnings("ignore")
            import pytorch_lightning

            frameworks["lightning"] = pytorch_lightning
        except ImportError:
            print("pytorch-lightning not installed: comparing volt with the raw loop only")

    dataset = make_data(args.steps)
    times = {name: [] for name in ["raw", *frameworks]}
    ratios = {name: ([], []) for name in frameworks}
    calls = {}
    with tempfile.TemporaryDirectory() as root:
        counter = _CallCounter()
        raw_loop(dataset, counter)
        calls["raw"] = counter.calls
        for name, pl in frameworks.items():
            counter = _CallCounter()
            _quietly(framework_loop, pl, dataset, os.path.join(root, name), counter)
            calls[name] = counter.calls
        for round_index in range(args.rounds):
            raw = raw_loop(dataset)
            times["raw"].append(raw)
            for name, pl in frameworks.items():
                if name == "lightning" and round_index % 3:
                    continue  # Lightning is slow and far from the budget: fewer rounds suffice
                measured = _quietly(framework_loop, pl, dataset, os.path.join(root, name))
                times[name].append(measured)
                ratios[name][0].append(measured[0] / raw[0])
                ratios[name][1].append(measured[1] / raw[1])

    counted = COUNTED[1] - COUNTED[0]
    print(f"\nPer-step time, tiny MLP, batch 32, {args.steps - WARMUP} steps a run, {args.rounds} alternating rounds")
    print("ratio: median over rounds of (framework / raw loop of the same round), interquartile range after it")
    print(f"{'loop':<11}{'wall us':>9}{'vs raw':>9}{'(IQR)':>14}{'cpu us':>9}{'vs raw':>9}{'(IQR)':>14}"
          f"{'py calls/step':>15}")
    print(f"{'raw':<11}{statistics.median(v[0] for v in times['raw']) * 1e6:>9.1f}{'1.000x':>9}{'':>14}"
          f"{statistics.median(v[1] for v in times['raw']) * 1e6:>9.1f}{'1.000x':>9}{'':>14}"
          f"{calls['raw'] / counted:>15.1f}")
    for name in frameworks:
        wall_ratios, cpu_ratios = ratios[name]
        print(f"{name:<11}{statistics.median(v[0] for v in times[name]) * 1e6:>9.1f}"
              f"{statistics.median(wall_ratios):>8.3f}x{_spread(wall_ratios):>14}"
              f"{statistics.median(v[1] for v in times[name]) * 1e6:>9.1f}"
              f"{statistics.median(cpu_ratios):>8.3f}x{_spread(cpu_ratios):>14}"
              f"{calls[name] / counted:>15.1f}")
    for name in frameworks:
        print(f"{name} adds {(calls[name] - calls['raw']) / counted:.1f} Python calls per step to the raw loop's")

    print("\nImport time beyond `import torch` (median of 5 fresh processes)")
    for name in frameworks:
        module = "volt" if name == "volt" else "pytorch_lightning"
        print(f"{'import ' + module:<28}{import_time(module, 5) * 1e3:>8.0f} ms")

    print("\nTime from fit() to the first training_step (median of 3 fresh processes)")
    for name in frameworks:
        module = "volt" if name == "volt" else "pytorch_lightning"
        print(f"{module:<28}{first_step_time(module, 3) * 1e3:>8.0f} ms")


if __name__ == "__main__":
    main()
