"""Resume cost against the position in the epoch, and checkpoint save cost against a plain torch.save.

1. Resume: one epoch of a map-style dataset whose samples cost real time to load (and of the same samples as an
   IterableDataset, which volt resumes by replaying, and as a stateful IterableDataset, whose `state_dict()` volt
   saves and restores), with a checkpoint at several positions in the epoch. For each, a fresh Trainer and model
   resume with `fit(ckpt_path=...)`; the time from the `fit` call to the first resumed `training_step` is reported.
   Map-style resume skips consumed batches at the sampler level and a stateful stream starts where it stood, so
   both should stay flat.
2. Save: `torch.save` of a model + optimizer state, the same followed by fsync (what durability costs anyway), volt's
   atomic `save_checkpoint` (temporary file, fsync, rename, folder fsync) and the whole `trainer.save_checkpoint`
   (state gathering, callbacks' state, loop state, RNG) at a few model sizes.

    python benchmarks/resume.py [--batches 200] [--load-ms 0.1] [--sizes 1,10,25] [--repeats 3]
"""
import argparse
import os
import statistics
import sys
import tempfile
import time
import warnings

import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.join(os.path.dirname(HERE), "src")
if SRC not in sys.path:
    sys.path.insert(0, SRC)

import volt  # noqa: E402
from volt.callbacks import ModelCheckpoint  # noqa: E402
from volt.checkpoint import save_checkpoint  # noqa: E402

BATCH = 32


class SlowData(Dataset):
    """Samples that take `load_s` seconds each to "decode"."""

    def __init__(self, n: int, load_s: float) -> None:
        self.x = torch.randn(n, 32, generator=torch.Generator().manual_seed(0))
        self.load_s = load_s

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i):
        time.sleep(self.load_s)
        return self.x[i], self.x[i, :10]


class SlowStream(IterableDataset):
    def __init__(self, n: int, load_s: float) -> None:
        self.data = SlowData(n, load_s)

    def __iter__(self):
        return (self.data[i] for i in range(len(self.data)))


class SlowStatefulStream(SlowStream):
    """The same stream, resumable: `state_dict()`/`load_state_dict()` hold its position, where a resumed run starts."""

    def __init__(self, n: int, load_s: float) -> None:
        super().__init__(n, load_s)
        self.position, self._start = 0, 0

    def __iter__(self):
        self.position, self._start = self._start, 0
        while self.position < len(self.data):
            self.position += 1
            yield self.data[self.position - 1]

    def state_dict(self):
        return {"position": self.position}

    def load_state_dict(self, state):
        self._start = state["position"]


class Net(volt.LightningModule):
    def __init__(self, first_step=None):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10))
        self.first_step = first_step

    def training_step(self, batch, batch_idx):
        if self.first_step is not None and not self.first_step:
            self.first_step.append(time.perf_counter())
        x, y = batch
        return torch.nn.functional.mse_loss(self.net(x), y)

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=1e-3)


def _trainer(root, **kwargs):
    return volt.Trainer(default_root_dir=root, logger=False, enable_progress_bar=False, enable_model_summary=False,
                        num_sanity_val_steps=0, **kwargs)


def resume_times(dataset, positions, root, repeats):
    """{position: seconds from fit() to the first resumed training_step}."""
    batches = len(dataset.data if isinstance(dataset, SlowStream) else dataset) // BATCH
    steps = sorted({max(1, int(p * batches)) for p in positions})
    callback = ModelCheckpoint(dirpath=os.path.join(root, "ckpt"), every_n_train_steps=1, save_top_k=-1,
                               filename="{step}")
    _trainer(root, max_epochs=1, callbacks=[callback]).fit(Net(), DataLoader(dataset, batch_size=BATCH))
    results = {}
    for step in steps:
        times = []
        for _ in range(repeats):
            first_step = []
            trainer = _trainer(root, max_steps=step + 1, enable_checkpointing=False)
            start = time.perf_counter()
            trainer.fit(Net(first_step), DataLoader(dataset, batch_size=BATCH),
                        ckpt_path=os.path.join(root, "ckpt", f"step={step}.ckpt"))
            times.append(first_step[0] - start)
        results[step / batches] = statistics.median(times)
    return results


