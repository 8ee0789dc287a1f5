"""GPU proof: volt on one NVIDIA GPU against a hand-written loop and pytorch-lightning 2.6.6, in one run.

Parts (each runs in a fresh process with its own time limit, so one that hangs or crashes is recorded as such and
the others still run; the whole run is meant to stay under 8 minutes on an H100):
  env         the device, torch and CUDA versions
  throughput  a small GPT-style language model (6 layers, d=512, sequence 256, batch 32) on synthetic tokens:
              tokens/s of the raw loop, volt and Lightning (Trainer defaults: progress bar, logger, checkpointing)
              in alternating rounds, for bf16-mixed and 16-mixed; each ratio against the raw loop of its round
  sync        no host synchronisation in volt's training steps: `torch.cuda.set_sync_debug_mode("error")` armed
              around every step after the second, with logging, progress bar and checkpointing on, for a loader
              with worker processes (batches prefetched on a side stream) and one without; and a control run with
              a `.item()` in the step, which must fail
  ddp         Trainer(strategy="ddp", devices=1): a process group of one on nccl (backend, weights on the GPU,
              loss going down, steps free of host syncs) and its tokens/s against the single-device run
  memory      peak GPU memory (torch.cuda.max_memory_allocated) of volt against the raw loop, bf16-mixed
  compile     Trainer(compile=True) against the raw loop compiled the same way (torch.compile of forward+loss),
              tokens/s, the graphs each compiled, and a check that none is compiled after the warm-up (the input
              shape never changes, so a later compile would be a recompile)

Without a GPU every part still runs where it can, on the CPU, with a tiny model, and says so: throughput and compile
on the CPU (labelled "CPU fallback"; Lightning runs 16-mixed as bf16 there), ddp as a gloo process group of one;
sync and memory are skipped (their CPU stand-in is tests/test_device_path.py). The results go to a JSON file and a
Markdown table (--out). The exit status is 1 if a correctness check failed or a part crashed or timed out.

    python benchmarks/gpu_check.py [--out benchmarks/results] [--rounds 3] [--steps 120] [--parts env,sync,...]
    (CPU fallback defaults: --rounds 2 --steps 50, one thread)
"""
import argparse
import json
import logging
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import warnings

import torch
from torch.utils.data import DataLoader, Dataset

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.join(os.path.dirname(HERE), "src")
if SRC not in sys.path:
    sys.path.insert(0, SRC)

CUDA = torch.cuda.is_available()
# (seconds on a GPU, seconds on the CPU fallback) per part; the GPU total is under 8 minutes
TIMEOUTS = {"env": (60, 60), "throughput": (150, 600), "sync": (60, 30), "ddp": (60, 300), "memory": (40, 30),
            "compile": (110, 600)}
PARTS = list(TIMEOUTS)
WARMUP = 20


# ------------------------------------------------------------------------------------------------ model and data
class Config:
    """The language model's size: realistic on a GPU, tiny on the CPU fallback."""

    def __init__(self, cpu: bool) -> None:
        self.vocab, self.seq, self.batch = (256, 32, 8) if cpu else (8192, 256, 32)
        self.dim, self.layers, self.heads = (64, 2, 4) if cpu else (512, 6, 8)
        self.workers = 2


