"""Throughput arithmetic (samples, batches, items and FLOPs per second over a window) and FLOP counting."""
from collections import deque
from typing import Callable, Dict, Optional

import torch

from volt.utilities.rank_zero import rank_zero_warn

# Dense peak FLOP/s per GPU from NVIDIA's data sheets (no sparsity), for model FLOPs utilisation (`device/mfu`).
_PEAK_FLOPS: Dict[str, Dict[str, float]] = {
    "h200": {"float64": 67e12, "float32": 67e12, "tfloat32": 494.7e12, "bfloat16": 989.4e12, "float16": 989.4e12},
    "h100 sxm": {"float64": 67e12, "float32": 67e12, "tfloat32": 494.7e12, "bfloat16": 989.4e12,
                 "float16": 989.4e12},
    "h100 pcie": {"float64": 51e12, "float32": 51e12, "tfloat32": 378e12, "bfloat16": 756e12, "float16": 756e12},
    "a100": {"float64": 19.5e12, "float32": 19.5e12, "tfloat32": 156e12, "bfloat16": 312e12, "float16": 312e12},
    "l4": {"float32": 30.3e12, "tfloat32": 60e12, "bfloat16": 121e12, "float16": 121e12},
    "v100": {"float64": 7.8e12, "float32": 15.7e12, "float16": 125e12},
    "t4": {"float32": 8.1e12, "float16": 65e12},
}


def _chip(device_name: str) -> Optional[str]:
    name = device_name.lower()
    if "h200" in name:
        return "h200"
    if "h100" in name:
        return "h100 pcie" if "pcie" in name else "h100 sxm"
    for chip in ("a100", "l4", "v100", "t4"):
        if chip in name:
            return chip
    return None


def get_available_flops(device: torch.device, dtype: torch.dtype) -> Optional[float]:
    """The peak FLOP/s of `device` computing in `dtype` (float32 matmuls count as TF32 where torch allows it);
    None on a CPU or a GPU not in the table."""
    if device.type != "cuda":
        return None
    device_name = torch.cuda.get_device_name(device)
    chip = _chip(device_name)
    if chip is None:
        rank_zero_warn(f"ThroughputMonitor: peak FLOPs of {device_name!r} are not known; `device/mfu` is not logged.")
        return None
    kind = str(dtype).replace("torch.", "")
    if kind == "float32" and torch.get_float32_matmul_precision() != "highest" and \
            torch.cuda.get_device_capability(device)[0] >= 8:
        kind = "tfloat32"
    return _PEAK_FLOPS[chip].get(kind)


def measure_flops(model: torch.nn.Module, forward_fn: Callable[[], torch.Tensor],
                  loss_fn: Optional[Callable[[torch.Tensor], torch.Tensor]] = None) -> int:
    """FLOPs of one `forward_fn()` call (plus the loss and backward when `loss_fn` is given), counted by
    `torch.utils.flop_counter`. Build the model on the "meta" device to count without computing anything."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        output = forward_fn()
        if loss_fn is not None:
            loss_fn(output).backward()
    return counter.get_total_flops()


class _Window(deque):
    """The last `maxlen` values of a running total, which must keep growing."""

    def __init__(self, name: str, maxlen: int) -> None:
        super().__init__(maxlen=maxlen)
        self.name = name

    def append(self, value) -> None:
        if self and value <= self[-1]:
            raise ValueError(f"Throughput: `{self.name}` must increase with each update, got {value} after "
                             f"{self[-1]}; pass running totals (elapsed time, batches and samples seen so far).")
        super().append(value)


class Throughput:
    """Rates over the last `window_size` updates: `device/batches_per_sec`, `device/samples_per_sec`,
    `device/items_per_sec` (with lengths), `device/flops_per_sec` and `device/mfu` (with FLOPs; MFU needs the
    device's peak `available_flops`); with `world_size` > 1 also the global rates without the `device/` prefix.
    Totals (`time`, `batches`, `samples`, `lengths`) are reported from the first update on, rates once the window
    is full."""

    def __init__(self, available_flops: Optional[float] = None, world_size: int = 1, window_size: int = 100,
                 separator: str = "/") -> None:
        if world_size < 1:
            raise ValueError(f"Throughput(world_size={world_size}) must be at least 1.")
        if window_size < 2:
            raise ValueError(f"Throughput(window_size={window_size}) must be at least 2 (rates need two points).")
        self.available_flops = available_flops
        self.world_size = world_size
        self.separator = separator
        self._time = _Window("time", window_size)
        self._batches = _Window("batches", window_size)
        self._samples = _Window("samples", window_size)
        self._lengths = _Window("lengths", window_size)
        self._flops: deque = deque(maxlen=window_size)

    def update(self, *, time: float, batches: int, samples: int, lengths: Optional[int] = None,
               flops: Optional[float] = None) -> None:
        """Add one point: running totals of time (s), batches, samples and lengths, and this update's FLOPs (per
        device)."""
        if samples < batches:
            raise ValueError(f"Expected samples ({samples}) to be greater or equal than batches ({batches})")
        if lengths is not None and lengths < samples:
            raise ValueError(f"Expected lengths ({lengths}) to be greater or equal than samples ({samples})")
        self._time.append(time)
        self._batches.append(batches)
        self._samples.append(samples)
        if lengths is not None:
            self._lengths.append(lengths)
        if flops is not None:
            self._flops.append(flops * self.world_size)

    def compute(self) -> Dict[str, float]:
        sep, world = self.separator, self.world_size
        metrics: Dict[str, float] = {"time": self._time[-1], "batches": self._batches[-1],
                                     "samples": self._samples[-1]}
        if self._lengths:
            metrics["lengths"] = self._lengths[-1]
        if len(self._time) < self._time.maxlen:
            return metrics
        elapsed = self._time[-1] - self._time[0]
        rates = {"batches_per_sec": (self._batches[-1] - self._batches[0]) / elapsed,
                 "samples_per_sec": (self._samples[-1] - self._samples[0]) / elapsed}
        if len(self._lengths) == self._lengths.maxlen:
            rates["items_per_sec"] = (self._lengths[-1] - self._lengths[0]) / elapsed
        for name, rate in rates.items():
            metrics[f"device{sep}{name}"] = rate
            if world > 1:
                metrics[name] = rate * world
        if len(self._flops) == self._flops.maxlen:
            flops_per_sec = (sum(self._flops) - self._flops[0]) / elapsed  # the first update's FLOPs precede t0
            metrics[f"device{sep}flops_per_sec"] = flops_per_sec / world
            if world > 1:
                metrics["flops_per_sec"] = flops_per_sec
            if self.available_flops:
                metrics[f"device{sep}mfu"] = flops_per_sec / world / self.available_flops
        return metrics

    def reset(self) -> None:
        for window in (self._time, self._batches, self._samples, self._lengths, self._flops):
            window.clear()
