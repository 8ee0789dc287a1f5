"""Helpers shared by volt's loggers: version discovery, hyperparameter conversion and hparams.yaml."""
import enum
import importlib.util
import os
import sys
from argparse import Namespace
from collections.abc import MutableMapping
from dataclasses import asdict, is_dataclass
from typing import Any, Dict, List, Mapping, Optional, Union

import torch

from volt.utilities.rank_zero import rank_zero_warn

NAME_HPARAMS_FILE = "hparams.yaml"


class LogFiles:
    """The file operations of a log folder: local paths (and `file://` ones) through `os`, other URLs (`memory://`,
    `s3://`, ...) through fsspec, imported only for them, as Lightning's loggers accept both."""

    def __init__(self, path: str) -> None:
        from volt.checkpoint import is_remote

        self.fs = None
        if is_remote(path):
            import fsspec

            self.fs = fsspec.core.url_to_fs(path)[0]

    def open(self, path: str, mode: str = "r"):
        """A file: a binary one as is, a text one in UTF-8 with newlines as written (csv needs that)."""
        opener = open if self.fs is None else self.fs.open
        if "b" in mode:
            return opener(path, mode)
        return opener(path, mode, encoding="utf-8", newline="")

    def remove(self, path: str) -> None:
        if self.fs is None:
            os.remove(path)
        else:
            self.fs.rm(path)

    def makedirs(self, path: str) -> None:
        if self.fs is None:
            os.makedirs(path, exist_ok=True)
        else:
            self.fs.makedirs(path, exist_ok=True)

    def isfile(self, path: str) -> bool:
        return os.path.isfile(path) if self.fs is None else self.fs.isfile(path)

    def replace(self, source: str, target: str) -> None:
        """Move `source` onto `target` (atomic on a local filesystem; object stores copy)."""
        if self.fs is None:
            os.replace(source, target)
        else:
            self.fs.mv(source, target)

    def folders(self, path: str) -> List[str]:
        """The names of the folders in `path` (none if it is missing or not a folder)."""
        return self._entries(path, "directory")

    def files(self, path: str) -> List[str]:
        """The names of the files in `path` (none if it is missing or not a folder)."""
        return self._entries(path, "file")

    def _entries(self, path: str, kind: str) -> List[str]:
        if self.fs is None:
            try:
                return [entry.name for entry in os.scandir(path)
                        if (entry.is_dir() if kind == "directory" else entry.is_file())]
            except OSError:
                return []
        if not self.fs.isdir(path):
            return []
        return [entry["name"].rstrip("/").rsplit("/", 1)[-1] for entry in self.fs.listdir(path, detail=True)
                if entry["type"] == kind]

    def has_files(self, path: str) -> bool:
        """Whether `path` is a folder with anything in it."""
        if self.fs is None:
            return os.path.isdir(path) and bool(os.listdir(path))
        return self.fs.isdir(path) and bool(self.fs.ls(path))


def local_path(path: Union[str, os.PathLike]) -> str:
    """`path` as a string, a `file://` URL as the local path it names."""
    path = os.fspath(path)
    return path[len("file://"):] if path.startswith("file://") else path


def _next_version(versions_root: str) -> int:
    """One more than the highest `version_N` directory under `versions_root` (0 when there is none)."""
    versions = []
    for name in LogFiles(versions_root).folders(versions_root):
        if name.startswith("version_"):
            number = name.split("_")[1]  # as Lightning: "version_3_retry" counts as 3
            if number.isdigit():
                versions.append(int(number))
    return max(versions) + 1 if versions else 0


def _version_dir(version: Union[int, str]) -> str:
    """A string version names its directory as is; an int one becomes `version_N`."""
    return version if isinstance(version, str) else f"version_{version}"


def _convert_params(params: Optional[Union[Mapping, Namespace]]) -> Dict[str, Any]:
    """Hyperparameters as a dict, whether given as a mapping, an argparse.Namespace or None."""
    if params is None:
        return {}
    if isinstance(params, Namespace):
        return vars(params)
    if isinstance(params, Mapping):
        return params
    raise TypeError(
        f"log_hyperparams expects a dict or an argparse.Namespace, got {type(params).__name__}. "
        "Wrap the values in a dict, e.g. log_hyperparams({'lr': 0.1})."
    )