class Block(torch.nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.norm1, self.norm2 = torch.nn.LayerNorm(dim), torch.nn.LayerNorm(dim)
        self.qkv, self.proj = torch.nn.Linear(dim, 3 * dim), torch.nn.Linear(dim, dim)
        self.mlp = torch.nn.Sequential(torch.nn.Linear(dim, 4 * dim), torch.nn.GELU(), torch.nn.Linear(4 * dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        attended = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(attended.transpose(1, 2).reshape(b, t, d))
        return x + self.mlp(self.norm2(x))


class TinyGPT(torch.nn.Module):
    def __init__(self, config: Config) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.embed = torch.nn.Embedding(config.vocab, config.dim)
        self.position = torch.nn.Parameter(torch.zeros(config.seq, config.dim))
        self.blocks = torch.nn.Sequential(*[Block(config.dim, config.heads) for _ in range(config.layers)])
        self.head = torch.nn.Sequential(torch.nn.LayerNorm(config.dim), torch.nn.Linear(config.dim, config.vocab))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.embed(tokens) + self.position))


def lm_loss(net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    logits = net(x)
    return torch.nn.functional.cross_entropy(logits.flatten(0, 1), y.flatten())


class Counting(Dataset):
    """Sequences that count up from a random start (mod vocab): learnable, so the loss must go down."""

    def __init__(self, config: Config, n: int) -> None:
        starts = torch.randint(0, config.vocab, (n, 1), generator=torch.Generator().manual_seed(0))
        self.tokens = (starts + torch.arange(config.seq + 1)) % config.vocab

    def __len__(self) -> int:
        return len(self.tokens)

    def __getitem__(self, i: int):
        return self.tokens[i, :-1], self.tokens[i, 1:]


def loader(config: Config, steps: int) -> DataLoader:
    return DataLoader(Counting(config, steps * config.batch), batch_size=config.batch, num_workers=config.workers,
                      pin_memory=CUDA, persistent_workers=False)


def sync() -> None:
    if CUDA:
        torch.cuda.synchronize()


# ------------------------------------------------------------------------------------------------ contenders
def raw_run(config: Config, steps: int, precision: str, compiled: bool = False) -> dict:
    """The hand-written loop: pinned non-blocking copies, autocast, a GradScaler for 16-mixed, AdamW."""
    device = torch.device("cuda" if CUDA else "cpu")
    net = TinyGPT(config).to(device)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    dtype = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}.get(precision)
    scaler = torch.amp.GradScaler(device.type) if precision == "16-mixed" else None
    loss_fn = torch.compile(lm_loss) if compiled else lm_loss
    losses, stamps = [], []
    for x, y in loader(config, steps):
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            loss = loss_fn(net, x, y)
        opt.zero_grad()
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
        else:
            loss.backward()
            opt.step()
        losses.append(loss.detach())
        if len(losses) in (WARMUP, steps):
            sync()
            stamps.append((time.perf_counter(), _graphs()))
    return _measured(config, steps, stamps, losses)


def _graphs() -> int:
    """Graphs dynamo has compiled in this process so far (0 when nothing was compiled)."""
    if "torch._dynamo" not in sys.modules:
        return 0
    from torch._dynamo.utils import counters

    return counters["stats"]["unique_graphs"]


def _measured(config: Config, steps: int, stamps: list, losses: list) -> dict:
    """Tokens/s between the warm-up stamp and the last one; graphs compiled after the warm-up (recompiles)."""
    (start, graphs_start), (end, graphs_end) = stamps
    return {"tokens_per_s": (steps - WARMUP) * config.batch * config.seq / (end - start),
            "first_loss": losses[0].item(), "last_loss": losses[-1].item(),
            "graphs_after_warmup": graphs_end - graphs_start}


def framework_module(pl, config: Config):
    class LM(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = TinyGPT(config)

        def training_step(self, batch, batch_idx):
            loss = lm_loss(self.net, *batch)
            self.log("loss", loss, prog_bar=True)
            return loss

        def configure_optimizers(self):
            return torch.optim.AdamW(self.parameters(), lr=1e-3)

    return LM()


def framework_run(pl, config: Config, steps: int, precision: str, **trainer_options) -> dict:
    """A framework's Trainer with its defaults (progress bar, logger, checkpointing) on the same model and data."""
    stamps, backend, losses = [], [], []

    class Clock(pl.Callback):
        """Times the steps after the warm-up and keeps the losses (outside the step: a compiled step that appended
        to a list would recompile for every new length)."""

        def on_train_start(self, trainer, module):
            if torch.distributed.is_available() and torch.distributed.is_initialized():
                backend.append(torch.distributed.get_backend())

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            losses.append(outputs["loss"])
            if batch_idx + 1 in (WARMUP, steps):
                sync()
                stamps.append((time.perf_counter(), _graphs()))

    module = framework_module(pl, config)
    trainer = pl.Trainer(accelerator="gpu" if CUDA else "cpu", devices=1, precision=precision, max_epochs=1,
                         default_root_dir=tempfile.mkdtemp(), callbacks=[Clock()], **trainer_options)
    with _quiet():
        trainer.fit(module, loader(config, steps))
    result = _measured(config, steps, stamps, losses)
    result["device"] = next(module.parameters()).device.type
    result["backend"] = backend[0] if backend else None
    return result


class _quiet:
    """Progress bars and framework messages go to /dev/null while a contender runs."""

    def __enter__(self):
        self.saved = sys.stdout, sys.stderr
        sys.stdout = sys.stderr = open(os.devnull, "w")
        for name in ("volt", "pytorch_lightning", "lightning.pytorch"):
            logging.getLogger(name).setLevel(logging.ERROR)
        warnings.simplefilter("ignore")

    def __exit__(self, *exc):
        sys.stdout.close()
        sys.stdout, sys.stderr = self.saved


def _ratio_summary(ratios: list) -> dict:
    ordered = sorted(ratios)
    return {"median": statistics.median(ratios), "min": ordered[0], "max": ordered[-1]}


# ------------------------------------------------------------------------------------------------ parts
def part_env(args) -> dict:
    info = {"torch": torch.__version__, "cuda": torch.version.cuda, "python": platform.python_version(),
            "gpu": torch.cuda.get_device_name(0) if CUDA else None, "cpu_fallback": not CUDA}
    if CUDA:
        info["bf16"] = torch.cuda.is_bf16_supported()
        info["memory_gib"] = round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1)
    try:
        import pytorch_lightning

        info["lightning"] = pytorch_lightning.__version__
    except ImportError:
        info["lightning"] = None
    return {"results": info, "failures": []}


def part_throughput(args) -> dict:
    import volt

    try:
        import pytorch_lightning as lightning
    except ImportError:
        lightning = None
    config = Config(cpu=not CUDA)
    results, failures = {}, []
    for precision in ("bf16-mixed", "16-mixed"):
        runs = {"raw": [], "volt": [], "lightning": []}
        for _ in range(args.rounds):
            runs["raw"].append(raw_run(config, args.steps, precision))
            runs["volt"].append(framework_run(volt, config, args.steps, precision))
            if lightning is not None:
                runs["lightning"].append(framework_run(lightning, config, args.steps, precision))
        entry = {name: {"tokens_per_s": statistics.median(r["tokens_per_s"] for r in rs),
                        "last_loss": rs[-1]["last_loss"], "first_loss": rs[-1]["first_loss"]}
                 for name, rs in runs.items() if rs}
        for name in ("volt", "lightning"):
            if runs[name]:
                entry[name]["vs_raw"] = _ratio_summary(
                    [r["tokens_per_s"] / raw["tokens_per_s"] for r, raw in zip(runs[name], runs["raw"])])
        if not CUDA and precision == "16-mixed":
            entry["note"] = "CPU: volt runs fp16 autocast with a GradScaler; Lightning falls back to bf16"
        results[precision] = entry
        last = runs["volt"][-1]
        if not last["last_loss"] < last["first_loss"]:
            failures.append(f"{precision}: volt's loss did not go down ({last['first_loss']:.3f} -> "
                            f"{last['last_loss']:.3f})")
        if last["device"] != ("cuda" if CUDA else "cpu"):
            failures.append(f"{precision}: volt's weights on {last['device']}")
    return {"results": results, "failures": failures}


def _sync_debug_fit(volt, config: Config, steps: int, workers: int, read_in_step: bool, **trainer_options):
    """A volt fit with defaults and `set_sync_debug_mode("error")` armed from the third step to the epoch end."""
    from volt.callbacks import RichProgressBar, TQDMProgressBar

    # the default bar (rich when installed, else tqdm) redraws at every batch end: its reads are in every step
    TQDMProgressBar.min_refresh_interval, RichProgressBar.max_redraws_per_second = 0.0, 1e9

    class Arm(volt.Callback):
        armed = 0

        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            if batch_idx >= 2:
                torch.cuda.set_sync_debug_mode("error")
                Arm.armed += 1

        def on_train_epoch_end(self, trainer, module):
            torch.cuda.set_sync_debug_mode("default")

    module = framework_module(volt, config)
    if read_in_step:
        plain_step = module.training_step

        def step_reading_its_loss(batch, batch_idx):
            loss = plain_step(batch, batch_idx)
            loss.item()  # waits for the GPU: the sync detector must catch it
            return loss

        module.training_step = step_reading_its_loss
    data = DataLoader(Counting(config, steps * config.batch), batch_size=config.batch, num_workers=workers)
    trainer = volt.Trainer(accelerator="gpu", devices=1, max_epochs=1, log_every_n_steps=5, precision="bf16-mixed",
                           default_root_dir=tempfile.mkdtemp(), callbacks=[Arm()], **trainer_options)
    try:
        with _quiet():
            trainer.fit(module, data)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    return {"armed_steps": Arm.armed, "checkpoint": bool(trainer.checkpoint_callback.best_model_path),
            "logger": type(trainer.logger).__name__, "progress_bar": type(trainer.progress_bar_callback).__name__}


def part_sync(args) -> dict:
    if not CUDA:
        return {"skipped": "needs CUDA (CPU stand-in: tests/test_device_path.py, a tensor subclass that refuses "
                           "host reads)", "results": {}, "failures": []}
    import volt

    config, steps = Config(cpu=False), 60
    results, failures = {}, []
    for workers in (2, 0):
        name = f"num_workers={workers}" + (" (prefetched)" if workers else "")
        try:
            results[name] = _sync_debug_fit(volt, config, steps, workers, read_in_step=False)
        except RuntimeError as error:
            results[name] = {"error": str(error).splitlines()[0]}
            failures.append(f"{name}: a host sync in a training step: {str(error).splitlines()[0]}")
    try:
        _sync_debug_fit(volt, config, steps, 2, read_in_step=True)
        failures.append("control run: a .item() in the step was not caught (the check cannot fail)")
        results["control (.item() in the step)"] = "not caught"
    except RuntimeError:
        results["control (.item() in the step)"] = "caught, as it must be"
    return {"results": results, "failures": failures}


def part_ddp(args) -> dict:
    import volt

    config = Config(cpu=not CUDA)
    steps = args.steps
    single = framework_run(volt, config, steps, "bf16-mixed" if CUDA else "32-true")
    ddp = framework_run(volt, config, steps, "bf16-mixed" if CUDA else "32-true", strategy="ddp")
    expected = "nccl" if CUDA else "gloo"
    results = {"backend": ddp["backend"], "device": ddp["device"], "tokens_per_s": ddp["tokens_per_s"],
               "vs_single_device": ddp["tokens_per_s"] / single["tokens_per_s"],
               "loss": [ddp["first_loss"], ddp["last_loss"]]}
    failures = []
    if ddp["backend"] != expected:
        failures.append(f"backend {ddp['backend']!r}, expected {expected!r}")
    if ddp["device"] != ("cuda" if CUDA else "cpu"):
        failures.append(f"weights on {ddp['device']}")
    if not ddp["last_loss"] < ddp["first_loss"]:
        failures.append("loss did not go down")
    if CUDA:
        try:
            synced = _sync_debug_fit(volt, config, 40, 2, read_in_step=False, strategy="ddp")
            results["sync_debug"] = f"no host sync in {synced['armed_steps']} steps"
        except RuntimeError as error:
            failures.append(f"DDP step made a host sync: {str(error).splitlines()[0]}")
    else:
        results["note"] = "CPU fallback: a gloo process group of one (nccl needs a GPU)"
    return {"results": results, "failures": failures}


def part_memory(args) -> dict:
    if not CUDA:
        return {"skipped": "needs CUDA (host memory: benchmarks/memory.py)", "results": {}, "failures": []}
    import volt

    config, peaks = Config(cpu=False), {}
    for name, run in (("raw", lambda: raw_run(config, 60, "bf16-mixed")),
                      ("volt", lambda: framework_run(volt, config, 60, "bf16-mixed"))):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        run()
        peaks[name] = torch.cuda.max_memory_allocated() / 2**20
    extra = peaks["volt"] - peaks["raw"]
    results = {"raw_mib": peaks["raw"], "volt_mib": peaks["volt"], "volt_minus_raw_mib": extra}
    failures = [f"volt's peak is {extra:.0f} MiB above the raw loop's"] if extra > 0.05 * peaks["raw"] + 64 else []
    return {"results": results, "failures": failures}


def part_compile(args) -> dict:
    """One run each (compiling is what takes the time): tokens/s, graphs compiled, none after the warm-up."""
    import volt
    from torch._dynamo.utils import counters

    config = Config(cpu=not CUDA)
    precision = "bf16-mixed" if CUDA else "32-true"
    before = counters["stats"]["unique_graphs"]
    raw = raw_run(config, args.steps, precision, compiled=True)
    raw_graphs = counters["stats"]["unique_graphs"] - before
    before = counters["stats"]["unique_graphs"]
    ours = framework_run(volt, config, args.steps, precision, compile=True)
    volt_graphs = counters["stats"]["unique_graphs"] - before
    results = {"graphs": {"raw": raw_graphs, "volt": volt_graphs}, "raw_tokens_per_s": raw["tokens_per_s"],
               "volt_tokens_per_s": ours["tokens_per_s"], "volt_vs_raw": ours["tokens_per_s"] / raw["tokens_per_s"]}
    failures = []
    if volt_graphs != raw_graphs:
        failures.append(f"volt compiled {volt_graphs} graphs where the raw loop compiled {raw_graphs}")
    for name, run in (("raw", raw), ("volt", ours)):
        if run["graphs_after_warmup"]:
            failures.append(f"{name}: {run['graphs_after_warmup']} graphs compiled after the warm-up "
                            "(a recompile with the input shape unchanged)")
    if not ours["last_loss"] < ours["first_loss"]:
        failures.append("compiled volt run: loss did not go down")
    if not CUDA:
        results["note"] = "CPU fallback: inductor on the CPU, tiny model, 32-true"
    return {"results": results, "failures": failures}


# ------------------------------------------------------------------------------------------------ the run
def run_part(name: str, args) -> dict:
    """Run one part in a fresh process under its time limit; what it printed last is its JSON result."""
    limit = TIMEOUTS[name][0 if CUDA else 1]
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as handle:
        path = handle.name
    command = [sys.executable, os.path.abspath(__file__), "--part", name, "--part-out", path,
               "--rounds", str(args.rounds), "--steps", str(args.steps)]
    start = time.perf_counter()
    # a session of its own, so that a part which times out is ended with everything it started (loader workers)
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)
    try:
        _, log = process.communicate(timeout=limit)
        status = "crashed" if process.returncode != 0 else None
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        _, log = process.communicate()
        status = "timed out"
    log = (log or "")[-2000:]
    seconds = round(time.perf_counter() - start, 1)
    if status is not None:
        return {"status": status, "seconds": seconds, "limit_s": limit, "log": log, "failures": [status]}
    with open(path) as handle:
        outcome = json.load(handle)
    os.unlink(path)
    outcome["status"] = "skipped" if outcome.get("skipped") else ("failed" if outcome["failures"] else "ok")
    outcome.update(seconds=seconds, limit_s=limit)
    return outcome


