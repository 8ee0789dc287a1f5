"""Per-step overhead as counts the machine's load cannot move: CPU instructions (valgrind's callgrind) and Python
function calls.

Wall-clock ratios on a shared or virtual machine wander by +-10% or more from run to run; the number of instructions
a step executes does not. Each contender runs once under callgrind, uninstrumented (fast) until step `--first`,
where it switches the instrumentation on (callgrind_control) and marks the start of steps `--first` and
`--first + --steps` with a call to getppid(), which callgrind is told to dump its counters before: the second dump
holds exactly the instructions of the steps in between (each from the start of its training_step to the start of the
next one: backward, optimizer step, batch-end hooks, logging, fetching the next batch), without the imports and
the set-up. The contenders (set up as in `overhead.py`: tiny MLP, batch 32, Adam, one
`self.log("loss", loss, prog_bar=True)` a step):

    raw          the hand-written loop
    volt         Trainer defaults: progress bar, TensorBoard logger, checkpointing, model summary
    volt-bare    the same with logger=False, enable_checkpointing=False
    lightning    pytorch-lightning with its defaults, as `volt` (when installed)

The allocator is pinned too: glibc's malloc serves most allocations from small per-size caches (tcache, 7 chunks
each) and sends the rest down a slower path whose cost depends on the heap's layout, which differs between
contenders (and between builds) for reasons unrelated to their code: about 0.01x on a row, enough to put the
`logger=False` row above the defaults. The callgrind runs get larger caches (MALLOC_TUNABLES), so that every
contender's allocations are cheap alike and the counts compare the code (`--native-malloc` counts without them).

Time-based behaviour is pinned so that it matches a native run: the progress bars redraw every 100 batches (volt's
0.1 s limit gives about that at ~1 ms a step; under valgrind every step would take longer than that). Python calls
per step are counted with sys.setprofile over the same steps of a plain run. Instructions are not time: the
interpreter runs fewer instructions per cycle than torch's kernels, so a framework's share of the wall-clock time is
somewhat larger than its share of instructions.

    python benchmarks/instructions.py [--first 200] [--steps 200] [--contenders raw volt volt-bare lightning]
                                      [--native-malloc]
    (needs valgrind; a few minutes: each contender's callgrind run starts Python and torch under valgrind)
"""
import argparse
import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from typing import Optional

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.join(os.path.dirname(HERE), "src")
CONTENDERS = ("raw", "volt", "volt-bare", "lightning")
MALLOC_TUNABLES = "glibc.malloc.tcache_count=1000"  # glibc's per-size caches: 1000 chunks each instead of 7

_RUN = r"""
import os, subprocess, sys, tempfile, warnings, torch
sys.path[:0] = [{here!r}, {src!r}]
import overhead
torch.set_num_threads(1)
contender = {contender!r}
overhead.COUNTED = ({first}, {first} + {steps})


class Marks:
    calls = 0

    def start(self):
        # callgrind has run uninstrumented so far (--instr-atstart=no): switch it on, running Python meanwhile
        # (valgrind serves the request between blocks of guest code, not while the process waits in a system call)
        switch = subprocess.Popen(["callgrind_control", "--instr=on", str(os.getpid())],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        while switch.poll() is None:
            sum(range(10000))
        if switch.returncode != 0:
            raise SystemExit("callgrind_control could not switch the instrumentation on")
        self.stop()

    def stop(self):
        os.getppid()  # callgrind dumps its counters before each getppid call (--dump-before)


counter = overhead._CallCounter() if {count_calls} else Marks()
dataset = overhead.make_data({first} + {steps} + 1)
if contender == "raw":
    overhead.raw_loop(dataset, counter)
else:
    warnings.filterwarnings("ignore")
    if contender == "lightning":
        import pytorch_lightning as pl
    else:
        import volt as pl
        pl.callbacks.TQDMProgressBar.min_refresh_interval = 0.0
    options = dict(logger=False, enable_checkpointing=False) if contender == "volt-bare" else {{}}
    out = sys.stdout
    sys.stdout = sys.stderr = open(os.devnull, "w")
    overhead.framework_loop(pl, dataset, tempfile.mkdtemp(), counter,
                            callbacks=[pl.callbacks.TQDMProgressBar(refresh_rate=100)], **options)
    sys.stdout = out
print("calls", counter.calls / {steps})
"""


