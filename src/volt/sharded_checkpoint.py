"""Sharded checkpoints: a folder that every rank writes its own part of, in parallel, with torch.distributed.checkpoint.

A sharded checkpoint holds what a single-file checkpoint holds (volt/trainer/checkpointing.py), laid out so that no
rank gathers anything. It is a folder named like a file checkpoint (`epoch=3-step=400.ckpt/`) with these entries:

    DCP entry                                    holds                                               written by
    state_dict/<name>                            the model's tensors                                  every rank
    optimizer_states/<i>/state/<param>/<key>     optimizer i's tensors (<param>: name or index)       every rank
    loops/fit_loop/grads/<name>                  pending accumulation gradients (equal on all ranks)  every rank
    volt/common                                  everything else (rank 0's), one plain-data entry      rank 0
    volt/rank/<r>                                rank r's own loop state: RNG, sampler, self.log sums  rank r
    volt_checkpoint.json                         the completion marker (format, version, world size)  rank 0, last

Tensors that are sharded (FSDP's DTensors) are written by the ranks that hold each shard; replicated tensors (DDP's
model, the averaged gradients) are written once, spread over the ranks by DCP. Loading reshards: every entry is read
into the shapes and placements the loading ranks ask for, so a folder written by 4 ranks loads on 2, on 1 process, or
into another strategy.

Visible only when complete: the ranks write into a hidden folder `.NAME.tmp-<token>` (each rank fsyncs its files;
DCP's rank 0 writes `.metadata` once every rank has reported), then rank 0 writes the marker, fsyncs, and renames the
folder into place (a checkpoint already at NAME is swapped out atomically and deleted, checkpoint.move_into_place).
A crash at any moment leaves the previous checkpoint as it was; leftovers have hidden names and are removed by the
next save of the same name.

Safe to load: DCP's own reader unpickles `.metadata` with `pickle` and its planner loads non-tensor entries with
`torch.load(weights_only=False)`. Here `.metadata` is read by an unpickler that builds only DCP's metadata classes,
torch sizes and dtypes and paths, and every other entry loads with `torch.load(weights_only=True)` (tensors already
do in DCP), so loading a folder, like loading a file, never runs code from it. Local (or mounted shared) folders only.
"""
import contextlib
import json
import os
import secrets
import warnings
from collections import OrderedDict
from typing import Any, Callable, Dict, Iterable, List, Optional

import torch

from volt.checkpoint import (SHARDED_MARKER, CheckpointError, PendingWrite, PathLike, _plain,
                             _compatible_globals, _fsync_dir, _local, _remove_any, is_remote, is_sharded_checkpoint,
                             load_checkpoint, move_into_place, save_checkpoint)

FORMAT = "volt sharded checkpoint"
VERSION = 1
_COMMON = "volt/common"
_RANK = "volt/rank/"
_MODEL = "state_dict/"
_GRADS = "loops/fit_loop/grads/"
_OPTIMIZER = "optimizer_states/{}/state/"


# ----------------------------------------------------------------------------------------------------------------
# writing


