"""Layer synchronisation across processes: `Trainer(plugins=[TorchSyncBatchNorm()])` is `sync_batchnorm=True`."""
from torch import nn


class LayerSync:
    """Converts layers of a model to versions that synchronise their statistics across processes, and back."""

    def apply(self, model: nn.Module) -> nn.Module:
        raise NotImplementedError

    def revert(self, model: nn.Module) -> nn.Module:
        raise NotImplementedError


class TorchSyncBatchNorm(LayerSync):
    """BatchNorm layers become torch's SyncBatchNorm (CUDA only), which averages statistics over all processes."""

    def apply(self, model: nn.Module) -> nn.Module:
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)

    def revert(self, model: nn.Module) -> nn.Module:
        """SyncBatchNorm layers back to plain batch norms (which accept inputs of any dimension, as SyncBatchNorm)."""
        converted = model
        if isinstance(model, nn.SyncBatchNorm):
            converted = _BatchNormXd(model.num_features, model.eps, model.momentum, model.affine,
                                     model.track_running_stats)
            if model.affine:
                converted.weight, converted.bias = model.weight, model.bias
            converted.running_mean, converted.running_var = model.running_mean, model.running_var
            converted.num_batches_tracked = model.num_batches_tracked
        for name, child in model.named_children():
            converted.add_module(name, self.revert(child))
        return converted


class _BatchNormXd(nn.modules.batchnorm._BatchNorm):
    """A batch norm for inputs of any dimension: what a SyncBatchNorm becomes when reverted."""

    def _check_input_dim(self, input) -> None:
        pass