def _script(contender: str, first: int, steps: int, count_calls: bool) -> str:
    return _RUN.format(here=HERE, src=SRC, contender=contender, first=first, steps=steps, count_calls=count_calls)


def instructions(contender: str, first: int, steps: int, keep: Optional[str] = None,
                 native_malloc: bool = False) -> float:
    """Instructions per step of steps first .. first + steps - 1 (their callgrind dump copied into `keep`)."""
    env = dict(os.environ)
    if not native_malloc:
        env["GLIBC_TUNABLES"] = ":".join(filter(None, (env.get("GLIBC_TUNABLES"), MALLOC_TUNABLES)))
    with tempfile.TemporaryDirectory() as tmp:
        out_file = os.path.join(tmp, "cg")
        out = subprocess.run(
            ["valgrind", "--tool=callgrind", "--instr-atstart=no", "--dump-before=getppid",
             f"--callgrind-out-file={out_file}",
             sys.executable, "-c", _script(contender, first, steps, False)],
            capture_output=True, text=True, env=env)
        dumps = sorted(glob.glob(out_file + ".*"))
        if out.returncode != 0 or len(dumps) != 2:
            raise SystemExit(f"callgrind run of {contender} failed ({len(dumps)} dumps, expected 2):\n"
                             f"{out.stderr[-3000:]}")
        with open(out_file + ".2") as window:
            totals = re.search(r"^totals: (\d+)", window.read(), re.MULTILINE)
        if keep:
            shutil.copy(out_file + ".2", os.path.join(keep, f"callgrind.{contender}"))
    return int(totals.group(1)) / steps


def python_calls(contender: str, first: int, steps: int) -> float:
    out = subprocess.run([sys.executable, "-c", _script(contender, first, steps, True)], capture_output=True,
                         text=True)
    found = re.search(r"calls ([\d.]+)", out.stdout)
    if out.returncode != 0 or not found:
        raise SystemExit(f"counting the Python calls of {contender} failed:\n{out.stderr[-3000:]}")
    return float(found.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--first", type=int, default=200, help="the first counted step (the ones before warm up)")
    parser.add_argument("--steps", type=int, default=200, help="steps counted (a multiple of 100)")
    parser.add_argument("--contenders", nargs="+", choices=CONTENDERS, default=list(CONTENDERS))
    parser.add_argument("--jobs", type=int, default=2, help="callgrind runs at a time")
    parser.add_argument("--native-malloc", action="store_true", help="count with glibc's default malloc caches "
                        "(the heap's layout then moves each row by about 0.01x)")
    parser.add_argument("--keep", metavar="DIR", help="keep each contender's callgrind dump of the counted steps "
                        "there, as callgrind.<contender> (read them with callgrind_annotate)")
    args = parser.parse_args()
    if args.steps <= 0 or args.steps % 100:
        parser.error("--steps must be a positive multiple of 100 (the redraw period), so that the counted steps "
                     "hold the same share of redraws and logger writes as a long run")
    contenders = ["raw", *[c for c in args.contenders if c != "raw"]]
    if "lightning" in contenders and subprocess.run([sys.executable, "-c", "import pytorch_lightning"],
                                                    capture_output=True).returncode != 0:
        print("pytorch-lightning is not installed: leaving it out")
        contenders.remove("lightning")
    window = f"steps {args.first}-{args.first + args.steps - 1}"
    calls = {c: python_calls(c, args.first, args.steps) for c in contenders}
    print(f"Python calls per training step (sys.setprofile, {window})")
    for contender in contenders:
        print(f"  {contender:<11}{calls[contender]:8.1f}   +{calls[contender] - calls['raw']:.1f}")
    if shutil.which("valgrind") is None:
        print("valgrind is not installed (apt install valgrind): skipping the instruction count.")
        return
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:  # instruction counts do not mind sharing the machine
        per_step = dict(zip(contenders, pool.map(
            lambda c: instructions(c, args.first, args.steps, args.keep, args.native_malloc), contenders)))
    malloc = "glibc's default malloc" if args.native_malloc else MALLOC_TUNABLES
    print(f"Instructions per training step (callgrind, {window}, {malloc})")
    for contender, count in per_step.items():
        print(f"  {contender:<11}{count / 1e6:8.3f} M   {count / per_step['raw']:.3f}x")


if __name__ == "__main__":
    main()
