"""Checkpoint files: atomic, durable saves and safe loads.

A volt checkpoint is plain data (tensors, numbers, strings, bytes, None, and lists/tuples/sets/dicts of them), so
it loads with `torch.load(weights_only=True)` and loading one never runs code. Three rules keep it that way:

- `save_checkpoint` refuses anything else, naming the key that holds it, before writing a byte (numpy numbers
  become the Python numbers they equal).
- Hyperparameters, which users fill with paths, enums, namespaces and dataclasses, go through `encode_hparams`
  first: those become small tagged dicts (`{"__volt__": "path", ...}`) that `decode_hparams` turns back.
- `load_checkpoint` loads with `weights_only=True` by default and turns torch's failures into one clear
  `CheckpointError`: the file is damaged, or it references code (and nothing ran).

Writes go to a temporary file in the target's folder, are flushed and fsynced, then renamed over the target
(`os.replace` is atomic on POSIX and Windows) and the folder is fsynced, so a crash at any moment leaves either the
old file or the new one, never half of one. Temporary names start with "." and never end in ".ckpt", so a crash
can leave one behind but nothing mistakes it for a checkpoint. Paths with a protocol ("s3://", "memory://") go
through fsspec, imported only when such a path is used.

A checkpoint may also be a folder that every rank writes its part of (`volt/sharded_checkpoint.py`, which builds on
this module); it counts as a checkpoint once its completion marker is in it. The functions here that find, replace,
link and remove checkpoints take either kind.

A checkpoint written in the background is a `PendingWrite`: how the Trainer waits for it, chains the file work that
must follow it (`then`), and hears of its failure (`wait` raises it). Files are written in the background by
`AsyncCheckpointIO` (volt/plugins/io), which stages the checkpoint (`stage`) and starts one (`PendingWrite.start`);
folders by torch.distributed.checkpoint's async_save (volt/sharded_checkpoint.py).
"""
import dataclasses
import errno
import os
import pathlib
import secrets
import shutil
import sys
import tempfile
import threading
import zipfile
from argparse import Namespace
from collections import Counter, OrderedDict
from collections.abc import Mapping, Sequence, Set as AbstractSet
from contextlib import nullcontext
from enum import Enum
from typing import Any, Callable, Dict, Optional, Union

import torch

from volt.utilities.rank_zero import log, rank_zero_warn

PathLike = Union[str, "os.PathLike[str]"]

_TAG = "__volt__"
_LEAF_TYPES = (type(None), bool, int, float, complex, str, bytes, bytearray, torch.Size, torch.dtype, torch.device)
_TENSOR_TYPES = (torch.Tensor, torch.nn.Parameter)
_CONTAINER_TYPES = (list, tuple, set, dict, OrderedDict, Counter)
_PLAIN_KEY_TYPES = (str, int, float, bool, type(None))
# What makes a folder a complete sharded checkpoint: written last, just before the folder is renamed into place.
SHARDED_MARKER = "volt_checkpoint.json"


class CheckpointError(RuntimeError):
    """A checkpoint file cannot be loaded: it is damaged, or it references code that a safe load refuses."""


class NotACheckpointFolder(IsADirectoryError, ValueError):
    """A folder was given as a checkpoint, but it is not a complete checkpoint folder. Also a ValueError, which is
    what Lightning raises for a path that is no checkpoint."""


# ----------------------------------------------------------------------------------------------------------------
# paths


def is_remote(path: PathLike) -> bool:
    """True for paths with a protocol other than `file://` (e.g. "s3://bucket/x.ckpt"); these go through fsspec."""
    path = os.fspath(path)
    return "://" in path and not path.startswith("file://")


def _local(path: PathLike) -> str:
    path = os.fspath(path)
    return path[len("file://"):] if path.startswith("file://") else path


def _filesystem(path: PathLike):
    """(fsspec filesystem, path within it) for a remote path."""
    import fsspec

    return fsspec.core.url_to_fs(os.fspath(path))


def _temp_name(basename: str) -> str:
    """Hidden, unique and never ending in ".ckpt": a leftover from a crash is not taken for a checkpoint."""
    return f".{basename}.tmp-{os.getpid()}-{secrets.token_hex(4)}"


def is_sharded_checkpoint(path: PathLike) -> bool:
    """Whether `path` (or what a link there points to) is a complete sharded checkpoint folder."""
    return not is_remote(path) and os.path.isfile(os.path.join(_local(path), SHARDED_MARKER))