def save_sharded(checkpoint: Dict[str, Any], path: PathLike, *, own: Optional[Dict[str, Any]] = None, rank: int = 0,
                 world_size: int = 1, process_group: Any = None, background: bool = False) -> Optional[PendingWrite]:
    """Write `checkpoint` as a sharded checkpoint folder at `path`. Every rank calls this, with its own checkpoint.

    The model's and optimizers' tensors and the pending gradients come from every rank; the rest of `checkpoint` is
    written from rank 0's; `own` is this rank's own loop state. Synchronous: returns once the folder is in place
    (rank 0) or this rank's part is written (others: a barrier should follow). `background=True`: returns a
    `PendingWrite` once DCP has staged the tensors (copied them to CPU memory); `process_group` must then be a group
    of its own (gloo), so that the writer's collectives never interleave with the training's.
    """
    if is_remote(path):
        raise ValueError(f"Sharded checkpoints are written to local or mounted shared folders, not {path!r}. Use "
                         "state_dict_type='full' for remote storage, or a mounted path.")
    import torch.distributed as dist
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint import FileSystemWriter
    from torch.distributed.checkpoint.default_planner import DefaultSavePlanner

    target = os.path.abspath(_local(path))
    distributed = dist.is_available() and dist.is_initialized()
    temp = _temp_folder(target, rank, distributed)
    entries = _entries(checkpoint, own, rank)
    writer = FileSystemWriter(temp, sync_files=True)
    planner = DefaultSavePlanner(flatten_state_dict=False, flatten_sharded_tensors=False)  # keys are flat already

    def publish() -> None:
        if rank == 0:
            _publish(temp, target, world_size)

    if not background:
        try:
            with _single_process_is_intended():
                dcp.save(entries, storage_writer=writer, planner=planner, process_group=process_group,
                         no_dist=not distributed)
            publish()
        except BaseException:
            if rank == 0 and os.path.lexists(temp):
                _remove_any(temp)
            raise
        return None
    with _single_process_is_intended():
        result = dcp.async_save(entries, storage_writer=writer, planner=planner, process_group=process_group,
                                no_dist=not distributed)
    upload = getattr(result, "upload_completion", result)  # a Future, or with an async stager a response holding it
    pending = PendingWrite(target)

    def write() -> None:
        upload.result()
        publish()

    upload.add_done_callback(lambda _: pending.run(write))
    return pending


def _temp_folder(target: str, rank: int, distributed: bool) -> str:
    """The hidden folder all ranks write into: named by rank 0 (which also clears leftovers of earlier crashed saves
    of this name, and refuses a target that is a folder but no checkpoint), the same on every rank."""
    folder, name = os.path.split(target)
    decision = None
    if rank == 0:
        if os.path.isdir(target) and not os.path.islink(target) and not is_sharded_checkpoint(target):
            decision = ("error", f"{target} is a folder but not a volt checkpoint; not replacing it. Move it away, "
                                 "or save the checkpoint under another name.")
        else:
            _remove_leftovers(folder, name)
            decision = ("ok", os.path.join(folder, f".{name}.tmp-{secrets.token_hex(6)}"))
    if distributed:
        import torch.distributed as dist

        holder = [decision]
        dist.broadcast_object_list(holder, src=0)
        decision = holder[0]
    kind, value = decision
    if kind == "error":
        raise FileExistsError(value)
    return value


def _remove_leftovers(folder: str, name: str) -> None:
    """Hidden folders that crashed saves or removals of `name` left behind (incomplete: never a checkpoint)."""
    if not os.path.isdir(folder):
        return
    for entry in os.listdir(folder):
        if entry.startswith((f".{name}.tmp-", f".{name}.del-")):
            try:
                _remove_any(os.path.join(folder, entry))
            except OSError:  # another process's, or already gone: not this save's business
                pass


def _entries(checkpoint: Dict[str, Any], own: Optional[Dict[str, Any]], rank: int) -> Dict[str, Any]:
    """The flat DCP state dict: tensors under their own keys (see the module docstring), the rest as two entries."""
    entries: Dict[str, Any] = {}
    common = dict(checkpoint)
    if isinstance(checkpoint.get("state_dict"), dict):
        common["state_dict"] = _take_tensors(checkpoint["state_dict"], _MODEL, entries)
    if isinstance(checkpoint.get("optimizer_states"), list):
        common["optimizer_states"] = [
            {**state, "state": {param: _take_tensors(values, f"{_OPTIMIZER.format(i)}{param}/", entries)
                                for param, values in (state.get("state") or {}).items()}}
            for i, state in enumerate(checkpoint["optimizer_states"])]
    fit_loop = (checkpoint.get("loops") or {}).get("fit_loop")
    if isinstance(fit_loop, dict) and isinstance(fit_loop.get("grads"), dict):
        grads = _take_tensors(fit_loop["grads"], _GRADS, entries)
        common["loops"] = {**checkpoint["loops"], "fit_loop": {**fit_loop, "grads": grads}}
    if rank == 0:
        entries[_COMMON] = _plain(common, "checkpoint", {})
    if own is not None:
        entries[f"{_RANK}{rank}"] = _plain(own, f"checkpoint (rank {rank}'s own part)", {})
    return entries


