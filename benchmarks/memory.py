"""Host memory of `fit` against a hand-written loop, and what a checkpoint holds, byte by byte.

1. Peak host memory. Each contender trains the same MLP on the same data in a fresh process, measured two ways
   (each in its own process, as tracing allocations costs memory itself):
   * tracemalloc: the peak of Python-level allocations during training (the interpreter's own objects: what a
     framework adds in Python; tensor storage is allocated in C++ and not traced);
   * RSS: the resident set's high-water mark (VmHWM) minus the resident size right before training started
     (after imports, data and model), i.e. what training added at its peak, tensors included.
   Each process first runs its contender for 2 steps on a tiny model, so that imports and one-time set-up
   (torch's compiler, which the first optimizer loads; loggers volt imports lazily) are not counted.
   Contenders: the raw loop (no logger, no checkpoint); volt with Trainer defaults (TensorBoard logger,
   ModelCheckpoint, progress bar, model summary); volt with `barebones=True`; pytorch-lightning 2.6.6 with defaults.
2. Checkpoint size: volt's and Lightning's checkpoint of the same model and optimizer (Adam), written by
   ModelCheckpoint at the end of the epoch and, mid-epoch (`every_n_train_steps`), by volt, whose mid-epoch
   checkpoint carries the loop state for exact resume. Each top-level key is serialized alone with `torch.save`
   and the bytes it adds to an empty file are printed; volt's `loops` is broken down further.

    python benchmarks/memory.py [--steps 400] [--hidden 1024] [--no-lightning]
"""
import argparse
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.join(os.path.dirname(HERE), "src")

_TRAIN = r"""
import json, os, sys, tempfile, time, tracemalloc, warnings, logging
sys.path[:0] = [{src!r}]
warnings.filterwarnings("ignore")
import torch
from torch.utils.data import DataLoader, TensorDataset
torch.set_num_threads(1)
contender, measure, steps, hidden = {contender!r}, {measure!r}, {steps}, {hidden}


def rss_kib(field):
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])


def make(steps, hidden):
    g = torch.Generator().manual_seed(0)
    data = TensorDataset(torch.randn(steps * 32, 256, generator=g), torch.randint(0, 10, (steps * 32,), generator=g))
    torch.manual_seed(0)
    return data, torch.nn.Sequential(torch.nn.Linear(256, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, hidden),
                                     torch.nn.ReLU(), torch.nn.Linear(hidden, 10))


if contender == "raw":
    def train(data, net):
        opt = torch.optim.Adam(net.parameters(), lr=1e-3)
        for xb, yb in DataLoader(data, batch_size=32):
            loss = torch.nn.functional.cross_entropy(net(xb), yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
else:
    if contender.startswith("volt"):
        import volt as pl
        logging.getLogger("volt").setLevel(logging.ERROR)
    else:
        import pytorch_lightning as pl
        logging.getLogger("pytorch_lightning").setLevel(logging.ERROR)

    class Model(pl.LightningModule):
        def __init__(self, net):
            super().__init__()
            self.net = net

        def training_step(self, batch, batch_idx):
            loss = torch.nn.functional.cross_entropy(self.net(batch[0]), batch[1])
            self.log("loss", loss, prog_bar=True)
            return loss

        def configure_optimizers(self):
            return torch.optim.Adam(self.parameters(), lr=1e-3)

    options = dict(barebones=True) if contender == "volt barebones" else {{}}
    sys.stdout = sys.stderr = open(os.devnull, "w")

    def train(data, net):
        trainer = pl.Trainer(max_epochs=1, default_root_dir=tempfile.mkdtemp(), **options)
        trainer.fit(Model(net), DataLoader(data, batch_size=32))

train(*make(2, 8))  # warm-up: imports and one-time set-up (torch's compiler, lazily imported loggers) not counted
data, net = make(steps, hidden)
before = rss_kib("VmRSS")
if measure == "tracemalloc":
    tracemalloc.start()
train(data, net)
result = {{"hwm_kib": rss_kib("VmHWM"), "before_kib": before}}
if measure == "tracemalloc":
    result["traced_peak"] = tracemalloc.get_traced_memory()[1]
sys.__stdout__.write(json.dumps(result) + "\n")
"""


