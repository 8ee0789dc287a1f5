"""Run Lightning's own examples (examples/pytorch of Lightning 2.6) unmodified on volt and on Lightning, with the
same data and seed, and compare what they log and save.

    git -C LIGHTNING_REPO archive 2.6.5 examples/pytorch | tar -x -C /tmp/lex
    python scripts/lightning_examples/run.py --examples /tmp/lex/examples/pytorch [--only NAME ...] [--work DIR]

Each example that can run on this machine is copied byte for byte into two fresh folders and run from a fresh
working directory with small arguments where it takes them, the two runs at the same time, one thread each: once as
`python -m volt run EXAMPLE ARGS` (volt), once as `python EXAMPLE ARGS` with pytorch-lightning 2.6.6 (the test
extra's oracle; `lightning_alias/` on PYTHONPATH lets `import lightning` reach it). A program that does not seed
itself gets the same seed in both runs at interpreter start (`seed/`). Lightning's demos download MNIST and
WikiText-2, volt's generate stand-ins; this script writes volt's stand-in data where Lightning's demos look first
(torchvision's MNIST files, `./data/wikitext-2.txt`, checked to read back item for item), so both runs see the same
data. The transformer example trains 20 epochs (fixed in its code): both runs get the first 4,600 lines of the
WikiText-2 stand-in, so that it takes minutes on a CPU.

Compared: every scalar each run logged (TensorBoard event files: tag, step, value) and the weights in every
checkpoint it saved (same file names). Examples that cannot run here are listed with the reason. Exits 1 if a run
fails or a comparison is not equal. Needs the test extra (`pip install -e ".[test]"`) and, for the MNIST examples, a
torchvision that imports with the installed torch (PyPI's torchvision 0.28 for torch 2.13 is a CUDA build: with the
CPU torch it fails to import).
"""
import argparse
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import torch

REPO = Path(__file__).resolve().parents[2]
ALIAS_DIR = Path(__file__).resolve().parent / "lightning_alias"
SEED_DIR = Path(__file__).resolve().parent / "seed"
# the first lines of volt's generated WikiText-2 stand-in: ~150,000 words, 4,300 blocks of 35, of which the
# transformer example trains on those past its 2,000 validation and 2,000 test blocks
WIKITEXT_LINES = 4600
SMALL_CLI = ["--trainer.max_epochs", "1", "--trainer.limit_train_batches", "5", "--trainer.limit_val_batches", "2",
             "--trainer.limit_test_batches", "2", "--trainer.limit_predict_batches", "2"]


@dataclasses.dataclass
class Example:
    path: str  # relative to examples/pytorch
    args: Tuple[str, ...] = ()
    needs: Tuple[str, ...] = ()  # importable packages it needs
    data: Tuple[str, ...] = ()  # stand-in data the Lightning run gets: "mnist", "wikitext2"
    skip: Optional[str] = None  # why it cannot run here
    seed: Optional[int] = None  # for a program that does not seed itself: torch's seed at interpreter start