def _flatten_dict(params: Mapping, delimiter: str = "/", parent_key: str = "") -> Dict[str, Any]:
    """Nested dicts, Namespaces, dataclasses and lists of dicts become one level of `a/b/c` keys, for TensorBoard."""
    flat: Dict[str, Any] = {}
    for key, value in params.items():
        name = f"{parent_key}{delimiter}{key}" if parent_key else str(key)
        if is_dataclass(value) and not isinstance(value, type):
            value = asdict(value)
        elif isinstance(value, Namespace):
            value = vars(value)
        if isinstance(value, MutableMapping):
            flat.update(_flatten_dict(value, delimiter, name))
        elif isinstance(value, list) and value and all(isinstance(item, MutableMapping) for item in value):
            for index, item in enumerate(value):
                flat.update(_flatten_dict(item, delimiter, f"{name}{delimiter}{index}"))
        else:
            flat[name] = value
    return flat


def _sanitize_params(params: Dict[str, Any]) -> Dict[str, Any]:
    """Values TensorBoard's hparams plugin can show: numbers, bools and strings; anything else becomes its str()."""
    numpy = sys.modules.get("numpy")  # a numpy scalar can only exist once numpy is imported
    clean = {}
    for key, value in params.items():
        if isinstance(value, torch.Tensor) and value.numel() == 1:
            value = value.item()
        elif numpy is not None and isinstance(value, (numpy.bool_, numpy.integer, numpy.floating)):
            value = value.item()
        if type(value) not in (bool, int, float, str):
            value = str(value)
        clean[key] = value
    return clean


def _add_prefix(metrics: Mapping[str, Any], prefix: str, separator: str) -> Mapping[str, Any]:
    """`{"loss": x}` with prefix "train" becomes `{"train-loss": x}`."""
    if not prefix:
        return metrics
    return {f"{prefix}{separator}{key}": value for key, value in metrics.items()}


def _save_hparams_to_yaml(path: str, hparams: Mapping[str, Any], use_omegaconf: bool = True) -> None:
    """Write `hparams` as YAML, as Lightning does: with OmegaConf when it is installed (keys in their order), else
    with PyYAML (keys sorted), leaving out a value YAML cannot represent, with a warning."""
    import yaml  # ~10 ms: imported only when a logger actually writes hparams.yaml

    if isinstance(hparams, Namespace):
        hparams = vars(hparams)
    if use_omegaconf and importlib.util.find_spec("omegaconf") is not None and _save_with_omegaconf(path, hparams):
        return
    dumpable = {}
    for key, value in hparams.items():
        value = value.name if isinstance(value, enum.Enum) else value
        try:
            yaml.dump(value)
        except (TypeError, ValueError):
            rank_zero_warn(f"Skipping '{key}' parameter because it is not possible to safely dump to YAML.")
        else:
            dumpable[key] = value
    files, tmp_path = LogFiles(path), f"{path}.tmp"
    with files.open(tmp_path, "w") as file:
        yaml.dump(dumpable, file)
    files.replace(tmp_path, path)  # a crash mid-write leaves the previous file intact


def hparams_yaml_loader():
    """PyYAML's safe loader plus the `!!python/name:` tag, which PyYAML (and so Lightning and volt) writes for a class
    or function among the hyperparameters (e.g. `layer: torch.nn.BatchNorm1d`). The name is resolved only in modules
    already imported, so reading a file imports and runs no code."""
    import yaml

    class HparamsLoader(yaml.SafeLoader):
        pass

    def python_name(loader, suffix: str, node) -> Any:
        module_name, _, attribute = suffix.rpartition(".")
        module = sys.modules.get(module_name)
        if module is None or not hasattr(module, attribute):
            raise yaml.constructor.ConstructorError(
                None, None, f"the hyperparameter {suffix!r} names an object in a module that is not imported: import"
                f" {module_name or suffix!r} before loading this file", node.start_mark)
        return getattr(module, attribute)

    HparamsLoader.add_multi_constructor("tag:yaml.org,2002:python/name:", python_name)
    return HparamsLoader