def markdown(report: dict) -> str:
    env = report["parts"].get("env", {}).get("results", {})
    where = env.get("gpu") or "no GPU: CPU fallback"
    lines = [f"# volt GPU check: {where}", "",
             f"torch {env.get('torch')}, CUDA {env.get('cuda')}, pytorch-lightning {env.get('lightning')}; "
             f"total {report['seconds']} s", "", "| part | status | seconds | results |", "|---|---|---:|---|"]
    for name, part in report["parts"].items():
        detail = part.get("skipped") or "; ".join(part.get("failures") or []) or _flat(part.get("results", {}))
        lines.append(f"| {name} | {part['status']} | {part['seconds']} | {detail} |")
    throughput = report["parts"].get("throughput", {}).get("results", {})
    if throughput:
        lines += ["", "| precision | raw tokens/s | volt tokens/s | volt/raw (min-max) | Lightning tokens/s | "
                      "Lightning/raw |", "|---|---:|---:|---:|---:|---:|"]
        for precision, entry in throughput.items():
            volt_ratio, light = entry["volt"]["vs_raw"], entry.get("lightning")
            lines.append(f"| {precision} | {entry['raw']['tokens_per_s']:,.0f} | {entry['volt']['tokens_per_s']:,.0f}"
                         f" | {volt_ratio['median']:.3f} ({volt_ratio['min']:.3f}-{volt_ratio['max']:.3f}) | "
                         + (f"{light['tokens_per_s']:,.0f} | {light['vs_raw']['median']:.3f} |" if light else "- | - |"))
    return "\n".join(lines) + "\n"