def checkpoint_exists(path: PathLike) -> bool:
    """Whether a checkpoint file, or a complete sharded checkpoint folder, exists at `path` (links followed)."""
    if is_remote(path):
        fs, remote_path = _filesystem(path)
        return fs.isfile(remote_path)
    return os.path.isfile(_local(path)) or is_sharded_checkpoint(path)


def remove_checkpoint(path: PathLike) -> None:
    """Delete the checkpoint at `path`: a file, a link (not its target) or a sharded checkpoint folder (moved to a
    hidden name first, so a crash during the deletion never leaves half of it under its name). Missing: no error."""
    if is_remote(path):
        fs, remote_path = _filesystem(path)
        if fs.exists(remote_path):
            fs.rm(remote_path)
        return
    path = _local(path)
    if os.path.isdir(path) and not os.path.islink(path):
        if not is_sharded_checkpoint(path):
            rank_zero_warn(f"Not removing {path}: it is a folder but not a complete volt checkpoint.")
            return
        folder, basename = os.path.split(os.path.abspath(path))
        doomed = os.path.join(folder, f".{basename}.del-{secrets.token_hex(4)}")
        os.rename(path, doomed)
        _remove_any(doomed)
        return
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


def _remove_any(path: str) -> None:
    """Delete a file, a link or a folder tree."""
    if os.path.isdir(path) and not os.path.islink(path):
        import shutil

        shutil.rmtree(path)
    else:
        os.remove(path)


# ----------------------------------------------------------------------------------------------------------------
# atomic writes


def check_writable_folder(path: PathLike, what: str) -> None:
    """Raise one clear error now if files cannot be created in folder `path` (or in the folder that would hold it,
    while it does not exist yet), so that a run finds out at fit start instead of at its first save. Creates
    nothing that stays; remote paths are not checked."""
    if is_remote(path):
        return
    folder = os.path.abspath(_local(path))
    existing = folder
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    problem = None
    if not os.path.isdir(existing):
        problem = f"{existing!r} is a file, not a folder"
    else:
        try:
            fd, probe = tempfile.mkstemp(prefix=".volt-write-check-", dir=existing)
            os.close(fd)
            os.remove(probe)
        except OSError as error:
            problem = f"cannot create files in {existing!r} ({error.strerror})"
    if problem is not None:
        raise PermissionError(f"{what} {folder!r} cannot be written: {problem}. Choose a folder this process can "
                              "write to (checked when fit starts, so that the run does not fail at its first save).")


def _fsync_dir(folder: str) -> None:
    """Make a rename in `folder` durable. Windows cannot open folders (and NTFS journals renames itself)."""
    if os.name == "nt":
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError:  # some network and FUSE filesystems do not support fsync on a folder
        pass
    finally:
        os.close(fd)


def _remove_quietly(path: str) -> None:
    try:
        os.remove(path)
    except OSError:
        pass