def save_times(millions, root, repeats):
    """Rows of (parameters in millions, file MB, torch.save, torch.save+fsync, volt save_checkpoint,
    trainer.save_checkpoint), seconds (median of `repeats`)."""
    rows = []
    for m in millions:
        width = int((m * 1e6 / 4) ** 0.5)
        model = Net()
        model.net = torch.nn.Sequential(*[torch.nn.Linear(width, width) for _ in range(4)])
        optimizer = torch.optim.Adam(model.parameters())
        model.net(torch.randn(2, width)).sum().backward()
        optimizer.step()  # Adam state: two more tensors per parameter
        plain = {"state_dict": model.state_dict(), "optimizer_states": [optimizer.state_dict()]}
        path = os.path.join(root, "model.ckpt")

        def torch_save():
            torch.save(plain, path)

        def torch_save_fsync():
            with open(path, "wb") as f:
                torch.save(plain, f)
                f.flush()
                os.fsync(f.fileno())

        def volt_save():
            save_checkpoint(plain, path)

        trainer = _trainer(root, max_steps=1, enable_checkpointing=False)
        model.training_step = lambda batch, batch_idx: model.net(batch[0]).sum()
        model.configure_optimizers = lambda: optimizer
        trainer.fit(model, DataLoader(torch.utils.data.TensorDataset(torch.randn(2, width)), batch_size=2))

        def trainer_save():
            trainer.save_checkpoint(path)

        row = [m, 0.0]
        for fn in (torch_save, torch_save_fsync, volt_save, trainer_save):
            times = []
            for _ in range(repeats):
                start = time.perf_counter()
                fn()
                times.append(time.perf_counter() - start)
            row.append(statistics.median(times))
        row[1] = os.path.getsize(path) / 1e6
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, default=200, help="batches per epoch (of 32 samples)")
    parser.add_argument("--load-ms", type=float, default=0.1, help="time to load one sample, in milliseconds")
    parser.add_argument("--sizes", default="1,10,25", help="model sizes for the save benchmark, in M parameters")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    import logging

    logging.getLogger("volt").setLevel(logging.WARNING)
    positions = [0.0, 0.25, 0.5, 0.75, 0.99]
    n = args.batches * BATCH
    with tempfile.TemporaryDirectory() as root:
        map_style = resume_times(SlowData(n, args.load_ms / 1000), positions, os.path.join(root, "map"), args.repeats)
        stream = resume_times(SlowStream(n, args.load_ms / 1000), positions, os.path.join(root, "it"), args.repeats)
        stateful = resume_times(SlowStatefulStream(n, args.load_ms / 1000), positions, os.path.join(root, "st"),
                                args.repeats)
        print(f"\nResume: time from fit(ckpt_path=...) to the first resumed training_step "
              f"({args.batches} batches of {BATCH}, {args.load_ms} ms to load a sample)")
        columns = ["map-style (sampler skip)", "iterable (replay)", "stateful iterable (state_dict)"]
        print(f"{'position in epoch':>18} | " + " | ".join(f"{c:>{len(c)}}" for c in columns))
        print(f"{'-' * 18}-+-" + "-+-".join("-" * len(c) for c in columns))
        for position, times in zip(map_style, zip(map_style.values(), stream.values(), stateful.values())):
            cells = [f"{t * 1000:>{len(c) - 3}.1f} ms" for t, c in zip(times, columns)]
            print(f"{position:>17.0%} | " + " | ".join(cells))

        rows = save_times([float(s) for s in args.sizes.split(",")], root, args.repeats)
        print("\nCheckpoint save time (model + Adam state)")
        header = ["params", "file", "torch.save", "+ fsync", "volt save_checkpoint", "trainer.save_checkpoint"]
        print(" | ".join(f"{h:>{max(9, len(h))}}" for h in header))
        print("-+-".join("-" * max(9, len(h)) for h in header))
        for m, size, *times in rows:
            cells = [f"{m:g}M", f"{size:.0f} MB"] + [f"{t * 1000:.0f} ms" for t in times]
            print(" | ".join(f"{c:>{max(9, len(h))}}" for c, h in zip(cells, header)))


if __name__ == "__main__":
    main()