def _flat(results: dict) -> str:
    parts = []
    for key, value in results.items():
        if isinstance(value, float):
            value = f"{value:.4g}"
        elif isinstance(value, dict):
            value = "{" + _flat(value) + "}"
        parts.append(f"{key}: {value}")
    return ", ".join(parts)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=os.path.join(HERE, "results"), help="folder for gpu_check.json / .md")
    parser.add_argument("--rounds", type=int, default=3 if CUDA else 2)
    parser.add_argument("--steps", type=int, default=120 if CUDA else 50,
                        help=f"steps a run (the first {WARMUP} are warm-up)")
    parser.add_argument("--parts", default=",".join(PARTS), help="comma-separated subset of " + ", ".join(PARTS))
    parser.add_argument("--part", help=argparse.SUPPRESS)  # run one part in this process (used by the parent)
    parser.add_argument("--part-out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if not CUDA:  # on a shared CPU, several threads per op mostly wait for each other
        torch.set_num_threads(1)
    if args.part:
        outcome = globals()[f"part_{args.part}"](args)
        with open(args.part_out, "w") as handle:
            json.dump(outcome, handle)
        return 0
    start = time.perf_counter()
    report = {"parts": {}}
    for name in args.parts.split(","):
        report["parts"][name] = outcome = run_part(name, args)
        print(f"{name:<11} {outcome['status']:<10} {outcome['seconds']:>6} s  "
              f"{outcome.get('skipped') or '; '.join(outcome['failures']) or _flat(outcome.get('results', {}))}",
              flush=True)
    report["seconds"] = round(time.perf_counter() - start, 1)
    os.makedirs(args.out, exist_ok=True)
    name = "gpu_check" if CUDA else "gpu_check_cpu_fallback"
    with open(os.path.join(args.out, f"{name}.json"), "w") as handle:
        json.dump(report, handle, indent=2)
    with open(os.path.join(args.out, f"{name}.md"), "w") as handle:
        handle.write(markdown(report))
    print(f"total {report['seconds']} s; results in {os.path.join(args.out, name)}.json and .md")
    return 1 if any(part["failures"] for part in report["parts"].values()) else 0


if __name__ == "__main__":
    sys.exit(main())
