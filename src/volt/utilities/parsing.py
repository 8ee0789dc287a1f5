"""Hyperparameter helpers (Lightning's names): AttributeDict (what `self.hparams` is), and finding a
hyperparameter by name where Lightning users keep it: on the module, in `module.hparams`, on the datamodule or in
its `hparams` (the tuner reads and sets `lr` and `batch_size` this way)."""
import pickle
from typing import Any, List

from volt.utilities.rank_zero import rank_zero_warn


class AttributeDict(dict):
    """A dict whose keys are also attributes: `self.hparams.lr` and `self.hparams["lr"]`."""

    def __getattr__(self, key):
        try:
            return self[key]
        except KeyError as err:
            raise AttributeError(f"'hparams' has no attribute {key!r}") from err

    def __setattr__(self, key, value):
        self[key] = value

    def __delattr__(self, key):
        del self[key]


def is_picklable(obj: object) -> bool:
    """Whether `obj` survives `pickle.dumps` (a lambda, a local class or a TorchScript module does not)."""
    try:
        pickle.dumps(obj)
    except (pickle.PickleError, AttributeError, TypeError, RuntimeError):
        return False
    return True


def drop_unpicklable_hparams(hparams) -> None:
    """Remove, with a warning, the hyperparameters that cannot be pickled (a run could not send them to spawned
    processes), as Lightning does at the start of each run. Modules and tensors are not pickled to find out."""
    import torch

    for key in [key for key, value in hparams.items()
                if not isinstance(value, (torch.nn.Module, torch.Tensor)) and not is_picklable(value)]:
        rank_zero_warn(f"Attribute '{key}' removed from hparams because it cannot be pickled. You can suppress this "
                       f"warning by setting `self.save_hyperparameters(ignore=['{key}'])`.")
        del hparams[key]


def _holders(model: Any, attribute: str) -> List[Any]:
    """Every object or hparams dict holding `attribute`, in Lightning's order: module, module.hparams, and, when
    the module is attached to a Trainer with a datamodule, the datamodule and its hparams."""
    try:
        trainer = model.trainer
    except RuntimeError:  # not attached to a Trainer
        trainer = None
    owners = [model]
    datamodule = getattr(trainer, "datamodule", None)
    if datamodule is not None:
        owners.append(datamodule)
    found = []
    for owner in owners:
        if hasattr(owner, attribute):
            found.append(owner)
        hparams = getattr(owner, "hparams", None)
        if hparams is not None and attribute in hparams:
            found.append(hparams)
    return found


def lightning_hasattr(model: Any, attribute: str) -> bool:
    """Whether the module, its hparams, the datamodule or the datamodule's hparams has `attribute`."""
    return bool(_holders(model, attribute))


def lightning_getattr(model: Any, attribute: str) -> Any:
    """The value of `attribute` from the last place that holds it (datamodule over module, as Lightning)."""
    holders = _holders(model, attribute)
    if not holders:
        raise AttributeError(f"{attribute} is neither stored in the model namespace nor the `hparams` namespace/dict,"
                             " nor the datamodule.")
    holder = holders[-1]
    return holder[attribute] if isinstance(holder, dict) else getattr(holder, attribute)


def lightning_setattr(model: Any, attribute: str, value: Any) -> None:
    """Set `attribute` to `value` everywhere it is held (module, hparams, datamodule), so all of them agree."""
    holders = _holders(model, attribute)
    if not holders:
        raise AttributeError(f"{attribute} is neither stored in the model namespace nor the `hparams` namespace/dict,"
                             " nor the datamodule.")
    for holder in holders:
        if isinstance(holder, dict):
            holder[attribute] = value
        else:
            setattr(holder, attribute, value)
