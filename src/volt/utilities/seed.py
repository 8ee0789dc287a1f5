"""Seeding and the RNG snapshots that exact resume relies on."""
import os
import random

import numpy as np
import torch

from volt.utilities.rank_zero import rank_zero_info


def seed_everything(seed=None, workers: bool = False, verbose: bool = True) -> int:
    """Seed `random`, numpy and torch (CPU and CUDA). Returns the seed used.

    With no seed, reads `PL_GLOBAL_SEED` from the environment, else uses 0. `workers=True` makes every DataLoader
    worker derive its own seed from it (`PL_SEED_WORKERS`), as Lightning does.
    """
    if seed is None:
        seed = int(os.environ.get("PL_GLOBAL_SEED", 0))
    seed = int(seed)
    if not (0 <= seed <= 2**32 - 1):
        raise ValueError(f"seed_everything: {seed} is out of range; use an integer in [0, 2**32 - 1].")
    if verbose:
        rank_zero_info(f"Seed set to {seed}")
    os.environ["PL_GLOBAL_SEED"] = str(seed)
    os.environ["PL_SEED_WORKERS"] = str(int(workers))
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device
    return seed


def get_rng_states() -> dict:
    """The global RNG states (torch, CUDA, numpy, random) as checkpoint-safe plain data."""
    np_state = np.random.get_state()
    states = {
        "torch": torch.get_rng_state(),
        "numpy": {"kind": np_state[0], "keys": torch.from_numpy(np_state[1].copy()), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
        "python": _python_state_to_plain(random.getstate()),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict) -> None:
    """Restore what `get_rng_states` returned."""
    torch.set_rng_state(states["torch"])
    npst = states["numpy"]
    np.random.set_state((npst["kind"], npst["keys"].numpy().astype(np.uint32), npst["pos"], npst["has_gauss"],
                         npst["cached_gaussian"]))
    random.setstate(_python_state_from_plain(states["python"]))
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def _python_state_to_plain(state):
    version, internal, gauss = state
    return {"version": version, "internal": list(internal), "gauss_next": gauss}


def _python_state_from_plain(plain):
    return (plain["version"], tuple(plain["internal"]), plain["gauss_next"])
