"""Plugins for `Trainer(plugins=[...])`: precision, cluster environment, checkpoint I/O, layer synchronisation.

    Trainer(plugins=[SLURMEnvironment(auto_requeue=False), AsyncCheckpointIO()])

Each kind goes where the Trainer uses it: the precision plugin runs the forward and backward passes, the cluster
environment tells the strategy the ranks, the checkpoint I/O plugin is `trainer.strategy.checkpoint_io`, and
TorchSyncBatchNorm is `sync_batchnorm=True`.
"""
from volt.distributed.environments import ClusterEnvironment
from volt.plugins.io import AsyncCheckpointIO, CheckpointIO, TorchCheckpointIO
from volt.plugins.layer_sync import LayerSync, TorchSyncBatchNorm
from volt.trainer.precision import DoublePrecision, HalfPrecision, MixedPrecision, Precision

__all__ = [
    "AsyncCheckpointIO",
    "CheckpointIO",
    "ClusterEnvironment",
    "DoublePrecision",
    "HalfPrecision",
    "LayerSync",
    "MixedPrecision",
    "Precision",
    "TorchCheckpointIO",
    "TorchSyncBatchNorm",
]
