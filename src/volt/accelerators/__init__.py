"""Accelerators: the kind of device a Trainer runs on. `Trainer(accelerator="cuda")` and
`Trainer(accelerator=CUDAAccelerator())` are the same; `trainer.accelerator` is the instance in use.

volt places modules and batches itself (`volt/distributed/strategy.py`); an accelerator says which devices exist,
parses `devices=`, prepares a device and reports its statistics (DeviceStatsMonitor reads them).
"""
from typing import Any, Callable, Dict, List, Optional, Union

import torch

from volt.utilities.exceptions import MisconfigurationException

_CPU_VM_PERCENT = "cpu_vm_percent"
_CPU_PERCENT = "cpu_percent"
_CPU_SWAP_PERCENT = "cpu_swap_percent"


class Accelerator:
    """Base class. A subclass names its `device_type` (a torch device type volt can train on)."""

    device_type: str = ""

    def setup_device(self, device: torch.device) -> None:
        """Prepare `device` before the model moves there."""

    def setup(self, trainer: Any) -> None:
        """Called once the Trainer is configured."""

    def teardown(self) -> None:
        """Release what `setup_device` took."""

    @staticmethod
    def parse_devices(devices: Any) -> Any:
        raise NotImplementedError

    @staticmethod
    def get_parallel_devices(devices: Any) -> List[torch.device]:
        raise NotImplementedError

    @staticmethod
    def auto_device_count() -> int:
        raise NotImplementedError

    @staticmethod
    def is_available() -> bool:
        raise NotImplementedError

    def get_device_stats(self, device: Union[str, torch.device]) -> Dict[str, Any]:
        """Numbers describing the device's state (memory, utilisation), for logging."""
        raise NotImplementedError

    @classmethod
    def register_accelerators(cls, accelerator_registry: "_AcceleratorRegistry") -> None:
        """Add this accelerator to the registry under its name(s)."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class CPUAccelerator(Accelerator):
    device_type = "cpu"

    def setup_device(self, device: torch.device) -> None:
        if torch.device(device).type != "cpu":
            raise MisconfigurationException(f"CPUAccelerator cannot use the device {device}; it needs a CPU device.")

    @staticmethod
    def parse_devices(devices: Union[int, str]) -> int:
        """`devices` for the CPU is a number of processes."""
        from volt.distributed.selection import parse_devices

        return len(parse_devices(devices, "cpu"))

    @staticmethod
    def get_parallel_devices(devices: Union[int, str]) -> List[torch.device]:
        return [torch.device("cpu")] * CPUAccelerator.parse_devices(devices)

    @staticmethod
    def auto_device_count() -> int:
        return 1

    @staticmethod
    def is_available() -> bool:
        return True

    def get_device_stats(self, device: Union[str, torch.device]) -> Dict[str, float]:
        return get_cpu_stats()

    @classmethod
    def register_accelerators(cls, accelerator_registry: "_AcceleratorRegistry") -> None:
        accelerator_registry.register("cpu", cls, description=cls.__name__)


def get_cpu_stats() -> Dict[str, float]:
    """Memory, CPU and swap use in percent (needs psutil)."""
    try:
        import psutil
    except ImportError as err:
        raise ModuleNotFoundError("CPU device statistics need psutil: `pip install psutil`.") from err
    return {_CPU_VM_PERCENT: psutil.virtual_memory().percent, _CPU_PERCENT: psutil.cpu_percent(),
            _CPU_SWAP_PERCENT: psutil.swap_memory().percent}


class CUDAAccelerator(Accelerator):
    device_type = "cuda"

    def setup_device(self, device: torch.device) -> None:
        device = torch.device(device)
        if device.type != "cuda":
            raise MisconfigurationException(f"CUDAAccelerator cannot use the device {device}; it needs a CUDA device.")
        torch.cuda.set_device(device)

    def teardown(self) -> None:
        if torch.cuda.is_initialized():
            torch.cuda.empty_cache()

    @staticmethod
    def parse_devices(devices: Union[int, str, List[int]]) -> List[int]:
        """`devices` for CUDA: the GPU indices to use."""
        from volt.distributed.selection import parse_devices

        return parse_devices(devices, "cuda")

    @staticmethod
    def get_parallel_devices(devices: List[int]) -> List[torch.device]:
        return [torch.device("cuda", index) for index in devices]

    @staticmethod
    def auto_device_count() -> int:
        return num_cuda_devices()

    @staticmethod
    def is_available() -> bool:
        return num_cuda_devices() > 0

    def get_device_stats(self, device: Union[str, torch.device]) -> Dict[str, Any]:
        return torch.cuda.memory_stats(device)

    @classmethod
    def register_accelerators(cls, accelerator_registry: "_AcceleratorRegistry") -> None:
        accelerator_registry.register("cuda", cls, description=cls.__name__)


class MPSAccelerator(Accelerator):
    """Apple silicon GPUs (one device)."""

    device_type = "mps"

    def setup_device(self, device: torch.device) -> None:
        if torch.device(device).type != "mps":
            raise MisconfigurationException(f"MPSAccelerator cannot use the device {device}; it needs an MPS device.")

    @staticmethod
    def parse_devices(devices: Union[int, str, List[int]]) -> List[int]:
        from volt.distributed.selection import parse_devices

        return parse_devices(devices, "mps")

    @staticmethod
    def get_parallel_devices(devices: Union[int, str, List[int]]) -> List[torch.device]:
        return [torch.device("mps", 0) for _ in MPSAccelerator.parse_devices(devices)]

    @staticmethod
    def auto_device_count() -> int:
        return 1

    @staticmethod
    def is_available() -> bool:
        mps = getattr(torch.backends, "mps", None)
        return mps is not None and mps.is_available()

    def get_device_stats(self, device: Union[str, torch.device]) -> Dict[str, float]:
        return get_cpu_stats()  # unified memory: the host's figures

    @classmethod
    def register_accelerators(cls, accelerator_registry: "_AcceleratorRegistry") -> None:
        accelerator_registry.register("mps", cls, description=cls.__name__)


def num_cuda_devices() -> int:
    """How many CUDA devices this process can see (0 without CUDA)."""
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def is_cuda_available() -> bool:
    return num_cuda_devices() > 0


def find_usable_cuda_devices(num_devices: int = -1) -> List[int]:
    """Indices of CUDA devices this process can allocate on (GPUs in exclusive mode held by another process are
    skipped): `num_devices` of them, or all with -1. Raises when fewer are usable than asked for."""
    if num_devices == 0:
        return []
    visible = list(range(num_cuda_devices()))
    if not visible:
        raise ValueError(f"find_usable_cuda_devices({num_devices}): this machine has no visible CUDA device.")
    if num_devices > len(visible):
        raise ValueError(f"find_usable_cuda_devices({num_devices}): this machine has only {len(visible)} GPUs.")
    usable, busy = [], []
    for index in visible:
        try:
            torch.tensor(0, device=torch.device("cuda", index))
        except RuntimeError:
            busy.append(index)
            continue
        usable.append(index)
        if len(usable) == num_devices:
            break
    if num_devices != -1 and len(usable) != num_devices:
        raise RuntimeError(f"find_usable_cuda_devices({num_devices}): only {len(usable)} GPUs are usable; "
                           f"GPUs {busy} are occupied by other processes.")
    return usable


class _AcceleratorRegistry(dict):
    """Accelerators by name: `AcceleratorRegistry.get("cuda")` gives a new CUDAAccelerator."""

    def register(self, name: str, accelerator: Optional[Callable] = None, description: str = "",
                 override: bool = False, **init_params: Any) -> Callable:
        """Register `accelerator` (a class or factory) under `name`; usable as a decorator without `accelerator`."""
        if not isinstance(name, str):
            raise TypeError(f"AcceleratorRegistry.register: `name` must be a str, got {name!r}.")
        if name in self and not override:
            raise MisconfigurationException(f"{name!r} is already registered; pass `override=True` to replace it.")

        def do_register(accelerator: Callable) -> Callable:
            self[name] = {"accelerator": accelerator, "description": description, "init_params": init_params}
            return accelerator

        return do_register(accelerator) if accelerator is not None else do_register

    def get(self, name: str, default: Any = None) -> Any:
        if name in self:
            entry = self[name]
            return entry["accelerator"](**entry["init_params"])
        if default is not None:
            return default
        raise KeyError(f"No accelerator named {name!r}; registered: {', '.join(self.available_accelerators())}.")

    def remove(self, name: str) -> None:
        self.pop(name)

    def available_accelerators(self) -> List[str]:
        return list(self.keys())

    def __str__(self) -> str:
        return f"Registered Accelerators: {', '.join(self.available_accelerators())}"


AcceleratorRegistry = _AcceleratorRegistry()
ACCELERATOR_REGISTRY = AcceleratorRegistry  # Fabric's name for it
for _accelerator in (CPUAccelerator, CUDAAccelerator, MPSAccelerator):
    _accelerator.register_accelerators(AcceleratorRegistry)


def accelerator_for(flag: Any, device_type: str) -> Accelerator:
    """The Accelerator a Trainer uses: the instance it was given, else the registered one for its device type."""
    if isinstance(flag, Accelerator):
        return flag
    if device_type not in _IN_USE:
        _IN_USE[device_type] = AcceleratorRegistry.get(device_type)
    return _IN_USE[device_type]


_IN_USE: Dict[str, Accelerator] = {}  # accelerators hold no state: one instance per device type serves every Trainer


__all__ = ["Accelerator", "AcceleratorRegistry", "CPUAccelerator", "CUDAAccelerator", "MPSAccelerator",
           "find_usable_cuda_devices"]
