"""LightningDataModule: the data side of a run (download, split, dataloaders), reusable across models."""
import inspect
import os
from typing import Any, Dict, Mapping, Optional, Sequence, Union

from torch.utils.data import DataLoader, Dataset, IterableDataset

from volt.module import HyperparametersMixin, _class_only_method, _instantiate_from_checkpoint
from volt.utilities.exceptions import dataloader_not_implemented


class LightningDataModule(HyperparametersMixin):
    """Override `prepare_data`, `setup` and the dataloader hooks you need."""

    name: Optional[str] = None
    CHECKPOINT_HYPER_PARAMS_KEY = "datamodule_hyper_parameters"
    CHECKPOINT_HYPER_PARAMS_NAME = "datamodule_hparams_name"
    CHECKPOINT_HYPER_PARAMS_TYPE = "datamodule_hparams_type"

    def __init__(self) -> None:
        super().__init__()
        self.trainer = None
        self.prepare_data_per_node = True

    def prepare_data(self) -> None:
        """Download or write data once per node. Do not set state here: it does not run on every process."""

    def setup(self, stage: str) -> None:
        """Build datasets; called on every process with "fit", "validate", "test" or "predict"."""

    def teardown(self, stage: str) -> None:
        """Clean up after a stage."""

    def train_dataloader(self):
        raise dataloader_not_implemented("train_dataloader")

    def val_dataloader(self):
        raise dataloader_not_implemented("val_dataloader")

    def test_dataloader(self):
        raise dataloader_not_implemented("test_dataloader")

    def predict_dataloader(self):
        raise dataloader_not_implemented("predict_dataloader")

    def __str__(self) -> str:
        """Each dataloader hook and the size of its dataset(s) as of now (`None` where the hook fails, e.g. before
        `setup`), one line each, as Lightning prints a data module."""
        hooks = (("Train dataloader", self.train_dataloader), ("Validation dataloader", self.val_dataloader),
                 ("Test dataloader", self.test_dataloader), ("Predict dataloader", self.predict_dataloader))
        lines = []
        for title, hook in hooks:
            try:
                loaders = hook()
            except Exception:  # not set up (or not defined): str() of a data module must not raise
                loaders = None
            lines.append(f"{{{title}: {_describe_loaders(loaders)}}}")
        return os.linesep.join(lines)

    def transfer_batch_to_device(self, batch: Any, device, dataloader_idx: int) -> Any:
        from volt.utilities.apply_func import move_data_to_device

        return move_data_to_device(batch, device)

    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        return batch

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        return batch

    def state_dict(self) -> Dict[str, Any]:
        """State to keep in checkpoints (plain data)."""
        return {}

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        """Restore what `state_dict` returned."""

    def on_exception(self, exception: BaseException) -> None:
        """Called when fit/validate/test/predict fails."""

    @classmethod
    def from_datasets(cls, train_dataset=None, val_dataset=None, test_dataset=None, predict_dataset=None,
                      batch_size: int = 1, num_workers: int = 0, **datamodule_kwargs: Any) -> "LightningDataModule":
        """A datamodule around ready datasets (one or a list/dict of them per stage)."""

        def loader(ds, shuffle: bool):
            shuffle &= not isinstance(ds, IterableDataset)
            # pinned memory, as Lightning: faster copies to a GPU (torch ignores it, with a warning, without one)
            return DataLoader(ds, batch_size=batch_size, shuffle=shuffle, num_workers=num_workers, pin_memory=True)

        def loaders(ds, shuffle: bool = False):
            if isinstance(ds, Mapping):
                return {key: loader(d, shuffle) for key, d in ds.items()}
            if isinstance(ds, Sequence) and not isinstance(ds, Dataset):
                return [loader(d, shuffle) for d in ds]
            return loader(ds, shuffle)

        params = inspect.signature(cls.__init__).parameters
        takes_var_kwargs = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
        unknown = [k for k in datamodule_kwargs if k not in params and not takes_var_kwargs]
        if unknown:
            raise TypeError(f"{cls.__name__}.__init__ does not accept {unknown}.")
        # A datamodule whose __init__ takes batch_size or num_workers gets them too, so `dm.batch_size` is right.
        loader_kwargs = {"batch_size": batch_size, "num_workers": num_workers}
        loader_kwargs = {k: v for k, v in loader_kwargs.items() if k in params or takes_var_kwargs}
        datamodule = cls(**datamodule_kwargs, **loader_kwargs)
        if train_dataset is not None:
            datamodule.train_dataloader = lambda: loaders(train_dataset, shuffle=True)
        if val_dataset is not None:
            datamodule.val_dataloader = lambda: loaders(val_dataset)
        if test_dataset is not None:
            datamodule.test_dataloader = lambda: loaders(test_dataset)
        if predict_dataset is not None:
            datamodule.predict_dataloader = lambda: loaders(predict_dataset)
        return datamodule

    @_class_only_method
    def load_from_checkpoint(cls, checkpoint_path: Union[str, os.PathLike], map_location=None,
                             hparams_file=None, weights_only: bool = True, **kwargs: Any):
        """Rebuild the datamodule from the hyperparameters saved in a checkpoint file or folder (or `hparams_file`'s,
        overridden by `kwargs`), and its `state_dict`."""
        from volt.sharded_checkpoint import load

        checkpoint = load(checkpoint_path, map_location=map_location or "cpu", weights_only=weights_only,
                          optimizer_states=False)
        datamodule = _instantiate_from_checkpoint(cls, checkpoint, hparams_file, kwargs)
        if cls.__qualname__ in checkpoint:
            datamodule.load_state_dict(checkpoint[cls.__qualname__])
        return datamodule


def _describe_loaders(loaders) -> str:
    """`size=N` for one DataLoader (`NA` for a dataset without a length), `1. size=N ; 2. ...` for several."""
    if isinstance(loaders, DataLoader):
        return f"size={len(loaders.dataset) if hasattr(loaders.dataset, '__len__') else 'NA'}"
    if isinstance(loaders, Mapping):
        loaders = list(loaders.values())
    if isinstance(loaders, (list, tuple)) and loaders:
        return " ; ".join(f"{i}. {_describe_loaders(loader)}" if isinstance(loader, DataLoader) else "None"
                          for i, loader in enumerate(loaders, start=1))
    return "None"
