"""Plugins for `Trainer(plugins=[...])`: precision, cluster environment, checkpoint I/O, layer synchronisation.

    Trainer(plugins=[SLURMEnvironment(auto_requeue=False), AsyncCheckpointIO()])

Each kind goes where the Trainer uses it: the precision plugin runs the forward and backward passes, the cluster
environment tells the strategy the ranks, the checkpoint I/O plugin is `trainer.strategy.checkpoint_io`, and
TorchSyncBatchNorm is `sync_batchnorm=True`.
"""
import importlib

# Each loads on first use: the Trainer imports this package, and `import volt` stays cheap.
_LAZY = {
    "AsyncCheckpointIO": "volt.plugins.io",
    "CheckpointIO": "volt.plugins.io",
    "ClusterEnvironment": "volt.distributed.environments",
    "DoublePrecision": "volt.trainer.precision",
    "DoublePrecisionPlugin": "volt.trainer.precision",
    "HalfPrecision": "volt.trainer.precision",
    "HalfPrecisionPlugin": "volt.trainer.precision",
    "LayerSync": "volt.plugins.layer_sync",
    "MixedPrecision": "volt.trainer.precision",
    "MixedPrecisionPlugin": "volt.trainer.precision",
    "Precision": "volt.trainer.precision",
    "PrecisionPlugin": "volt.trainer.precision",
    "TorchCheckpointIO": "volt.plugins.io",
    "TorchSyncBatchNorm": "volt.plugins.layer_sync",
}

__all__ = list(_LAZY)


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'volt.plugins' has no attribute {name!r}")
