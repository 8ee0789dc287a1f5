"""Choosing the strategy: the Trainer's `accelerator`, `strategy`, `devices` and `num_nodes` arguments, and the
cluster environment (torchrun, SLURM), become one configured Strategy."""
import os
import sys
from typing import Any, List, Optional

import torch

from volt.distributed import launcher as _launcher
from volt.distributed.ddp import DDPStrategy
from volt.distributed.environments import ClusterEnvironment, LightningEnvironment, detect_environment
from volt.distributed.parallel import ParallelStrategy
from volt.distributed.strategy import SingleDeviceStrategy, Strategy
from volt.utilities.exceptions import MisconfigurationException


def select_strategy(strategy: Any, accelerator: Any, devices: Any, num_nodes: int,
                    cluster_environment: Optional[ClusterEnvironment] = None) -> Strategy:
    """The strategy for the Trainer's arguments: a parallel one when several processes are asked for (or were
    started by torchrun/SLURM, or by the `plugins=` cluster environment), else one device."""
    device_type = parse_accelerator(accelerator)
    device_ids = parse_devices(devices, device_type)
    parallel = _parallel_strategy(strategy, device_type, device_ids, num_nodes, cluster_environment)
    if parallel is not None:
        return parallel
    if isinstance(strategy, Strategy):
        return strategy
    name = str(strategy).lower() if strategy is not None else "auto"
    if name not in ("auto", "single_device"):
        raise MisconfigurationException(
            f"strategy={strategy!r} is not supported. Choose 'auto', 'single_device', 'ddp', 'ddp_spawn', "
            "'ddp_fork', 'ddp_notebook', 'ddp_find_unused_parameters_true' or 'fsdp'."
        )
    index = device_ids[0] if device_type == "cuda" else None
    device = torch.device(device_type, index) if index is not None else torch.device(device_type)
    return SingleDeviceStrategy(device, accelerator=device_type)


def parse_accelerator(accelerator: Any) -> str:
    """Resolve "auto"/"gpu"/"cuda"/"mps"/"cpu" (or an Accelerator instance) to the device type that will be used."""
    if accelerator is not None and not isinstance(accelerator, str):  # an Accelerator (volt/accelerators)
        if getattr(accelerator, "device_type", None) not in ("cpu", "cuda", "mps"):
            raise ValueError(
                f"accelerator={accelerator!r} is not supported: volt trains on 'cpu', 'cuda' and 'mps' devices. Pass "
                "one of those names, or CPUAccelerator(), CUDAAccelerator() or MPSAccelerator()."
            )
        accelerator = accelerator.device_type
    name = str(accelerator).lower() if accelerator is not None else "auto"
    if name == "auto":
        if torch.cuda.is_available():
            return "cuda"
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    if name in ("gpu", "cuda"):
        if not torch.cuda.is_available():
            raise RuntimeError(
                f"accelerator={accelerator!r} (or gpus=N) asks for a CUDA GPU, but none is available on this machine "
                f"(torch {torch.__version__}, CUDA build: {torch.version.cuda is not None}). "
                "Use accelerator='cpu' (or 'auto'), or run where a GPU is visible."
            )
        return "cuda"
    if name == "mps":
        if not (getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()):
            raise RuntimeError("accelerator='mps' asks for Apple's MPS backend, which is not available here.")
        return "mps"
    if name == "cpu":
        return "cpu"
    raise ValueError(
        f"accelerator={accelerator!r} is not supported. Choose 'cpu', 'gpu' (or 'cuda'), 'mps' or 'auto'."
    )


