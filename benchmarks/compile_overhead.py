"""Per-step overhead of volt with torch.compile against a hand-written loop compiled the same way.

Both sides compile forward + loss with inductor (the backward graph comes with it) and run Adam eagerly:
  * raw loop: `torch.compile(loss_of)` called on each batch, then `backward()` and `opt.step()`;
  * volt: `Trainer(compile=True)` with Trainer defaults (progress bar, logger, checkpointing) and one
    `self.log(..., prog_bar=True)` a step; `self.log` runs eagerly between the compiled parts (a graph break).
The model is the tiny MLP of `overhead.py` (batch 32), so the fixed cost per step is what is measured. The contenders
alternate in rounds; each ratio is against the raw loop of the same round; the median and interquartile range of
the per-round ratios are printed, with the number of graphs dynamo compiled (one per side: the batch shape never
changes). The first round pays for compiling (inductor caches its code on disk, so later runs compile faster);
the first 200 steps of every round are not timed.

    python benchmarks/compile_overhead.py [--steps 1000] [--rounds 9]
"""
import argparse
import logging
import os
import statistics
import sys
import tempfile

import torch
from torch.utils.data import DataLoader

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.join(os.path.dirname(HERE), "src")]

import overhead  # noqa: E402  (its data, model, clock and helpers)
import volt  # noqa: E402


def loss_of(net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.cross_entropy(net(x), y)


compiled_loss = torch.compile(loss_of)


def raw_loop(dataset) -> tuple:
    net = overhead.make_net()
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    stamps = []
    for x, y in DataLoader(dataset, batch_size=32):
        loss = compiled_loss(net, x, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        stamps.append(overhead._stamp())
    return overhead._per_step(stamps)


@torch.compiler.disable
def _record_stamp() -> None:
    """Outside dynamo: traced, the growing list would be guarded on and recompile the step's tail at every step."""
    Model.stamps.append(overhead._stamp())


class Model(volt.LightningModule):
    """Defined once, at module level: dynamo reuses its compiled steps for every new instance."""

    stamps: list = []

    def __init__(self):
        super().__init__()
        self.net = overhead.make_net()

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = torch.nn.functional.cross_entropy(self.net(x), y)
        self.log("loss", loss, prog_bar=True)
        _record_stamp()
        return loss

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=1e-3)


def volt_loop(dataset, root: str) -> tuple:
    Model.stamps = []
    trainer = volt.Trainer(max_epochs=1, default_root_dir=root, compile=True)
    trainer.fit(Model(), DataLoader(dataset, batch_size=32))
    return overhead._per_step(Model.stamps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=1000, help="steps per run (the first 200 are warm-up)")
    parser.add_argument("--rounds", type=int, default=9)
    args = parser.parse_args()
    torch.set_num_threads(1)
    logging.getLogger("volt").setLevel(logging.ERROR)  # its info lines (model summary) would interleave the table
    from torch._dynamo.utils import counters

    dataset = overhead.make_data(args.steps)
    times = {"raw": [], "volt": []}
    ratios = ([], [])
    graphs = {}
    with tempfile.TemporaryDirectory() as root:
        for round_index in range(args.rounds):
            before = counters["stats"]["unique_graphs"]
            raw = raw_loop(dataset)
            graphs.setdefault("raw", counters["stats"]["unique_graphs"] - before)
            before = counters["stats"]["unique_graphs"]
            ours = overhead._quietly(volt_loop, dataset, os.path.join(root, str(round_index)))
            graphs.setdefault("volt", counters["stats"]["unique_graphs"] - before)
            times["raw"].append(raw)
            times["volt"].append(ours)
            ratios[0].append(ours[0] / raw[0])
            ratios[1].append(ours[1] / raw[1])
    print(f"\ntorch.compile (inductor), tiny MLP, batch 32, {args.steps - overhead.WARMUP} timed steps a run, "
          f"{args.rounds} alternating rounds; torch {torch.__version__}, {torch.get_num_threads()} thread")
    print(f"{'loop':<16}{'wall us':>9}{'vs raw':>9}{'(IQR)':>14}{'cpu us':>9}{'vs raw':>9}{'(IQR)':>14}{'graphs':>8}")
    for name in ("raw", "volt"):
        wall = statistics.median(v[0] for v in times[name]) * 1e6
        cpu = statistics.median(v[1] for v in times[name]) * 1e6
        if name == "raw":
            print(f"{'compiled raw':<16}{wall:>9.1f}{'1.000x':>9}{'':>14}{cpu:>9.1f}{'1.000x':>9}{'':>14}"
                  f"{graphs[name]:>8}")
        else:
            print(f"{'volt compile':<16}{wall:>9.1f}{statistics.median(ratios[0]):>8.3f}x"
                  f"{overhead._spread(ratios[0]):>14}{cpu:>9.1f}{statistics.median(ratios[1]):>8.3f}x"
                  f"{overhead._spread(ratios[1]):>14}{graphs[name]:>8}")


if __name__ == "__main__":
    main()
