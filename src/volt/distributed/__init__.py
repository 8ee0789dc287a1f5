"""Strategies, cluster environments and the device/process topology.

The multi-process parts load on first use, so that `import volt` stays cheap for single-device work.
"""
import importlib

from volt.distributed.strategy import SingleDeviceStrategy, Strategy

_LAZY = {
    "ClusterEnvironment": "volt.distributed.environments",
    "DDPStrategy": "volt.distributed.ddp",
    "FSDPStrategy": "volt.distributed.fsdp",
    "LightningEnvironment": "volt.distributed.environments",
    "ParallelStrategy": "volt.distributed.parallel",
    "RankFailedError": "volt.distributed.launcher",
    "RestartsExhaustedError": "volt.distributed.launcher",
    "SLURMEnvironment": "volt.distributed.environments",
    "TorchElasticEnvironment": "volt.distributed.environments",
}


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'volt.distributed' has no attribute {name!r}")


__all__ = ["SingleDeviceStrategy", "Strategy", *_LAZY]