def parse_devices(devices: Any, device_type: str) -> List[int]:
    """Resolve devices (int, list, "0,1", "auto", -1) to a list of device indices."""
    available = torch.cuda.device_count() if device_type == "cuda" else (1 if device_type == "mps" else None)
    if devices in ("auto", None):
        return list(range(available)) if device_type == "cuda" else [0]
    if isinstance(devices, str):
        devices = devices.strip()
        if devices == "-1":
            devices = -1
        elif "," in devices:
            devices = [int(d) for d in devices.split(",") if d.strip()]
        else:
            try:
                devices = int(devices)
            except ValueError:
                raise ValueError(f"devices={devices!r} is not understood; use an int, a list of indices, or 'auto'.")
    if isinstance(devices, bool):
        raise ValueError(f"devices={devices!r} is not understood; use an int, a list of indices, or 'auto'.")
    if isinstance(devices, int):
        if devices == -1:
            return list(range(available)) if available is not None else list(range(max(1, _cpu_count())))
        if devices < 1:
            raise ValueError(f"devices={devices} must be a positive int, a list of indices, -1 or 'auto'.")
        if available is not None and devices > available:
            raise ValueError(f"devices={devices} asks for more {device_type} devices than the {available} available.")
        return list(range(devices))
    if isinstance(devices, (list, tuple)):
        indices = [int(d) for d in devices]
        if not indices:
            raise ValueError("devices=[] selects no device; pass at least one index.")
        if available is not None and max(indices) >= available:
            raise ValueError(f"devices={list(devices)} includes an index beyond the {available} {device_type} devices.")
        return indices
    raise ValueError(f"devices={devices!r} is not understood; use an int, a list of indices, or 'auto'.")


def _cpu_count() -> int:
    return os.cpu_count() or 1


_NAMED = {
    "ddp": lambda: DDPStrategy(),
    "ddp_spawn": lambda: DDPStrategy(start_method="spawn"),
    "ddp_fork": lambda: DDPStrategy(start_method="fork"),
    "ddp_notebook": lambda: DDPStrategy(start_method="fork"),
    "ddp_find_unused_parameters_true": lambda: DDPStrategy(find_unused_parameters=True),
    "ddp_find_unused_parameters_false": lambda: DDPStrategy(find_unused_parameters=False),
    "ddp_spawn_find_unused_parameters_true": lambda: DDPStrategy(start_method="spawn", find_unused_parameters=True),
    "ddp_fork_find_unused_parameters_true": lambda: DDPStrategy(start_method="fork", find_unused_parameters=True),
}


def _parallel_strategy(flag: Any, device_type: str, device_ids: List[int], num_nodes: int,
                       cluster_environment: Optional[ClusterEnvironment]) -> Optional[ParallelStrategy]:
    """The multi-process strategy for the Trainer's arguments, configured; None when one process is enough."""
    if isinstance(flag, ParallelStrategy):
        strategy = flag
    else:
        if isinstance(flag, Strategy):
            return None
        name = str(flag).lower() if flag is not None else "auto"
        if name == "auto":
            if not (len(device_ids) > 1 or num_nodes > 1 or _launched_externally(cluster_environment)):
                return None
            name = "ddp_fork" if _interactive() else "ddp"
        if name == "fsdp":
            from volt.distributed.fsdp import FSDPStrategy

            strategy = FSDPStrategy()
        elif name in _NAMED:
            strategy = _NAMED[name]()
        else:
            return None
    if cluster_environment is not None:
        strategy.cluster_environment = cluster_environment
    try:
        strategy.configure(device_type, device_ids, num_nodes)
    except MisconfigurationException as exc:
        env = strategy.cluster_environment
        if env is not None and env.creates_processes_externally:  # other ranks may already wait for this one
            _launcher.announce_failure(_launcher.failure_record(
                {"rank": os.environ.get("RANK", "?"), "world_size": os.environ.get("WORLD_SIZE", "?"),
                 "pid": os.getpid()}, exc))
        raise
    return strategy


def _launched_externally(env: Optional[ClusterEnvironment] = None) -> bool:
    """torchrun or srun (or the given environment) started several processes for this job."""
    env = env or detect_environment()
    return not isinstance(env, LightningEnvironment) and env.detect() and env.world_size() > 1


def _interactive() -> bool:
    return hasattr(sys, "ps1") or bool(sys.flags.interactive)