def _save_with_omegaconf(path: str, hparams: Mapping[str, Any]) -> bool:
    """Write `hparams` with OmegaConf (nested OmegaConf configs resolved); False if it cannot represent them."""
    from omegaconf import DictConfig, ListConfig, OmegaConf
    from omegaconf.errors import UnsupportedValueType, ValidationError

    from volt.utilities.apply_func import apply_to_collection

    plain = apply_to_collection(dict(hparams), (DictConfig, ListConfig), OmegaConf.to_container, resolve=True)
    files, tmp_path = LogFiles(path), f"{path}.tmp"
    try:
        with files.open(tmp_path, "w") as file:
            OmegaConf.save(plain, file)
    except (UnsupportedValueType, ValidationError):
        files.remove(tmp_path)
        return False
    files.replace(tmp_path, path)
    return True


class RewritableLog:
    """The resume pair (`Logger.state_dict` / `load_state_dict`) for a logger that can cut its own history.

    The state is the last step written and the rows written at it. Resuming from it drops everything logged from
    that step on (`drop_from`): the points the interrupted run logged after its checkpoint, and that step's rows,
    which are then written again. So each step shows once, with the resumed run's values after the checkpoint.
    A logger calls `remember_logged` in `log_metrics` and implements `drop_from`; put this before `Logger` in the
    bases.
    """

    _last_logged_step: Optional[int] = None
    _rows_at_last_step: List[Dict[str, Any]] = []  # replaced, never appended to, before the first step

    def remember_logged(self, metrics: Mapping[str, Any], step: Optional[int]) -> None:
        """Keep the rows of the latest step (values as given: tensors are converted only in `state_dict`)."""
        if step is None:
            return
        if step != self._last_logged_step:
            self._last_logged_step, self._rows_at_last_step = step, []
        self._rows_at_last_step.append(dict(metrics))

    def drop_from(self, step: int) -> None:
        raise NotImplementedError

    def state_dict(self) -> Dict[str, Any]:
        if self._last_logged_step is None:
            return {}
        rows = [{key: value.item() if hasattr(value, "item") else value for key, value in row.items()
                 if isinstance(value, (int, float)) or (hasattr(value, "numel") and value.numel() == 1)}
                for row in self._rows_at_last_step]
        return {"step": int(self._last_logged_step), "rows": rows}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        if not state:
            return
        self.drop_from(state["step"])
        for row in state["rows"]:
            self.log_metrics(row, step=state["step"])
        self.save()


class VersionedLogDir:
    """The `<save_dir>/<name>/version_N` layout that the CSV and TensorBoard loggers share (Lightning's).

    Expects `_save_dir`, `_name` and `_version` attributes; put it before `Logger` in the bases.
    """

    @property
    def version_chosen(self) -> bool:
        """Whether the version is fixed: given to the constructor, or picked at first use."""
        return self._version is not None

    def continue_version(self, version: Union[int, str]) -> None:
        """Log into the existing folder of `version` (`version_3` or 3) instead of a new one: a fit resumed with
        `ckpt_path="last"` continues the log of the run it resumes. Only before the version is chosen."""
        if self.version_chosen:
            raise RuntimeError(f"{type(self).__name__} already logs to version {self._version!r}.")
        number = version[len("version_"):] if isinstance(version, str) and version.startswith("version_") else None
        self._version = int(number) if number is not None and number.isdigit() else version

    @property
    def name(self) -> str:
        return self._name

    @property
    def version(self) -> Union[int, str]:
        """The version given, or else the next free `version_N` number (fixed at first use)."""
        if self._version is None:
            self._version = _next_version(self.root_dir)
        return self._version

    @property
    def save_dir(self) -> str:
        return self._save_dir

    @property
    def root_dir(self) -> str:
        """`<save_dir>/<name>`: the folder holding this experiment's versions."""
        return os.path.join(self.save_dir, self.name)
