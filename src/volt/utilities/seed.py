"""Seeding and the RNG snapshots that exact resume relies on."""
import os
import random
from contextlib import contextmanager
from typing import Iterator, Optional

import numpy as np
import torch

from volt.utilities.rank_zero import rank_zero_info, rank_zero_only


min_seed_value = 0
max_seed_value = 2**32 - 1


def seed_everything(seed=None, workers: bool = False, verbose: bool = True) -> int:
    """Seed `random`, numpy and torch (CPU and CUDA). Returns the seed used.

    With no seed, reads `PL_GLOBAL_SEED` from the environment, else uses 0. `workers=True` makes every DataLoader
    worker derive its own seed from it (`PL_SEED_WORKERS`), as Lightning does.
    """
    if seed is None:
        seed = int(os.environ.get("PL_GLOBAL_SEED", 0))
    seed = int(seed)
    if not (min_seed_value <= seed <= max_seed_value):
        raise ValueError(f"seed_everything: {seed} is out of range; use an integer in [0, 2**32 - 1].")
    if verbose:
        rank_zero_info(f"Seed set to {seed}")
    os.environ["PL_GLOBAL_SEED"] = str(seed)
    os.environ["PL_SEED_WORKERS"] = str(int(workers))
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device
    return seed


def pl_worker_init_function(worker_id: int, rank: Optional[int] = None) -> None:
    """The `worker_init_fn` that `seed_everything(workers=True)` gives DataLoaders without one of their own.

    It reseeds torch, `random` and numpy in a worker process from the worker's base seed (the one PyTorch drew for
    this iteration), its id and the global rank, so that no two workers of any rank share a stream. The arithmetic
    is Lightning's, so a Lightning program draws the same augmentations under volt.
    """
    rank = rank_zero_only.rank if rank is None else rank
    base_seed = torch.initial_seed() - worker_id
    torch_seed, random_high, random_low = _mixed_seeds((base_seed << 32) | (worker_id << 16) | rank, count=3)
    torch.manual_seed(torch_seed)
    random.seed((random_high << 32) | random_low)
    np.random.seed(np.random.SeedSequence([base_seed, worker_id, rank]).generate_state(4))


def _mixed_seeds(value: int, count: int) -> list:
    """`count` 64-bit seeds from `value`: MurmurHash3's 64-bit finaliser, then steps of Knuth's MMIX generator."""
    mask = (1 << 64) - 1
    for multiplier in (0xFF51AFD7ED558CCD, 0xC4CEB9FE1A85EC53):
        value ^= value >> 33
        value = (value * multiplier) & mask
    value ^= value >> 33
    seeds = []
    for _ in range(count):
        value = (value * 6364136223846793005 + 1) & mask
        seeds.append(value)
    return seeds


def reset_seed() -> None:
    """Seed again with the seed `seed_everything` set (in a process started later, e.g. a spawned rank)."""
    seed = os.environ.get("PL_GLOBAL_SEED")
    if seed is not None:
        seed_everything(int(seed), workers=bool(int(os.environ.get("PL_SEED_WORKERS", "0"))), verbose=False)


@contextmanager
def isolate_rng(include_cuda: bool = True) -> Iterator[None]:
    """Run the block, then put the global RNG states (torch, numpy, random, CUDA) back as they were before it."""
    states = get_rng_states()
    if not include_cuda:
        states.pop("cuda", None)
    try:
        yield
    finally:
        set_rng_states(states)


def get_rng_states() -> dict:
    """The global RNG states (torch, CUDA, numpy, random) as checkpoint-safe plain data (numpy's uint32 keys as int64:
    plain pickle cannot load a uint32 tensor back, so a Trainer holding one would not pickle)."""
    np_state = np.random.get_state()
    states = {
        "torch": torch.get_rng_state(),
        "numpy": {"kind": np_state[0], "keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
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