def _take_tensors(mapping: Dict[Any, Any], prefix: str, entries: Dict[str, Any]) -> Dict[Any, Any]:
    """Move the tensor values of `mapping` into `entries` (keys prefixed); return the other values."""
    rest = {}
    for key, value in mapping.items():
        if isinstance(value, torch.Tensor):
            entries[f"{prefix}{key}"] = value
        else:
            rest[key] = value
    return rest


def _publish(temp: str, target: str, world_size: int) -> None:
    """Rank 0, once every rank's part is written: the marker, then the folder into place."""
    with open(os.path.join(temp, SHARDED_MARKER), "x") as f:
        json.dump({"format": FORMAT, "version": VERSION, "world_size": world_size}, f)
        f.flush()
        os.fsync(f.fileno())
    _fsync_dir(temp)
    move_into_place(temp, target)
    _fsync_dir(os.path.dirname(target))


# ----------------------------------------------------------------------------------------------------------------
# reading


class ShardedCheckpoint:
    """A complete sharded checkpoint folder, read safely, in parts: `read` the plain data (and pending gradients),
    `read_model` and `read_optimizer_states` the tensors, into the loading ranks' own shapes (once the model and the
    optimizers exist); `consolidated` all of it, in the single-file layout."""

    def __init__(self, path: PathLike) -> None:
        self.path = os.path.abspath(_local(path))
        if not is_sharded_checkpoint(self.path):
            if os.path.isdir(self.path):
                raise CheckpointError(
                    f"{self.path} is not a complete volt checkpoint: it has no {SHARDED_MARKER}, which a sharded save "
                    "writes last (an interrupted save, or a folder written by another tool). Resume from another "
                    "checkpoint."
                )
            raise FileNotFoundError(f"Checkpoint folder not found: {self.path}")
        with open(os.path.join(self.path, SHARDED_MARKER)) as f:
            info = json.load(f)
        if info.get("format") != FORMAT or int(info.get("version", 0)) > VERSION:
            raise CheckpointError(f"{self.path} was written in a newer format ({info}); upgrade volt to load it.")
        self.world_size = int(info["world_size"])
        self.entries = _reader(self.path).read_metadata().state_dict_metadata

    def read(self, ranks: Iterable[int] = (), map_location: Any = None) -> Dict[str, Any]:
        """Everything but the tensors of the model and the optimizers (`read_model`, `read_optimizer_states`): the
        common part, the pending gradients, and the own parts of `ranks` in `loops.fit_loop.per_rank`, the
        single-file place for them."""
        wanted: Dict[str, Any] = {_COMMON: None}
        own_keys = {rank: f"{_RANK}{rank}" for rank in ranks if f"{_RANK}{rank}" in self.entries}
        wanted.update({key: None for key in own_keys.values()})
        wanted.update(self._tensors(_GRADS, {}, map_location))
        self._load(wanted, map_location)
        checkpoint = wanted[_COMMON]
        fit_loop = (checkpoint.get("loops") or {}).get("fit_loop")
        if isinstance(fit_loop, dict):
            grads = _with_prefix(wanted, _GRADS)
            if grads:
                fit_loop["grads"] = {**(fit_loop.get("grads") or {}), **grads}
            if self.world_size > 1 and "per_rank" not in fit_loop:  # (a converted file keeps its own list)
                fit_loop["per_rank"] = [wanted.get(own_keys.get(rank)) for rank in range(self.world_size)]
        return checkpoint

    def read_model(self, checkpoint: Dict[str, Any], template: Optional[Dict[str, torch.Tensor]] = None,
                   map_location: Any = None) -> None:
        """Fill `checkpoint["state_dict"]` (of a checkpoint `read` returned) with the weights, read into the shapes
        and placements of `template` (name -> tensor as the loading model holds it; a DTensor reads only its
        shard) where it has them, else whole."""
        if "state_dict" in checkpoint:
            wanted = self._tensors(_MODEL, template or {}, map_location)
            self._load(wanted, map_location)
            checkpoint["state_dict"] = {**checkpoint["state_dict"], **_with_prefix(wanted, _MODEL)}

    def read_optimizer_states(self, checkpoint: Dict[str, Any],
                              template: Callable[[int], Optional[Dict[str, Any]]] = lambda i: None,
                              map_location: Any = None) -> None:
        """Fill `checkpoint["optimizer_states"]` with their tensors. `template(i)`, called only when optimizer i has
        tensors, gives its state dict as it is now (by parameter name; DTensors: this rank's shards) to read them
        into."""
        states = []
        for i, rest in enumerate(checkpoint.get("optimizer_states") or []):
            prefix = _OPTIMIZER.format(i)
            flat = {}
            if any(key.startswith(prefix) for key in self.entries):
                now = template(i) or {}
                flat = {f"{param}/{name}": value for param, values in (now.get("state") or {}).items()
                        for name, value in values.items() if isinstance(value, torch.Tensor)}
            wanted = self._tensors(prefix, flat, map_location)
            self._load(wanted, map_location)
            state = {param: dict(values) for param, values in rest["state"].items()}
            params = {str(param): param for param in state}  # the keys' own type: names, or indices
            for key, tensor in _with_prefix(wanted, prefix).items():
                param, _, name = key.rpartition("/")
                state[params[param]][name] = tensor
            states.append({**rest, "state": state})
        if "optimizer_states" in checkpoint:
            checkpoint["optimizer_states"] = states

    def consolidated(self, optimizer_states: bool = True, map_location: Any = None) -> Dict[str, Any]:
        """The whole checkpoint as one file holds it: full tensors, optimizer states by parameter index, every
        rank's own part in `loops.fit_loop.per_rank`."""
        checkpoint = self.read(range(self.world_size), map_location=map_location)
        self.read_model(checkpoint, map_location=map_location)
        if optimizer_states:
            self.read_optimizer_states(checkpoint, map_location=map_location)
            if "optimizer_states" in checkpoint:
                checkpoint["optimizer_states"] = [optimizer_state_by_index(s) for s in checkpoint["optimizer_states"]]
        else:
            checkpoint.pop("optimizer_states", None)
        return checkpoint

    def _tensors(self, prefix: str, templates: Dict[str, torch.Tensor], map_location: Any) -> Dict[str, Any]:
        """Empty tensors to read the entries under `prefix` into: shaped like their template where the global
        shapes agree (a DTensor reads only its shard), else whole."""
        from torch.distributed.checkpoint.metadata import TensorStorageMetadata

        tensors = {}
        for key, meta in self.entries.items():
            if not key.startswith(prefix) or not isinstance(meta, TensorStorageMetadata):
                continue
            template = templates.get(key[len(prefix):])
            if template is not None and tuple(template.shape) == tuple(meta.size):
                tensors[key] = torch.empty_like(template)
            else:
                tensors[key] = torch.empty(meta.size, dtype=meta.properties.dtype, device=_device(map_location))
        return tensors

    def _load(self, wanted: Dict[str, Any], map_location: Any) -> None:
        """Fill `wanted` in place, in this process alone (no collectives): every rank reads what it needs."""
        import torch.distributed.checkpoint as dcp

        if not wanted:
            return
        try:
            with _single_process_is_intended():
                dcp.load(wanted, storage_reader=_reader(self.path), planner=_load_planner(self.path, map_location),
                         no_dist=True)
        except dcp.CheckpointException as error:  # DCP wraps errors raised while reading: volt's own come out
            for failure in error.failures.values():
                cause = failure[0] if isinstance(failure, tuple) else failure
                if isinstance(cause, CheckpointError):
                    raise cause from None
            raise


