"""Per-step overhead as a count of CPU instructions (valgrind's callgrind): a measure the machine's load cannot move.

Wall-clock ratios on a shared or virtual machine wander by +-10% from run to run; the number of instructions a step
executes does not. Each contender (the raw loop and volt, set up as in `overhead.py`) runs under callgrind twice,
for a short and a long epoch; the difference, divided by the extra steps, is the cost of one step without the
start-up. Time-based behaviour is pinned so that it matches a native run: the progress bar redraws every 100
batches (its 0.1 s limit gives about that at ~1 ms a step; under valgrind every step would take longer than that).
Instructions are not time: the interpreter runs fewer instructions per cycle than torch's kernels, so a framework's
share of the wall-clock time is somewhat larger than its share of instructions.

    python benchmarks/instructions.py [--short 250] [--long 450]      (needs valgrind; takes a few minutes)
"""
import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.join(os.path.dirname(HERE), "src")

_RUN = r"""
import os, sys, tempfile, torch
sys.path[:0] = [{here!r}, {src!r}]
import overhead
torch.set_num_threads(1)
dataset = overhead.make_data({steps})
if {contender!r} == "raw":
    overhead.raw_loop(dataset)
else:
    import volt
    from volt.callbacks import TQDMProgressBar

    TQDMProgressBar.min_refresh_interval = 0.0
    sys.stderr = open(os.devnull, "w")
    overhead.framework_loop(volt, dataset, tempfile.mkdtemp(), callbacks=[TQDMProgressBar(refresh_rate=100)])
"""


def instructions(contender: str, steps: int) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        out = subprocess.run(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={os.path.join(tmp, 'cg')}",
             sys.executable, "-c", _RUN.format(here=HERE, src=SRC, steps=steps, contender=contender)],
            capture_output=True, text=True)
    found = re.search(r"Collected : (\d+)", out.stderr)
    if out.returncode != 0 or not found:
        raise SystemExit(f"callgrind run of {contender} failed:\n{out.stderr[-3000:]}")
    return int(found.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--short", type=int, default=250, help="steps of the short run (at least 201)")
    parser.add_argument("--long", type=int, default=450, help="steps of the long run")
    args = parser.parse_args()
    if shutil.which("valgrind") is None:
        print("valgrind is not installed (apt install valgrind): skipping the instruction count.")
        return
    extra = args.long - args.short
    runs = [(contender, steps) for contender in ("raw", "volt") for steps in (args.short, args.long)]
    with ThreadPoolExecutor(max_workers=2) as pool:  # instruction counts do not mind sharing the machine
        counts = dict(zip(runs, pool.map(lambda run: instructions(*run), runs)))
    per_step = {c: (counts[(c, args.long)] - counts[(c, args.short)]) / extra for c in ("raw", "volt")}
    print(f"Instructions per training step (callgrind, {args.long} - {args.short} steps), tiny MLP, batch 32")
    for contender, count in per_step.items():
        print(f"  {contender:<6}{count / 1e6:8.3f} M   {count / per_step['raw']:.3f}x")


if __name__ == "__main__":
    main()