def _write_atomic(path: PathLike, write: Callable[[Any], None]) -> None:
    """Call `write(file)` on a temporary file next to `path`, then move it onto `path` in one step."""
    if is_remote(path):
        fs, remote_path = _filesystem(path)
        folder, _, basename = remote_path.rpartition("/")
        if folder:
            fs.makedirs(folder, exist_ok=True)
        temp = f"{folder}/{_temp_name(basename)}" if folder else _temp_name(basename)
        try:
            with fs.open(temp, "wb") as f:
                write(f)
            fs.mv(temp, remote_path)  # object stores have no rename; a whole-object copy is the best there is
        except BaseException:
            try:
                if fs.exists(temp):
                    fs.rm(temp)
            except Exception:  # keep the original error; the leftover is a hidden temporary name
                pass
            raise
        return
    path = _local(path)
    folder, basename = os.path.split(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    temp = os.path.join(folder, _temp_name(basename))
    try:
        with open(temp, "xb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        move_into_place(temp, path)
    except BaseException as error:
        _remove_quietly(temp)
        out_of_space = _out_of_space(error)
        if out_of_space is not None:
            raise OSError(out_of_space.errno, _out_of_space_message(path, folder, out_of_space)) from error
        raise
    _fsync_dir(folder)


_OUT_OF_SPACE = {errno.ENOSPC, errno.EFBIG, getattr(errno, "EDQUOT", errno.ENOSPC)}  # EDQUOT: not on Windows


def _out_of_space(error: BaseException) -> Optional[OSError]:
    """The OSError saying the disk (or quota, or file size limit) is full, if that is why the write failed. torch
    reports it as "[enforce fail at inline_container.cc] ... unexpected pos" with the OSError as its context."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno in _OUT_OF_SPACE:
            return error
        error = error.__cause__ or error.__context__
    return None


def _size(nbytes: int) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if nbytes < 1024 or unit == "GiB":
            return f"{nbytes} {unit}" if unit == "bytes" else f"{nbytes:.1f} {unit}"
        nbytes /= 1024
    return ""


def _out_of_space_message(path: str, folder: str, error: OSError) -> str:
    try:
        free = f"{_size(shutil.disk_usage(folder).free)} free there"
    except OSError:
        free = "free space unknown"
    return (f"{os.strerror(error.errno)}: the checkpoint {path} could not be written ({free}). The file that was "
            "at that path before, if any, is unchanged. Free some space, write fewer checkpoints "
            "(ModelCheckpoint(save_top_k=...)), or write them elsewhere (ModelCheckpoint(dirpath=...)).")


def move_into_place(temp: str, target: str) -> None:
    """Rename `temp` (a file or a folder) to `target` in one atomic step, replacing what is there.

    A file or a link over a file: `os.replace`. Where a folder is involved (a sharded checkpoint replacing another,
    or a file replacing a folder) a plain rename cannot replace: the two are swapped atomically (Linux
    `renameat2(RENAME_EXCHANGE)`) and the old one, now at `temp`, is deleted. A folder that is not a complete
    checkpoint is never replaced (FileExistsError).
    """
    folder_involved = os.path.isdir(temp) or (os.path.isdir(target) and not os.path.islink(target))
    if not folder_involved:
        os.replace(temp, target)
        return
    if not os.path.lexists(target):
        os.rename(temp, target)
        return
    if os.path.isdir(target) and not os.path.islink(target) and not is_sharded_checkpoint(target):
        raise FileExistsError(f"{target} is a folder but not a volt checkpoint; not replacing it. Move it away, or "
                              "save the checkpoint under another name.")
    _exchange(temp, target)
    _remove_any(temp)


def _exchange(first: str, second: str) -> None:
    """Swap two paths atomically (Linux renameat2 with RENAME_EXCHANGE). Where that is unavailable, two renames:
    a crash between them leaves `second` missing and its old content under a hidden name beside it."""
    libc = _libc()
    if libc is not None:
        import ctypes

        at_cwd, rename_exchange = -100, 2
        if libc.renameat2(at_cwd, os.fsencode(first), at_cwd, os.fsencode(second), rename_exchange) == 0:
            return
        error = ctypes.get_errno()
        if error not in (22, 38, 95):  # EINVAL, ENOSYS, EOPNOTSUPP: this filesystem cannot; rename instead
            raise OSError(error, os.strerror(error), second)
    folder, basename = os.path.split(second)
    aside = os.path.join(folder, f".{basename}.old-{secrets.token_hex(4)}")
    os.rename(second, aside)
    os.rename(first, second)
    os.rename(aside, first)


def _libc():
    """The C library, if it has renameat2 (glibc >= 2.28); else None."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None
    return libc if hasattr(libc, "renameat2") else None


def save_checkpoint(checkpoint: Dict[str, Any], path: PathLike) -> None:
    """Write `checkpoint` to `path` atomically and durably, creating missing folders.

    On any failure (including a crash or a kill) the file already at `path` is left as it was. Raises TypeError,
    before writing anything, if the checkpoint holds a value that a safe load could not read back.
    """
    if not isinstance(checkpoint, dict):
        raise TypeError(f"save_checkpoint expects a dict, got {type(checkpoint).__name__}.")
    checkpoint = _plain(checkpoint, "checkpoint", {})
    _write_atomic(path, lambda f: torch.save(checkpoint, f))


def stage(obj: Any) -> Any:
    """A copy of checkpoint data that later training cannot change: containers copied, tensors copied to CPU."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return type(obj)((key, stage(value)) for key, value in obj.items())
    if type(obj) in (list, tuple, set):
        return type(obj)(stage(item) for item in obj)
    return obj


class PendingWrite:
    """A checkpoint being written in the background.

    `then(fn)` runs `fn` once the checkpoint is durable (in the writer's thread, or at once if it already is), for
    file work that must follow it: pointing a link at it, deleting the checkpoints it replaces. If the write fails,
    the follow-ups do not run, the error is logged at once on this rank, and the first `wait()` raises it (the
    Trainer and a CheckpointIO plugin may both wait for one write: its failure is reported once).
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._finished = threading.Event()
        self._error: Optional[BaseException] = None
        self._reported = False
        self._followups: list = []

    @classmethod
    def start(cls, path: PathLike, write: Callable[[], None]) -> "PendingWrite":
        """Run `write` in a new writer thread."""
        pending = cls(os.fspath(path))
        threading.Thread(target=pending.run, args=(write,), name="volt-checkpoint-writer", daemon=True).start()
        return pending

    def run(self, write: Callable[[], None]) -> None:
        """Run `write` (in the writer's thread), then the follow-ups; record the first failure."""
        try:
            write()
            while True:  # follow-ups may be added while earlier ones run
                with self._lock:
                    if not self._followups:
                        self._finished.set()
                        return
                    followup = self._followups.pop(0)
                followup()
        except BaseException as error:  # the writer thread must not die silently: recorded, logged, raised by wait()
            self._error = error
            log.error(f"Writing the checkpoint {self.path} in the background (or the file work after it) failed: "
                      f"{error!r}. The run raises this error at its next checkpoint save or at the end of fit.")
            self._finished.set()

    def then(self, fn: Callable[[], None]) -> None:
        with self._lock:
            if not self._finished.is_set():
                self._followups.append(fn)
                return
        if self._error is None:
            fn()

    def done(self) -> bool:
        return self._finished.is_set()

    def wait(self) -> None:
        """Block until the checkpoint is durable; raise the error if writing it (or a follow-up) failed."""
        self._finished.wait()
        with self._lock:
            error = None if self._reported else self._error
            self._reported = True
        if error is not None:
            raise RuntimeError(f"Writing the checkpoint {self.path} in the background (or the file work after it) "
                               f"failed: {error!r}. The checkpoints before it are intact.") from error


def atomic_symlink(target: PathLike, link_path: PathLike) -> None:
    """Point `link_path` at `target` (a checkpoint file or folder; for `last.ckpt` with `save_last="link"`),
    replacing what was there atomically.

    The link is relative, so the folder can be moved. Where links cannot be made (remote storage, Windows without
    the privilege, some filesystems) `link_path` becomes an atomic copy of `target` instead.
    """
    if is_remote(target) or is_remote(link_path):
        _copy_atomic(target, link_path)
        return
    target, link_path = os.path.abspath(_local(target)), os.path.abspath(_local(link_path))
    if target == link_path:
        return
    folder, basename = os.path.split(link_path)
    os.makedirs(folder, exist_ok=True)
    temp = os.path.join(folder, _temp_name(basename))
    try:
        os.symlink(os.path.relpath(target, folder), temp)
    except (OSError, NotImplementedError):
        _copy_atomic(target, link_path)
        return
    try:
        move_into_place(temp, link_path)  # also over a sharded checkpoint folder of that name
    except BaseException:
        _remove_quietly(temp)
        raise
    _fsync_dir(folder)


def _copy_atomic(source: PathLike, destination: PathLike) -> None:
    import shutil

    if is_sharded_checkpoint(source) and not is_remote(destination):
        folder, basename = os.path.split(os.path.abspath(_local(destination)))
        temp = os.path.join(folder, _temp_name(basename))
        try:
            shutil.copytree(_local(source), temp)
            move_into_place(temp, _local(destination))
        except BaseException:
            if os.path.lexists(temp):
                _remove_any(temp)
            raise
        _fsync_dir(folder)
        return
    with _open(source) as src:
        _write_atomic(destination, lambda dst: shutil.copyfileobj(src, dst, 16 * 1024 * 1024))


def _open(path: PathLike):
    """Open a local or remote file for binary reading."""
    if is_remote(path):
        fs, remote_path = _filesystem(path)
        return fs.open(remote_path, "rb")
    return open(_local(path), "rb")


# ----------------------------------------------------------------------------------------------------------------
# what a checkpoint may hold


def _plain(obj: Any, where: str, done: Dict[int, Any]) -> Any:
    """`obj` as data that `torch.load(weights_only=True)` reads back, or TypeError naming `where`.

    A numpy number becomes the Python number it equals (an optimizer built with an `np.float64` learning rate
    keeps it in its state); only the containers that hold one are copied, so the caller's objects stay as they were.
    """
    kind = type(obj)
    if kind in _LEAF_TYPES or kind in _TENSOR_TYPES:
        return obj
    if kind not in _CONTAINER_TYPES:
        number = obj.item() if kind.__module__ == "numpy" and hasattr(obj, "item") else None
        if type(number) in (bool, int, float, complex):
            return number
        raise TypeError(
            f"{where}: value of type {kind.__module__}.{kind.__qualname__} cannot be stored safely; a volt checkpoint "
            "holds only tensors, numbers, strings, bytes, None and lists, tuples, sets and dicts of them, so that it "
            "loads with torch.load(weights_only=True). Convert it to plain data (e.g. `.state_dict()`, `str(path)`, "
            "`.item()`, `.tolist()`) or leave it out of the checkpoint."
        )
    if id(obj) in done:  # shared or recursive containers are converted once
        return done[id(obj)]
    done[id(obj)] = obj
    if isinstance(obj, dict):
        items = [(_plain(key, f"{where} (the key {key!r})", done), _plain(value, f"{where}[{key!r}]", done))
                 for key, value in obj.items()]
        changed = any(new[0] is not key or new[1] is not value for new, (key, value) in zip(items, obj.items()))
        converted = kind(dict(items)) if changed else obj
    else:
        what = "an element of the set" if kind is set else None
        items = [_plain(item, f"{where} ({what})" if what else f"{where}[{index}]", done)
                 for index, item in enumerate(obj)]
        converted = kind(items) if any(new is not item for new, item in zip(items, obj)) else obj
    done[id(obj)] = converted
    return converted


# ----------------------------------------------------------------------------------------------------------------
# hyperparameters


def encode_hparams(hparams: Any, where: str = "hparams") -> Any:
    """Turn hyperparameters into plain checkpoint data that `decode_hparams` turns back.

    Paths, sets, enum members, `argparse.Namespace`, dataclass and namedtuple instances and OmegaConf configs (their
    contents, interpolations resolved) become tagged dicts (`{"__volt__": "path", "cls": "PosixPath", "value":
    "/a/b"}`); numpy values become Python numbers or lists; other mappings become dicts, other sequences (deque,
    range) lists. Anything else (a module, a function, an arbitrary object) is stored as its repr with a warning
    naming the key: a checkpoint save must not crash a training run over a hyperparameter.
    """
    if isinstance(hparams, Enum):
        return {_TAG: "enum", "cls": _class_name(type(hparams)), "name": hparams.name}
    kind = type(hparams)
    if kind in _LEAF_TYPES or kind in _TENSOR_TYPES:
        return hparams
    for base in (int, float, complex, str, bytes):  # subclasses, e.g. numpy.float64
        if isinstance(hparams, base):
            return base(hparams)
    if isinstance(hparams, pathlib.PurePath):
        return {_TAG: "path", "cls": kind.__name__, "value": str(hparams)}
    if isinstance(hparams, Namespace):
        return {_TAG: "namespace", "items": encode_hparams(vars(hparams), where)}
    if dataclasses.is_dataclass(hparams) and not isinstance(hparams, type):
        fields = {f.name: encode_hparams(getattr(hparams, f.name), f"{where}.{f.name}")
                  for f in dataclasses.fields(hparams) if f.init}
        return {_TAG: "dataclass", "cls": _class_name(kind), "fields": fields}
    if isinstance(hparams, dict):
        if _TAG not in hparams and all(type(key) in _PLAIN_KEY_TYPES for key in hparams):
            items = ((key, encode_hparams(value, f"{where}[{key!r}]")) for key, value in hparams.items())
            return OrderedDict(items) if kind is OrderedDict else dict(items)
        # keys that are not plain (or a user key that looks like our tag) keep their order as pairs
        return {_TAG: "dict", "items": [[encode_hparams(key, f"{where} (a key)"),
                                         encode_hparams(value, f"{where}[{key!r}]")]
                                        for key, value in hparams.items()]}
    if isinstance(hparams, (set, frozenset)):
        items = [encode_hparams(item, f"{where} (an element)") for item in hparams]
        return {_TAG: "frozenset" if isinstance(hparams, frozenset) else "set", "items": items}
    if isinstance(hparams, tuple) and hasattr(hparams, "_fields"):
        items = [encode_hparams(item, f"{where}.{name}") for name, item in zip(hparams._fields, hparams)]
        return {_TAG: "namedtuple", "cls": _class_name(kind), "items": items}
    if isinstance(hparams, (list, tuple)):
        items = [encode_hparams(item, f"{where}[{index}]") for index, item in enumerate(hparams)]
        return tuple(items) if isinstance(hparams, tuple) else items
    package = kind.__module__.partition(".")[0]
    if package == "omegaconf" and isinstance(hparams, (Mapping, Sequence)):  # DictConfig, ListConfig
        return {_TAG: "omegaconf", "items": encode_hparams(_omegaconf_container(hparams), where)}
    if isinstance(hparams, Mapping):
        return encode_hparams(dict(hparams.items()), where)
    if isinstance(hparams, AbstractSet):
        return encode_hparams(set(hparams), where)
    if isinstance(hparams, Sequence):  # deque, range, user sequences: stored as a list
        return encode_hparams(list(hparams), where)
    if package == "numpy" and hasattr(hparams, "tolist"):
        value = hparams.tolist()
        if type(value) is not kind:  # np.longdouble.tolist() is itself
            return encode_hparams(value, where)
    try:
        text = repr(hparams)
    except Exception:
        text = f"<{kind.__qualname__} object>"
    rank_zero_warn(
        f"{where}: a value of type {kind.__qualname__} cannot be stored safely in a checkpoint, so its repr "
        f"{text[:80]!r} is saved instead. Pass the value again when loading (e.g. "
        "`Model.load_from_checkpoint(path, name=value)`) or leave it out with `save_hyperparameters(ignore=[...])`."
    )
    return text


def _omegaconf_container(config: Any) -> Any:
    """An OmegaConf config as plain dicts and lists, interpolations resolved where they resolve."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    try:
        return OmegaConf.to_container(config, resolve=True)
    except OmegaConfBaseException:  # an interpolation that points nowhere is kept as its "${...}" text
        return OmegaConf.to_container(config, resolve=False)


def decode_hparams(data: Any, where: str = "hparams") -> Any:
    """Rebuild what `encode_hparams` stored.

    Enum, dataclass and namedtuple classes (and OmegaConf) are looked up only among modules already imported (the
    code that uses them has imported them): a checkpoint never makes volt import a module. A class that cannot be
    found gives a warning and the closest plain value (the member's name, the fields as a dict, a tuple).
    """
    kind = type(data)
    if kind in (list, tuple):
        return kind(decode_hparams(item, f"{where}[{index}]") for index, item in enumerate(data))
    if not isinstance(data, dict):
        return data
    if _TAG not in data:
        items = ((key, decode_hparams(value, f"{where}[{key!r}]")) for key, value in data.items())
        return OrderedDict(items) if kind is OrderedDict else dict(items)
    tag = data[_TAG]
    if tag == "path":
        pure = {"PurePath": pathlib.PurePath, "PurePosixPath": pathlib.PurePosixPath,
                "PureWindowsPath": pathlib.PureWindowsPath}
        return pure.get(data["cls"], pathlib.Path)(data["value"])
    if tag == "namespace":
        return Namespace(**decode_hparams(data["items"], where))
    if tag in ("set", "frozenset"):
        items = (decode_hparams(item, f"{where} (an element)") for item in data["items"])
        return set(items) if tag == "set" else frozenset(items)
    if tag == "dict":
        return {decode_hparams(key, f"{where} (a key)"): decode_hparams(value, where) for key, value in data["items"]}
    if tag == "omegaconf":
        items = decode_hparams(data["items"], where)
        if "omegaconf" in sys.modules:
            return sys.modules["omegaconf"].OmegaConf.create(items)
        _warn_missing(where, "omegaconf:OmegaConf", "its contents are returned as plain dicts and lists instead")
        return items
    if tag == "enum":
        cls = _find_class(data["cls"], lambda c: issubclass(c, Enum))
        if cls is not None and data["name"] in cls.__members__:
            return cls[data["name"]]
        _warn_missing(where, data["cls"], f"the member name {data['name']!r} is returned instead")
        return data["name"]
    if tag == "dataclass":
        fields = {name: decode_hparams(value, f"{where}.{name}") for name, value in data["fields"].items()}
        cls = _find_class(data["cls"], dataclasses.is_dataclass)
        if cls is None:
            _warn_missing(where, data["cls"], "its fields are returned as a dict instead")
            return fields
        try:
            return cls(**fields)
        except TypeError as err:  # the class changed since the checkpoint was written
            rank_zero_warn(f"{where}: {data['cls']}(**fields) failed ({err}); the fields are returned as a dict.")
            return fields
    if tag == "namedtuple":
        items = [decode_hparams(item, where) for item in data["items"]]
        cls = _find_class(data["cls"], lambda c: issubclass(c, tuple) and hasattr(c, "_fields"))
        if cls is not None:
            return cls(*items)
        _warn_missing(where, data["cls"], "a plain tuple is returned instead")
        return tuple(items)
    raise ValueError(f"{where}: unknown hyperparameter tag {tag!r}; the checkpoint was written by a newer volt.")


def _class_name(cls: type) -> str:
    """"module:qualname", unambiguous even for nested classes."""
    return f"{cls.__module__}:{cls.__qualname__}"


def _find_class(name: str, accept: Callable[[type], bool]) -> Optional[type]:
    """The class called `name` in an already imported module, if it is one `accept` allows."""
    module_name, _, qualname = name.partition(":")
    obj = sys.modules.get(module_name)
    for part in qualname.split("."):
        obj = getattr(obj, part, None)
    return obj if isinstance(obj, type) and accept(obj) else None


def _warn_missing(where: str, cls_name: str, fallback: str) -> None:
    module_name = cls_name.partition(":")[0]
    rank_zero_warn(
        f"{where}: class {cls_name} is not available (import {module_name} before loading to get it back); "
        f"{fallback}."
    )


# ----------------------------------------------------------------------------------------------------------------
# safe loading


def _compatible_globals() -> list:
    """Harmless classes that Lightning checkpoints carry, allowed on top of torch's weights_only defaults.

    Lightning pickles hyperparameters as they are, so its files hold paths, `argparse.Namespace` (older tutorials)
    and Lightning's `AttributeDict`. Unpickling these only builds a value from strings and dicts; no call can reach
    code chosen by the file. A path of the other operating system becomes its pure path (a `WindowsPath` cannot be
    created on Linux), and `AttributeDict` becomes a plain dict so that Lightning need not be imported.
    Everything else (enums, numpy values, arbitrary classes) stays refused.
    """
    native = pathlib.WindowsPath if os.name == "nt" else pathlib.PosixPath
    allowed: list = [pathlib.PurePosixPath, pathlib.PureWindowsPath, native, Namespace]
    for module in ("pathlib", "pathlib._local"):  # Python 3.13 moved the classes to pathlib._local
        allowed += [(pathlib.PurePosixPath, f"{module}.PurePosixPath"),
                    (pathlib.PureWindowsPath, f"{module}.PureWindowsPath"),
                    (native if native is pathlib.PosixPath else pathlib.PurePosixPath, f"{module}.PosixPath"),
                    (native if native is pathlib.WindowsPath else pathlib.PureWindowsPath, f"{module}.WindowsPath")]
    for name in ("lightning_fabric.utilities.data", "lightning.fabric.utilities.data",
                 "pytorch_lightning.utilities.parsing", "lightning.pytorch.utilities.parsing"):
        allowed.append((dict, f"{name}.AttributeDict"))
    return allowed


def load_checkpoint(path: PathLike, map_location=None, weights_only: Optional[bool] = True) -> Dict[str, Any]:
    """Load a checkpoint file, safely by default: the file is read as data and nothing in it runs.

    `weights_only=None` means True (Lightning's spelling of the default). Pass `weights_only=False` only for a
    trusted file that holds arbitrary Python objects. A missing file raises FileNotFoundError; a damaged file, or
    one that references code, raises CheckpointError saying which and what to do. (A sharded checkpoint folder:
    `volt.sharded_checkpoint.load` reads either kind.)
    """
    weights_only = True if weights_only is None else weights_only
    if not checkpoint_exists(path) or is_sharded_checkpoint(path):
        if is_sharded_checkpoint(path):
            raise IsADirectoryError(f"{os.fspath(path)} is a sharded checkpoint folder: read it with "
                                    "volt.sharded_checkpoint.load, or make it one file with `volt checkpoint "
                                    "consolidate`.")
        if not is_remote(path) and os.path.isdir(_local(path)):
            raise NotACheckpointFolder(
                f"{os.fspath(path)} does not point to a valid checkpoint: it is a folder but not a complete checkpoint "
                f"(it has no {SHARDED_MARKER}, which a sharded save writes last). Pass the path of a checkpoint file "
                "or of a complete checkpoint folder."
            )
        raise FileNotFoundError(f"Checkpoint file not found: {os.fspath(path)}")
    allow = torch.serialization.safe_globals(_compatible_globals()) if weights_only else nullcontext()
    try:
        with allow:
            if is_remote(path):
                with _open(path) as f:
                    return torch.load(f, map_location=map_location, weights_only=weights_only)
            return torch.load(_local(path), map_location=map_location, weights_only=weights_only)
    except Exception as err:
        with allow:
            problem = _diagnose(path, weights_only)
        if problem is None:
            raise
        raise problem from err


def _diagnose(path: PathLike, weights_only: bool) -> Optional[CheckpointError]:
    """Why `path` failed to load, checked without running anything in it; None when the file looks sound.

    torch's own errors for a damaged file vary (zip errors, pickle errors, EOFError, even "unsupported global" for
    a flipped byte), so the file is checked directly: the zip structure and every member's CRC first, then the
    code references in its pickle.
    """
    with _open(path) as f:
        if f.read(4) != b"PK\x03\x04":  # not the zip format torch.save has written since torch 1.6
            f.seek(0)
            try:
                found = _pickle_globals(f)
            except Exception as err:
                return _damaged(path, f"not a torch checkpoint or truncated: {err}")
            unsafe = sorted(found - _torch_allowed_globals()) if weights_only else []
            return _refused(path, unsafe) if unsafe else None
        f.seek(0)
        try:
            with zipfile.ZipFile(f) as archive:
                bad_member = archive.testzip()
        except Exception as err:
            return _damaged(path, f"incomplete zip archive: {err}")
        if bad_member is not None:
            return _damaged(path, f"{bad_member} fails its checksum")
        if not weights_only:
            return None
        f.seek(0)
        try:
            unsafe = sorted(torch.serialization.get_unsafe_globals_in_checkpoint(f))
        except Exception as err:  # torch's zip reader is stricter than Python's about headers
            return _damaged(path, f"invalid zip archive: {err}")
    return _refused(path, unsafe) if unsafe else None


def _damaged(path: PathLike, reason: str) -> CheckpointError:
    return CheckpointError(
        f"Checkpoint file {os.fspath(path)} is damaged (truncated or corrupt: {reason}). This happens when a crash "
        "or a full disk interrupts a write that was not atomic, e.g. by another tool or a copy. Resume from an "
        "earlier checkpoint instead."
    )


def _refused(path: PathLike, names: list) -> CheckpointError:
    return CheckpointError(
        f"Refused to load {os.fspath(path)}: it references Python code or classes ({', '.join(names)}) that a safe "
        "load does not allow. Nothing in the file was executed. volt checkpoints hold plain data only; load this "
        "file with weights_only=False only if you trust the file and where it came from."
    )


def _pickle_globals(f) -> set:
    """The "module.name" globals a pickle references, read statically (pickletools executes nothing)."""
    import pickletools

    names, pushed, memo = set(), [], {}
    for opcode, arg, _ in pickletools.genops(f):
        if opcode.name in ("GLOBAL", "INST"):
            names.add(arg.replace(" ", "."))
        elif opcode.name == "STACK_GLOBAL" and len(pushed) >= 2 and None not in pushed[-2:]:
            names.add(f"{pushed[-2]}.{pushed[-1]}")
        elif opcode.name == "MEMOIZE":
            memo[len(memo)] = pushed[-1] if pushed else None
        elif opcode.name in ("PUT", "BINPUT", "LONG_BINPUT"):
            memo[arg] = pushed[-1] if pushed else None
        elif opcode.name in ("GET", "BINGET", "LONG_BINGET"):
            pushed.append(memo.get(arg))
        elif isinstance(arg, str):
            pushed.append(arg)
    return names


def _torch_allowed_globals() -> set:
    """Names torch's weights_only unpickler accepts now (defaults plus safe_globals). Private torch API, so guarded."""
    from torch import _weights_only_unpickler as unpickler

    try:
        return set(unpickler._get_allowed_globals()) | set(unpickler._get_user_allowed_globals())
    except AttributeError:
        return set()