EXAMPLES = [
    Example("bug_report/bug_report_model.py", seed=1234),
    Example("bug_report/bug_report_model.ipynb", skip="a notebook: the program of bug_report_model.py"),
    Example("basics/autoencoder.py", tuple(SMALL_CLI), needs=("torchvision",), data=("mnist",)),
    Example("basics/backbone_image_classifier.py", tuple(SMALL_CLI), needs=("torchvision",), data=("mnist",)),
    Example("basics/transformer.py", data=("wikitext2",)),
    Example("basics/profiler_example.py", skip="downloads CIFAR-10 and pretrained ResNet-18 weights (no internet); "
            "its trainer defaults ask for accelerator='gpu'"),
    Example("domain_templates/computer_vision_fine_tuning.py",
            skip="downloads the cats-and-dogs images and pretrained ResNet-50 weights (no internet)"),
    Example("domain_templates/generative_adversarial_net.py",
            skip="needs a GPU: Trainer(accelerator='gpu') is written into the program"),
    Example("domain_templates/imagenet.py", skip="needs ImageNet on disk and torchvision's pretrained weights"),
    Example("domain_templates/reinforce_learn_Qnet.py", skip="needs gym"),
    Example("domain_templates/reinforce_learn_ppo.py", skip="needs gym"),
    Example("domain_templates/semantic_segmentation.py",
            skip="needs the KITTI dataset on disk and torchvision; Trainer() is written into it (1,000 epochs of a "
                 "U-Net)"),
    Example("servable_module/production.py",
            skip="downloads CIFAR-10 and pretrained ResNet-18 weights (no internet)"),
    Example("fp8_distributed_transformer/train.py", skip="needs CUDA GPUs with FP8 and torchao"),
    Example("tensor_parallel/train.py", skip="needs several CUDA GPUs (ModelParallelStrategy)"),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", required=True, type=Path, help="Lightning's examples/pytorch folder")
    parser.add_argument("--work", type=Path, help="where to run (default: a new temporary folder)")
    parser.add_argument("--only", nargs="*", help="run only the examples whose path contains one of these")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per run")
    args = parser.parse_args()
    if not (args.examples / "bug_report" / "bug_report_model.py").is_file():
        parser.error(f"--examples {args.examples}: not Lightning's examples/pytorch folder (no bug_report/ in it)")
    work = args.work or Path(tempfile.mkdtemp(prefix="lightning-examples-"))
    results = []
    for example in EXAMPLES:
        if args.only and not any(name in example.path for name in args.only):
            continue
        result = {"example": example.path, **run_example(example, args.examples, work, args.timeout)}
        results.append(result)
        print(summary_line(result), flush=True)
    (work / "results.json").write_text(json.dumps(results, indent=1))
    print(f"\n{markdown_table(results)}\n\nDetails: {work / 'results.json'}")
    raise SystemExit(0 if all(matches(result) for result in results) else 1)


def matches(result: dict) -> bool:
    """Skipped, or both runs succeeded with equal logged values and equal checkpoint weights."""
    if "skipped" in result:
        return True
    return (result["metrics"].startswith(("equal", "nothing logged"))
            and result["weights"].startswith(("equal", "no checkpoint saved")))


def run_example(example: Example, examples: Path, work: Path, timeout: float) -> dict:
    """Both runs of one example and their comparison, or why it was skipped."""
    reason = example.skip or missing_packages(example.needs)
    if reason:
        return {"skipped": reason}
    name = example.path.replace("/", "-").removesuffix(".py")
    processes = {}
    for framework in ("volt", "lightning"):
        copy = work / framework / "examples" / "pytorch"
        if not copy.exists():
            copy_examples(examples, copy)
        cwd = work / framework / "runs" / name
        shutil.rmtree(cwd, ignore_errors=True)
        cwd.mkdir(parents=True)
        write_stand_in_data(framework, example.data, cwd, datasets=copy.parent / "Datasets")
        processes[framework] = start_run(framework, copy / example.path, list(example.args), cwd, example.seed)
    # the two runs at once (one thread each): each takes about as long as alone on a 2-core machine
    runs = finish_runs(processes, timeout)
    return {"runs": runs, **compare(runs["volt"], runs["lightning"])}


def missing_packages(packages: Tuple[str, ...]) -> Optional[str]:
    """Why an example cannot run for want of a package (installed is not enough: it must import)."""
    import importlib

    for package in packages:
        try:
            importlib.import_module(package)
        except Exception as error:  # noqa: BLE001  (a broken build raises anything)
            return f"needs {package}, which does not import here ({type(error).__name__}: {error})"
    return None


def copy_examples(source: Path, destination: Path) -> None:
    """The examples' own files only (not the outputs of earlier runs in that folder)."""
    shutil.copytree(source, destination, ignore=shutil.ignore_patterns("lightning_logs", "__pycache__", "data"))


def start_run(framework: str, script: Path, args: List[str], cwd: Path, seed: Optional[int]) -> subprocess.Popen:
    environment = {k: v for k, v in os.environ.items()
                   if not k.startswith(("VOLT_", "PL_", "MASTER_", "LOCAL_", "LIGHTNING_EXAMPLES_"))}
    environment["OMP_NUM_THREADS"] = "1"  # same CPU kernels, same summation order in both runs
    paths = [REPO / "src"] if framework == "volt" else [ALIAS_DIR]
    if seed is not None:
        environment["LIGHTNING_EXAMPLES_SEED"] = str(seed)
        paths.append(SEED_DIR)
    environment["PYTHONPATH"] = os.pathsep.join(map(str, paths))
    if framework == "volt":
        command = [sys.executable, "-m", "volt", "run", str(script), *args]
    else:
        command = [sys.executable, str(script), *args]
    process = subprocess.Popen(command, cwd=cwd, env=environment, stdout=open(cwd / "output.txt", "w"),
                               stderr=subprocess.STDOUT)
    process.cwd, process.started = cwd, time.perf_counter()
    return process


def finish_runs(processes: Dict[str, subprocess.Popen], timeout: float) -> Dict[str, dict]:
    """Wait for the runs, timing each to its own end; a run past `timeout` is killed."""
    ended: Dict[str, float] = {}
    while len(ended) < len(processes):
        for framework, process in processes.items():
            if framework not in ended and (process.poll() is not None
                                           or time.perf_counter() - process.started > timeout):
                ended[framework] = time.perf_counter()
        time.sleep(0.2)
    runs = {}
    for framework, process in processes.items():
        if process.poll() is None:
            process.kill()
            process.wait()
            returncode = f"timed out after {timeout:.0f} s"
        else:
            returncode = process.returncode
        output = (process.cwd / "output.txt").read_text(errors="replace")
        runs[framework] = {"returncode": returncode, "seconds": round(ended[framework] - process.started, 1),
                           "cwd": str(process.cwd), "output_tail": output[-3000:] if returncode != 0 else ""}
    return runs


# ---- the same data for Lightning's demos -------------------------------------------------------------------------

def write_stand_in_data(framework: str, kinds: Tuple[str, ...], cwd: Path, datasets: Path) -> None:
    """volt's generated data, written where Lightning's demos read before they download."""
    if "mnist" in kinds and framework == "lightning":
        # Lightning's MNIST() fetches torchvision's MNIST into ./data first, then opens the example's folder
        for root in (cwd / "data", datasets):
            write_mnist_files(root)
    if "wikitext2" in kinds:  # both runs read it: a shorter corpus, so that the example's 20 epochs take minutes
        from volt.demos.transformer import generate_corpus

        lines = generate_corpus().splitlines(keepends=True)[:WIKITEXT_LINES]
        (cwd / "data").mkdir(parents=True, exist_ok=True)
        (cwd / "data" / "wikitext-2.txt").write_text("".join(lines), encoding="utf8")


def write_mnist_files(root: Path) -> None:
    """volt's MNIST stand-in in torchvision's MNIST format (IDX files in <root>/MNIST/raw), checked on read-back."""
    from torchvision.datasets import MNIST as TorchvisionMNIST

    from volt.demos.mnist_datamodule import MNIST

    raw = root / "MNIST" / "raw"
    if (raw / "t10k-labels-idx1-ubyte").exists():
        return
    raw.mkdir(parents=True, exist_ok=True)
    for train, prefix in ((True, "train"), (False, "t10k")):
        dataset = MNIST(train=train, normalize=None)
        images = torch.stack([dataset[i][0] for i in range(len(dataset))]).squeeze(1).mul(255).round().byte()
        labels = torch.tensor([dataset[i][1] for i in range(len(dataset))], dtype=torch.uint8)
        write_idx(raw / f"{prefix}-images-idx3-ubyte", 2051, images)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", 2049, labels)
        back = TorchvisionMNIST(str(root), train=train, download=False)
        if not (torch.equal(back.data, images) and torch.equal(back.targets, labels.long())):
            raise RuntimeError(f"torchvision reads {raw} differently from volt's MNIST stand-in")


def write_idx(path: Path, magic: int, values: torch.Tensor) -> None:
    """The IDX format of MNIST's files: big-endian magic and sizes, then the uint8 values."""
    header = b"".join(n.to_bytes(4, "big") for n in (magic, *values.shape))
    path.write_bytes(header + values.contiguous().numpy().tobytes())


# ---- comparison ----------------------------------------------------------------------------------------------

def compare(volt_run: dict, lightning_run: dict) -> dict:
    if volt_run["returncode"] != 0 or lightning_run["returncode"] != 0:
        return {"metrics": "not compared", "weights": "not compared"}
    volt_dir, lightning_dir = Path(volt_run["cwd"]), Path(lightning_run["cwd"])
    return {"metrics": compare_scalars(logged_scalars(volt_dir), logged_scalars(lightning_dir)),
            "weights": compare_checkpoints(volt_dir, lightning_dir),
            "final_metrics": final_values(logged_scalars(volt_dir))}


def logged_scalars(run_dir: Path) -> Dict[str, List[Tuple[int, float]]]:
    """tag -> [(step, value), ...] over all TensorBoard event files a run wrote."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    scalars: Dict[str, List[Tuple[int, float]]] = {}
    for events in sorted(run_dir.rglob("events.out.tfevents.*")):
        accumulator = EventAccumulator(str(events), size_guidance={"scalars": 0})
        accumulator.Reload()
        for tag in accumulator.Tags()["scalars"]:
            scalars.setdefault(tag, []).extend((e.step, e.value) for e in accumulator.Scalars(tag))
    return scalars


def final_values(scalars: Dict[str, List[Tuple[int, float]]]) -> Dict[str, float]:
    return {tag: points[-1][1] for tag, points in sorted(scalars.items())}


def compare_scalars(volt_scalars: dict, lightning_scalars: dict) -> str:
    if not lightning_scalars:
        return "nothing logged" if not volt_scalars else f"only volt logged {sorted(volt_scalars)}"
    if set(volt_scalars) != set(lightning_scalars):
        return (f"different tags: volt only {sorted(set(volt_scalars) - set(lightning_scalars))}, "
                f"Lightning only {sorted(set(lightning_scalars) - set(volt_scalars))}")
    worst = 0.0
    for tag, points in lightning_scalars.items():
        ours = volt_scalars[tag]
        if [s for s, _ in ours] != [s for s, _ in points]:
            return f"{tag}: logged at steps {[s for s, _ in ours]} on volt, {[s for s, _ in points]} on Lightning"
        for (_, a), (_, b) in zip(ours, points):
            worst = max(worst, abs(a - b) / max(abs(b), 1e-12))
    count = sum(len(p) for p in lightning_scalars.values())
    return f"equal ({count} points)" if worst == 0 else f"max relative difference {worst:.2e} ({count} points)"


def compare_checkpoints(volt_dir: Path, lightning_dir: Path) -> str:
    volt_files = {str(p.relative_to(volt_dir)) for p in volt_dir.rglob("*.ckpt")}
    lightning_files = {str(p.relative_to(lightning_dir)) for p in lightning_dir.rglob("*.ckpt")}
    if volt_files != lightning_files:
        return f"different checkpoint files: volt {sorted(volt_files)}, Lightning {sorted(lightning_files)}"
    if not volt_files:
        return "no checkpoint saved"
    worst = 0.0
    for name in sorted(volt_files):
        ours = torch.load(volt_dir / name, map_location="cpu", weights_only=True)["state_dict"]
        theirs = torch.load(lightning_dir / name, map_location="cpu", weights_only=False)["state_dict"]
        if list(ours) != list(theirs):
            return f"{name}: different state_dict keys"
        worst = max([worst] + [(ours[k].double() - theirs[k].double()).abs().max().item() for k in ours
                               if ours[k].numel()])
    files = ", ".join(sorted(volt_files))
    return f"equal ({files})" if worst == 0 else f"max abs difference {worst:.2e} ({files})"


def summary_line(result: dict) -> str:
    if "skipped" in result:
        return f"{result['example']}: skipped: {result['skipped']}"
    runs = result["runs"]
    status = {f: ("ok" if r["returncode"] == 0 else f"FAILED ({r['returncode']})") for f, r in runs.items()}
    line = (f"{result['example']}: volt {status['volt']} {runs['volt']['seconds']} s, "
            f"Lightning {status['lightning']} {runs['lightning']['seconds']} s; "
            f"metrics {result['metrics']}; weights {result['weights']}")
    for framework, run in runs.items():
        if run["returncode"] != 0:
            line += f"\n--- {framework} output (tail) ---\n{run['output_tail']}"
    return line


def markdown_table(results: List[dict]) -> str:
    rows = ["| example | runs on volt | logged metrics vs Lightning | checkpoint weights vs Lightning |",
            "|---|---|---|---|"]
    for result in results:
        if "skipped" in result:
            rows.append(f"| {result['example']} | skipped: {result['skipped']} | | |")
            continue
        volt_run = result["runs"]["volt"]
        runs = "yes" if volt_run["returncode"] == 0 else f"no (exit {volt_run['returncode']})"
        rows.append(f"| {result['example']} | {runs} | {result['metrics']} | {result['weights']} |")
    return "\n".join(rows)


if __name__ == "__main__":
    main()
