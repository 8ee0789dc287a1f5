"""Hyperparameters as YAML files (the `hparams.yaml` loggers write and `load_from_checkpoint(hparams_file=)` reads)."""
import os
from typing import Any, Dict, Union

from volt.utilities.cloud_io import get_filesystem
from volt.utilities.rank_zero import rank_zero_warn


def load_hparams_from_yaml(config_yaml: Union[str, os.PathLike], use_omegaconf: bool = True) -> Dict[str, Any]:
    """The hyperparameters in a YAML file (an OmegaConf DictConfig when omegaconf is installed and
    `use_omegaconf`); an empty dict, with a warning, when the file does not exist."""
    import yaml

    from volt.loggers.utils import hparams_yaml_loader

    fs = get_filesystem(config_yaml)
    if not fs.exists(str(config_yaml)):
        rank_zero_warn(f"Missing hyperparameters file: {config_yaml}")
        return {}
    with fs.open(str(config_yaml), "r") as file:
        hparams = yaml.load(file, Loader=hparams_yaml_loader()) or {}
    if use_omegaconf:
        try:
            from omegaconf import OmegaConf
        except ImportError:
            return hparams
        from omegaconf.errors import UnsupportedValueType, ValidationError

        try:
            return OmegaConf.create(hparams)
        except (UnsupportedValueType, ValidationError):  # e.g. a class among them: the plain dict, as Lightning
            return hparams
    return hparams


def save_hparams_to_yaml(config_yaml: Union[str, os.PathLike], hparams: Any, use_omegaconf: bool = True) -> None:
    """Write `hparams` (a dict, Namespace or OmegaConf config) to a YAML file, atomically: with OmegaConf when it is
    installed and `use_omegaconf` (keys in their order), else with PyYAML (keys sorted; values YAML cannot represent
    are left out with a warning)."""
    from volt.loggers.utils import _save_hparams_to_yaml

    if not get_filesystem(config_yaml).isdir(os.path.dirname(os.fspath(config_yaml)) or "."):
        raise RuntimeError(f"save_hparams_to_yaml: the folder of {config_yaml} does not exist.")
    if type(hparams).__module__.startswith("omegaconf"):
        from omegaconf import OmegaConf

        hparams = OmegaConf.to_container(hparams, resolve=True)
    _save_hparams_to_yaml(os.fspath(config_yaml), hparams, use_omegaconf)
