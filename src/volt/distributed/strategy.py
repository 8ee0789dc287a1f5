"""Strategies: where the model lives and how processes talk. The single-device strategy is the base;
multi-process ones (volt/distributed/ddp.py) override the collective operations."""
import contextlib
from typing import Any, Dict, List, Optional

import torch


class Strategy:
    """One process, one device. Collectives are identities."""

    strategy_name = "single_device"

    def __init__(self, device: Optional[torch.device] = None, accelerator: Optional[str] = None) -> None:
        self.root_device = torch.device(device) if device is not None else torch.device("cpu")
        self.accelerator = accelerator
        self.model: Optional[torch.nn.Module] = None  # what forward passes go through (a DDP wrapper, say)
        self.lightning_module = None
        self._lightning_optimizers: List[Any] = []
        self.precision_plugin = None

    # ------------------------------------------------------------------ topology
    world_size = 1
    global_rank = 0
    local_rank = 0
    node_rank = 0
    num_nodes = 1

    @property
    def is_global_zero(self) -> bool:
        return self.global_rank == 0

    @property
    def num_processes(self) -> int:
        return self.world_size

    # ------------------------------------------------------------------ life cycle
    def launch(self, function, *args: Any, **kwargs: Any) -> Any:
        """Run `function` in this process (multi-process strategies start the other ranks here)."""
        return function(*args, **kwargs)

    def setup_environment(self) -> None:
        if self.root_device.type == "cuda":
            torch.cuda.set_device(self.root_device)

    def connect(self, module) -> None:
        self.lightning_module = module
        self.model = module

    def setup_module(self, module) -> torch.nn.Module:
        """Move the module to the device; wrappers (DDP, FSDP) are applied by subclasses."""
        module.to(self.root_device)
        self.model = module
        return module

    def teardown(self) -> None:
        pass

    # ------------------------------------------------------------------ steps (go through `self.model` so wrappers see them)
    def training_step(self, *args: Any, **kwargs: Any) -> Any:
        return self.lightning_module.training_step(*args, **kwargs)

    def validation_step(self, *args: Any, **kwargs: Any) -> Any:
        return self.lightning_module.validation_step(*args, **kwargs)

    def test_step(self, *args: Any, **kwargs: Any) -> Any:
        return self.lightning_module.test_step(*args, **kwargs)

    def predict_step(self, *args: Any, **kwargs: Any) -> Any:
        return self.lightning_module.predict_step(*args, **kwargs)

    def stop_coordinator(self, batch_source):
        """What agrees across processes on when a signalled run stops (None: one process, stop at once)."""
        return None

    def no_backward_sync(self, enabled: bool):
        return contextlib.nullcontext()

    # ------------------------------------------------------------------ checkpoint contents (sharded strategies gather)
    def lightning_module_state_dict(self) -> Dict[str, Any]:
        """The full model state dict, as a checkpoint stores it (every rank calls this; rank 0's is saved)."""
        return self.lightning_module.state_dict()

    def load_model_state_dict(self, state_dict: Dict[str, Any], strict: bool = True) -> None:
        self.lightning_module.load_state_dict(state_dict, strict=strict)

    def optimizer_state(self, optimizer) -> Dict[str, Any]:
        """The optimizer's full state dict, in torch's usual layout (parameters numbered in order)."""
        return optimizer.state_dict()

    def load_optimizer_state_dict(self, optimizer, state: Dict[str, Any]) -> None:
        optimizer.load_state_dict(state)

    def accumulated_grads(self) -> Dict[str, torch.Tensor]:
        """This rank's gradients summed so far in an unfinished accumulation window, by parameter name."""
        return {name: p.grad for name, p in self.lightning_module.named_parameters() if p.grad is not None}

    def load_accumulated_grads(self, grads: Dict[str, torch.Tensor]) -> None:
        """Put back what `accumulated_grads` returned: the window's next backward adds to it."""
        for name, param in self.lightning_module.named_parameters():
            if name in grads:
                param.grad = grads[name].to(param.device)

    # ------------------------------------------------------------------ collectives
    def barrier(self, name: Optional[str] = None) -> None:
        pass

    def broadcast(self, obj: Any, src: int = 0) -> Any:
        return obj

    def reduce(self, tensor, group: Any = None, reduce_op: Optional[str] = "mean"):
        return tensor

    def all_gather(self, data: Any, group: Any = None, sync_grads: bool = False) -> Any:
        return data

    def gather_object(self, obj: Any, dst: int = 0) -> Optional[List[Any]]:
        """Every rank's `obj`, in rank order, on rank `dst` (None on the others). `obj` holds tensors and plain data:
        it is read back with weights_only=True, as checkpoints are. `dst`'s own entry is `obj` itself; the others'
        tensors arrive on the CPU. Not for the training path: the objects are serialized."""
        return [obj]

    def reduce_boolean_decision(self, decision: bool, all: bool = True) -> bool:
        return decision


SingleDeviceStrategy = Strategy


def parse_accelerator(accelerator: Any) -> str:
    """Resolve "auto"/"gpu"/"cuda"/"mps"/"cpu" to the device type that will be used."""
    name = getattr(accelerator, "name", accelerator)
    name = str(name).lower() if name is not None else "auto"
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
    import os

    return os.cpu_count() or 1
