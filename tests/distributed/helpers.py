"""Running the distributed test scripts the way users run them: as files, with `python`, volt's launcher or
torchrun, in fresh processes."""
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

import torch

SCRIPTS = Path(__file__).parent / "scripts"
SRC = Path(__file__).resolve().parents[2] / "src"
_LAUNCH_VARS = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE", "RANK", "GROUP_RANK",
                "LOCAL_WORLD_SIZE", "TORCHELASTIC_RUN_ID", "SLURM_NTASKS", "PL_GLOBAL_SEED")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def script_env(**extra: str) -> Dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _LAUNCH_VARS}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(SRC), env.get("PYTHONPATH", "")) if p)
    env["OMP_NUM_THREADS"] = "1"
    env["PYTHONFAULTHANDLER"] = "1"  # a rank that aborts prints every thread's Python stack
    env.update(extra)
    return env


def torchrun() -> List[str]:
    runner = shutil.which("torchrun")
    return [runner] if runner else [sys.executable, "-m", "torch.distributed.run"]


def train_command(out: Path, options: dict, launcher: Optional[List[str]] = None) -> List[str]:
    return (launcher or [sys.executable]) + [str(SCRIPTS / "train.py"), str(out), json.dumps(options)]


def start(out: Path, options: dict, launcher: Optional[List[str]] = None, **env: str) -> subprocess.Popen:
    return subprocess.Popen(train_command(out, options, launcher), env=script_env(**env), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)


def run(out: Path, options: dict, launcher: Optional[List[str]] = None, timeout: float = 50, **env: str) -> str:
    """Run the training script to completion; fails the test (with the output) if it exits non-zero."""
    proc = start(out, options, launcher, **env)
    output = finish(proc, timeout)
    assert proc.returncode == 0, output[-6000:]
    return output


def finish(proc: subprocess.Popen, timeout: float) -> str:
    try:
        output, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)
        output, _ = proc.communicate()
        raise AssertionError(f"the job did not end within {timeout} s:\n{output[-6000:]}")
    return output


def reports(out: Path) -> Dict[int, dict]:
    return {int(p.stem[4:]): torch.load(p, weights_only=False) for p in sorted(out.glob("rank*.pt"))}


def running(pid: int) -> bool:
    """Whether `pid` is a live process (a zombie waiting to be reaped is not)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False


def wait_for_files(paths: List[Path], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not all(p.exists() for p in paths):
        assert time.monotonic() < deadline, f"the ranks never wrote {[str(p) for p in paths]}"
        time.sleep(0.05)
    time.sleep(0.05)  # the writer may not have flushed yet