def _run_fresh(code: str, what: str) -> dict:
    """Run `code` in a fresh interpreter (nothing imported or allocated before) and return its last JSON line."""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=900)
    if out.returncode != 0:
        raise RuntimeError(f"{what} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def peak_memory(contender: str, measure: str, steps: int, hidden: int) -> dict:
    code = _TRAIN.format(src=SRC, contender=contender, measure=measure, steps=steps, hidden=hidden)
    return _run_fresh(code, f"{contender} ({measure})")


_CHECKPOINT = r"""
import json, os, sys, tempfile, warnings, logging
sys.path[:0] = [{src!r}]
warnings.filterwarnings("ignore")
import torch
from torch.utils.data import DataLoader, TensorDataset
framework, steps, hidden, every = {framework!r}, {steps}, {hidden}, {every}
torch.set_num_threads(1)
if framework == "volt":
    import volt as pl
    from volt.callbacks import ModelCheckpoint
    logging.getLogger("volt").setLevel(logging.ERROR)
else:
    import pytorch_lightning as pl
    from pytorch_lightning.callbacks import ModelCheckpoint
    logging.getLogger("pytorch_lightning").setLevel(logging.ERROR)
g = torch.Generator().manual_seed(0)
data = TensorDataset(torch.randn(steps * 32, 256, generator=g), torch.randint(0, 10, (steps * 32,), generator=g))


class Model(pl.LightningModule):
    def __init__(self, hidden: int = 64):
        super().__init__()
        self.save_hyperparameters()
        self.net = torch.nn.Sequential(torch.nn.Linear(256, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, hidden),
                                       torch.nn.ReLU(), torch.nn.Linear(hidden, 10))

    def training_step(self, batch, batch_idx):
        loss = torch.nn.functional.cross_entropy(self.net(batch[0]), batch[1])
        self.log("loss", loss, prog_bar=True)
        self.log("loss_mean", loss, on_step=False, on_epoch=True)
        return loss

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=1e-3)


root = tempfile.mkdtemp()
callback = ModelCheckpoint(dirpath=root, every_n_train_steps=every or None, save_top_k=-1)
sys.stdout = sys.stderr = open(os.devnull, "w")
pl.Trainer(max_epochs=1, default_root_dir=root, callbacks=[callback], enable_progress_bar=False).fit(
    Model(hidden), DataLoader(data, batch_size=32))
path = sorted((os.path.join(root, f) for f in os.listdir(root) if f.endswith(".ckpt")), key=os.path.getmtime)[0]
checkpoint = torch.load(path, weights_only=False)


def size(value):  # bytes `value` adds to a torch.save file (its fixed overhead, about 1.2 KiB, taken off)
    buffers = [__import__("io").BytesIO() for _ in range(2)]
    torch.save(value, buffers[0])
    torch.save(None, buffers[1])
    return buffers[0].tell() - buffers[1].tell()


result = {{"file": os.path.getsize(path), "keys": {{key: size(value) for key, value in checkpoint.items()}}}}
loops = checkpoint.get("loops", {{}}).get("fit_loop", {{}})
if framework == "volt":
    result["fit_loop"] = {{key: size(value) for key, value in loops.items()}}
    results = loops.get("results") or {{}}
    result["results"] = {{key: size(value) for key, value in results.items()}}
sys.__stdout__.write(json.dumps(result) + "\n")
"""


def checkpoint_sizes(framework: str, steps: int, hidden: int, every: int) -> dict:
    code = _CHECKPOINT.format(src=SRC, framework=framework, steps=steps, hidden=hidden, every=every)
    return _run_fresh(code, f"{framework} checkpoint")


def _kib(n: float) -> str:
    if abs(n) < 1024:
        return f"{n:,.0f} B"
    return f"{n / 1024:,.1f} KiB" if abs(n) < 1024 * 1024 else f"{n / 1024 / 1024:,.2f} MiB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--hidden", type=int, default=1024, help="MLP 256-hidden-hidden-10")
    parser.add_argument("--no-lightning", action="store_true")
    args = parser.parse_args()
    contenders = ["raw", "volt", "volt barebones"] + ([] if args.no_lightning else ["lightning"])
    params = 256 * args.hidden + args.hidden * args.hidden + args.hidden * 10 + 2 * args.hidden + 10
    print(f"MLP 256-{args.hidden}-{args.hidden}-10 ({params / 1e6:.2f} M parameters, Adam), batch 32, "
          f"{args.steps} steps; each figure from a fresh process")
    print(f"{'contender':<16}{'tracemalloc peak':>18}{'RSS added at peak':>19}{'VmHWM':>12}")
    for contender in contenders:
        traced = peak_memory(contender, "tracemalloc", args.steps, args.hidden)
        rss = peak_memory(contender, "rss", args.steps, args.hidden)
        print(f"{contender:<16}{_kib(traced['traced_peak']):>18}{_kib((rss['hwm_kib'] - rss['before_kib']) * 1024):>19}"
              f"{_kib(rss['hwm_kib'] * 1024):>12}")

    frameworks = ["volt"] + ([] if args.no_lightning else ["lightning"])
    for title, every in (("end of epoch", 0), (f"mid-epoch (step {args.steps // 2})", args.steps // 2)):
        sizes = {name: checkpoint_sizes(name, args.steps, args.hidden, every) for name in frameworks}
        print(f"\nCheckpoint at the {title}: serialized size of each top-level key")
        keys = list(dict.fromkeys(k for name in frameworks for k in sizes[name]["keys"]))
        print(f"{'key':<28}" + "".join(f"{name:>16}" for name in frameworks))
        for key in keys:
            print(f"{key:<28}" + "".join(f"{_kib(sizes[n]['keys'][key]) if key in sizes[n]['keys'] else '-':>16}"
                                         for n in frameworks))
        print(f"{'file':<28}" + "".join(f"{_kib(sizes[n]['file']):>16}" for n in frameworks))
        print("volt loops.fit_loop: " + ", ".join(f"{k} {_kib(v)}" for k, v in sizes["volt"]["fit_loop"].items()))
        print("volt loops.fit_loop.results: " + ", ".join(f"{k} {_kib(v)}" for k, v in sizes["volt"]["results"].items()))


if __name__ == "__main__":
    main()