@contextlib.contextmanager
def _single_process_is_intended():
    """DCP warns at every call without collectives ("assuming the intent is to ... in a single process"): here that
    is the intent (each rank reads for itself; one process converts a checkpoint)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*assuming the intent is to (load|save) in a single process")
        yield


def _with_prefix(entries: Dict[str, Any], prefix: str) -> Dict[str, Any]:
    return {key[len(prefix):]: value for key, value in entries.items() if key.startswith(prefix)}


def _device(map_location: Any) -> Optional[torch.device]:
    return torch.device(map_location) if isinstance(map_location, (str, torch.device)) else None


def optimizer_state_by_index(state: Dict[str, Any]) -> Dict[str, Any]:
    """An optimizer state dict in torch's layout (parameters numbered in param-group order), from DCP's layout
    (parameters by name); a state already numbered is returned as it is."""
    names = [param for group in state["param_groups"] for param in group["params"]]
    if not any(isinstance(name, str) for name in names):
        return state
    index = {name: i for i, name in enumerate(names)}
    return {**state, "state": {index[name]: value for name, value in state["state"].items()},
            "param_groups": [{**group, "params": [index[name] for name in group["params"]]}
                             for group in state["param_groups"]]}


def optimizer_state_by_name(state: Dict[str, Any]) -> bool:
    """Whether an optimizer state dict names its parameters (DCP's layout) rather than numbering them."""
    return any(isinstance(param, str) for group in state.get("param_groups", []) for param in group["params"])


# ----------------------------------------------------------------------------------------------------------------
# safe reading: DCP's reader and planner, with the two places that would unpickle replaced


_classes: Dict[str, type] = {}


def _reader(path: str):
    if "reader" not in _classes:
        from torch.distributed.checkpoint import FileSystemReader
        from torch.distributed.checkpoint.metadata import StorageMeta

        class SafeReader(FileSystemReader):
            """DCP's file reader, with `.metadata` unpickled by `_MetadataUnpickler`."""

            def read_metadata(self, *args: Any, **kwargs: Any):
                metadata_path = os.path.join(os.fspath(self.path), ".metadata")
                with open(metadata_path, "rb") as f:
                    metadata = _metadata_unpickler(f, metadata_path).load()
                if getattr(metadata, "storage_meta", None) is None:
                    metadata.storage_meta = StorageMeta()
                metadata.storage_meta.load_id = self.load_id
                return metadata

        _classes["reader"] = SafeReader
    return _classes["reader"](path)


def _load_planner(path: str, map_location: Any):
    if "planner" not in _classes:
        from torch.distributed.checkpoint.default_planner import DefaultLoadPlanner

        class SafeLoadPlanner(DefaultLoadPlanner):
            """DCP's load planner, with non-tensor entries loaded by `torch.load(weights_only=True)`."""

            def __init__(self, path: str, map_location: Any) -> None:
                super().__init__(flatten_state_dict=False, flatten_sharded_tensors=False)  # keys are flat already
                self.path, self.map_location = path, map_location

            def load_bytes(self, read_item, value) -> None:
                key = read_item.dest_index.fqn
                try:
                    with torch.serialization.safe_globals(_compatible_globals()):
                        loaded = torch.load(value, map_location=self.map_location, weights_only=True)
                except Exception as err:
                    raise CheckpointError(
                        f"Refused to load the entry {key!r} of {self.path}: it is not plain data ({_why(value, err)}). "
                        "Nothing in it was executed. volt writes plain data only: another tool wrote this entry."
                    ) from err
                self.state_dict[key] = loaded

        _classes["planner"] = SafeLoadPlanner
    return _classes["planner"](path, map_location)


def _why(value, error: Exception) -> str:
    """The code an entry references (read without running it), or torch's first line about it."""
    try:
        value.seek(0)
        names = torch.serialization.get_unsafe_globals_in_checkpoint(value)
    except Exception:
        names = []
    return f"it references {', '.join(sorted(names))}" if names else str(error).splitlines()[0]


def _metadata_unpickler(f, path: str):
    """An unpickler that builds only what DCP's `.metadata` holds: its metadata classes, torch sizes, dtypes and
    layouts, and (for the path the checkpoint was written to) pure paths. Anything else is refused before it runs."""
    import pathlib
    import pickle

    from torch.distributed.checkpoint import filesystem, metadata

    allowed: Dict[tuple, Any] = {(metadata.__name__, name): value for name, value in vars(metadata).items()
                                 if isinstance(value, type) and value.__module__ == metadata.__name__}
    allowed[(filesystem.__name__, "_StorageInfo")] = filesystem._StorageInfo
    allowed[("torch", "Size")] = torch.Size
    allowed[("torch.serialization", "_get_layout")] = torch.serialization._get_layout  # layout name -> layout
    allowed[("collections", "OrderedDict")] = OrderedDict
    allowed.update({("torch", str(dtype).rpartition(".")[2]): dtype for dtype in _dtypes()})
    for module in ("pathlib", "pathlib._local"):
        for name, pure in (("PosixPath", pathlib.PurePosixPath), ("PurePosixPath", pathlib.PurePosixPath),
                           ("WindowsPath", pathlib.PureWindowsPath), ("PureWindowsPath", pathlib.PureWindowsPath)):
            allowed[(module, name)] = pure

    class MetadataUnpickler(pickle.Unpickler):
        def find_class(self, module: str, name: str) -> Any:
            if (module, name) not in allowed:
                raise CheckpointError(
                    f"Refused to load {path}: it references {module}.{name}, which DCP metadata never holds. Nothing "
                    "in it was executed. Load checkpoints only from sources you trust."
                )
            return allowed[(module, name)]

    return MetadataUnpickler(f)


def _dtypes() -> List[torch.dtype]:
    return [value for value in vars(torch).values() if isinstance(value, torch.dtype)]


# ----------------------------------------------------------------------------------------------------------------
# either kind, conversions and `volt checkpoint`


def load(path: PathLike, map_location: Any = None, weights_only: Optional[bool] = True,
         optimizer_states: bool = True) -> Dict[str, Any]:
    """A checkpoint file or folder, in the single-file layout (`load_checkpoint`'s safety and errors for a file; a
    folder is always read safely). `optimizer_states=False` leaves a folder's optimizer states unread, for callers
    that need the weights or hyperparameters only."""
    if not is_remote(path) and os.path.isdir(_local(path)):
        return ShardedCheckpoint(path).consolidated(optimizer_states=optimizer_states, map_location=map_location)
    return load_checkpoint(path, map_location=map_location, weights_only=weights_only)



def consolidate(folder: PathLike, output: PathLike) -> None:
    """Write the sharded checkpoint `folder` as one checkpoint file (full tensors), e.g. for `torch.load`."""
    save_checkpoint(ShardedCheckpoint(folder).consolidated(), output)


def shard(file: PathLike, output: PathLike) -> None:
    """Write the checkpoint file `file` as a sharded checkpoint folder: its tensors then load in parallel, each rank
    reading only its shards. (Optimizer states keep the file's numbered layout and load whole on each rank.)"""
    save_sharded(load_checkpoint(file), output)


def main(argv: Optional[List[str]] = None) -> None:
    """`volt checkpoint consolidate FOLDER OUT.ckpt` and `volt checkpoint shard FILE.ckpt OUT_FOLDER`."""
    import argparse

    parser = argparse.ArgumentParser(prog="volt checkpoint",
                                     description="Convert between sharded checkpoint folders and checkpoint files.")
    commands = parser.add_subparsers(dest="command", required=True)
    for name, source, help_text in (
        ("consolidate", "folder", "a sharded checkpoint folder -> one checkpoint file with full tensors"),
        ("shard", "file", "a checkpoint file -> a sharded checkpoint folder"),
    ):
        command = commands.add_parser(name, help=help_text, description=help_text)
        command.add_argument(source, help=f"the checkpoint {source} to read")
        command.add_argument("output", help="where to write the result")
        command.add_argument("--overwrite", action="store_true", help="replace `output` if it exists")
    args = parser.parse_args(argv)
    if os.path.lexists(args.output) and not args.overwrite:
        parser.error(f"{args.output} exists; pass --overwrite to replace it.")
    try:
        if args.command == "consolidate":
            consolidate(args.folder, args.output)
        else:
            shard(args.file, args.output)
    except (CheckpointError, OSError, ValueError) as err:
        parser.exit(1, f"volt checkpoint {args.command}: error: {err}\n")
    print(f"Wrote {args.output}")
