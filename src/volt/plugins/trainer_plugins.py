"""`Trainer(plugins=...)`: the plugins sorted by kind, each checked once with a clear error."""
from typing import Any, List, Optional, Union

from volt.distributed.environments import ClusterEnvironment
from volt.plugins.io import CheckpointIO
from volt.plugins.layer_sync import LayerSync
from volt.trainer.precision import Precision
from volt.utilities.exceptions import MisconfigurationException

# What `Trainer(plugins=...)` takes, as a type hint: LightningCLI builds them from class paths
# (`--trainer.plugins=SLURMEnvironment`).
Plugin = Union[Precision, ClusterEnvironment, CheckpointIO, LayerSync]
PluginsInput = Optional[Union[Plugin, List[Plugin]]]

_KINDS = "a precision plugin (MixedPrecision, HalfPrecision, DoublePrecision, Precision), a ClusterEnvironment, " \
         "a CheckpointIO or TorchSyncBatchNorm"


class TrainerPlugins:
    """The plugins a Trainer was given, one of each kind at most (None: the kind's default)."""

    def __init__(self) -> None:
        self.precision: Optional[Precision] = None
        self.cluster_environment: Optional[ClusterEnvironment] = None
        self.checkpoint_io = None  # a CheckpointIO (volt/plugins/io)
        self.layer_sync = None  # TorchSyncBatchNorm


def parse_plugins(plugins: Any, precision_flag: Any) -> TrainerPlugins:
    """Sort `plugins` (one plugin or a list) by kind. Two of one kind, an unknown object, or a precision plugin next
    to `Trainer(precision=...)` are errors."""
    parsed = TrainerPlugins()
    if plugins is None:
        return parsed
    from volt.plugins.layer_sync import TorchSyncBatchNorm

    for plugin in plugins if isinstance(plugins, (list, tuple)) else [plugins]:
        if isinstance(plugin, Precision):
            kind = "precision"
        elif isinstance(plugin, ClusterEnvironment):
            kind = "cluster_environment"
        elif isinstance(plugin, CheckpointIO):
            kind = "checkpoint_io"
        elif isinstance(plugin, TorchSyncBatchNorm):
            kind = "layer_sync"
        elif isinstance(plugin, LayerSync):
            raise MisconfigurationException(
                f"plugins=[{type(plugin).__name__}()]: volt synchronises BatchNorm layers itself "
                "(`sync_batchnorm=True` or TorchSyncBatchNorm()); other LayerSync plugins are not supported."
            )
        else:
            raise MisconfigurationException(
                f"plugins=[{plugin!r}] is not a plugin volt accepts. Pass {_KINDS}."
            )
        if getattr(parsed, kind) is not None:
            raise MisconfigurationException(
                f"plugins= holds two {kind.replace('_', ' ')} plugins ({getattr(parsed, kind)!r} and {plugin!r}); "
                "pass one."
            )
        setattr(parsed, kind, plugin)
    if parsed.precision is not None and precision_flag is not None:
        raise MisconfigurationException(
            f"Received both `precision={precision_flag!r}` and `plugins=[{type(parsed.precision).__name__}(...)]`. "
            "Choose one."
        )
    return parsed
