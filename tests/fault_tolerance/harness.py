"""Helpers for the fault-tolerance tests: run the training script in a subprocess, compare final states."""
import json
import os
import subprocess
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.join(os.path.dirname(os.path.dirname(HERE)), "src")
SCRIPT = os.path.join(HERE, "run_training.py")


def run_script(cfg: dict, timeout: float = 120, env: dict = None) -> subprocess.CompletedProcess:
    """Run `run_training.py` with `cfg` in a fresh Python process; returns the finished process."""
    os.makedirs(cfg["root"], exist_ok=True)
    path = os.path.join(cfg["root"], f"config-{len(os.listdir(cfg['root']))}.json")
    with open(path, "w") as f:
        json.dump(cfg, f)
    environ = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", ""), **(env or {})}
    return subprocess.run([sys.executable, SCRIPT, path], env=environ, capture_output=True, text=True,
                          timeout=timeout)


def load_final(root) -> dict:
    return torch.load(os.path.join(root, "final.pt"), weights_only=False)


def assert_same(a, b, where: str = "state") -> None:
    """Exact equality of nested dicts/lists of tensors and plain values (tensors: dtype, shape and bits)."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor), f"{where}: tensor vs {type(b).__name__}"
        assert a.dtype == b.dtype and a.shape == b.shape, f"{where}: {a.dtype}{tuple(a.shape)} vs {b.dtype}{tuple(b.shape)}"
        assert torch.equal(a, b), f"{where} differs: {a} vs {b}"
    elif isinstance(a, dict):
        assert isinstance(b, dict) and set(a) == set(b), f"{where}: keys {sorted(a)} vs {sorted(b) if isinstance(b, dict) else b}"
        for key in a:
            assert_same(a[key], b[key], f"{where}[{key!r}]")
    elif isinstance(a, (list, tuple)):
        assert isinstance(b, (list, tuple)) and len(a) == len(b), f"{where}: {a} vs {b}"
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{where}[{i}]")
    else:
        assert a == b, f"{where}: {a!r} vs {b!r}"


def read_text(path) -> str:
    with open(path) as f:
        return f.read()
