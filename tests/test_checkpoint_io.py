"""volt.checkpoint: atomic saves that survive kills, safe loads, and hyperparameters that round-trip as plain data."""
import argparse
import collections
import dataclasses
import enum
import io
import multiprocessing
import os
import pathlib
import pickle
import random
import secrets
import struct
import subprocess
import sys
import time
import zipfile

import pytest
import torch

import volt
from volt.checkpoint import (
    CheckpointError,
    atomic_symlink,
    checkpoint_exists,
    decode_hparams,
    encode_hparams,
    is_remote,
    load_checkpoint,
    remove_checkpoint,
    save_checkpoint,
)


class Color(enum.Enum):
    RED = 1
    GREEN = 2


@dataclasses.dataclass
class OptimConfig:
    lr: float = 0.1
    betas: tuple = (0.9, 0.99)
    schedule: pathlib.Path = pathlib.Path("sched.yaml")


Span = collections.namedtuple("Span", ["start", "end"])


def _hparams():
    return {
        "lr": 1e-3,
        "root": pathlib.Path("/data/runs") / "exp1",
        "pure": pathlib.PurePosixPath("a/b"),
        "dims": (64, 32),
        "color": Color.GREEN,
        "nested": {"paths": [pathlib.Path("x"), pathlib.Path("y")], "depth": 3, "name": None},
        "args": argparse.Namespace(batch_size=32, data=pathlib.Path("/data")),
        "tags": {"a", "b"},
        "frozen": frozenset({1, 2}),
        "optim": OptimConfig(lr=0.5),
        "span": Span(1, 5),
        "by_color": {Color.RED: 1.0, (1, 2): "pair"},
        "tricky": {"__volt__": "user data"},
        "ordered": collections.OrderedDict([("b", 1), ("a", 2)]),
    }


def _training_state():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.BatchNorm1d(16), torch.nn.Linear(16, 2))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=2)
    model(torch.randn(4, 8)).sum().backward()
    optimizer.step()
    scheduler.step()
    return {
        "epoch": 3,
        "global_step": 120,
        "pytorch-lightning_version": "2.6.6",
        "state_dict": model.state_dict(),
        "optimizer_states": [optimizer.state_dict()],
        "lr_schedulers": [scheduler.state_dict()],
        "loops": {"fit_loop": {"epoch_progress": {"total": {"ready": 3, "completed": 3}}, "state_dict": {}}},
        "callbacks": {"ModelCheckpoint{'monitor': 'val_loss'}": {"best_model_score": torch.tensor(0.25),
                                                                 "best_model_path": "/ckpts/epoch=2.ckpt"}},
        "rng": {"torch": torch.get_rng_state(), "python": [3, [1, 2, 3], None]},
        "hyper_parameters": encode_hparams(_hparams()),
        "hparams_name": "kwargs",
    }


def _assert_equal(actual, expected):
    assert type(actual) is type(expected)
    if isinstance(expected, torch.Tensor):
        assert torch.equal(actual, expected)
    elif isinstance(expected, dict):
        assert list(actual) == list(expected)
        for key in expected:
            _assert_equal(actual[key], expected[key])
    elif isinstance(expected, (list, tuple)):
        assert len(actual) == len(expected)
        for a, e in zip(actual, expected):
            _assert_equal(a, e)
    else:
        assert actual == expected


# ---------------------------------------------------------------------------------------------------------------
# round trips


def test_realistic_checkpoint_round_trip_loads_with_plain_torch_weights_only(tmp_path):
    checkpoint = _training_state()
    path = tmp_path / "checkpoints" / "epoch=3-step=120.ckpt"  # the folder does not exist yet
    save_checkpoint(checkpoint, path)

    raw = torch.load(path, weights_only=True)
    _assert_equal(raw, checkpoint)
    _assert_equal(load_checkpoint(path), checkpoint)
    _assert_equal(load_checkpoint(str(path), map_location="cpu", weights_only=None), checkpoint)

    hparams = decode_hparams(raw["hyper_parameters"])
    assert hparams == _hparams()
    assert type(hparams["root"]) is type(pathlib.Path("/")) and type(hparams["pure"]) is pathlib.PurePosixPath
    assert hparams["color"] is Color.GREEN
    assert isinstance(hparams["args"], argparse.Namespace) and type(hparams["optim"]) is OptimConfig
    assert type(hparams["span"]) is Span and type(hparams["frozen"]) is frozenset
    assert type(hparams["ordered"]) is collections.OrderedDict
    assert os.listdir(path.parent) == [path.name]


def test_encoded_hparams_are_plain_tagged_data():
    encoded = encode_hparams({"root": pathlib.PurePosixPath("/a/b"), "color": Color.RED, "dims": (1, 2)})
    assert encoded == {
        "root": {"__volt__": "path", "cls": "PurePosixPath", "value": "/a/b"},
        "color": {"__volt__": "enum", "cls": f"{__name__}:Color", "name": "RED"},
        "dims": (1, 2),
    }


def test_numpy_hparams_become_python_values():
    np = pytest.importorskip("numpy")
    encoded = encode_hparams({"lr": np.float64(0.5), "n": np.int64(3), "grid": np.arange(3)})
    assert encoded == {"lr": 0.5, "n": 3, "grid": [0, 1, 2]}
    assert type(encoded["lr"]) is float and type(encoded["n"]) is int


def test_unstorable_hparam_is_saved_as_repr_with_a_warning_naming_the_key(tmp_path):
    class Activation:
        def __repr__(self):
            return "Activation()"

    with pytest.warns(UserWarning, match=r"hparams\['model'\]\['act'\]: a value of type .*Activation cannot be stored"):
        encoded = encode_hparams({"model": {"act": Activation(), "width": 4}})
    assert encoded == {"model": {"act": "Activation()", "width": 4}}
    save_checkpoint({"hyper_parameters": encoded}, tmp_path / "a.ckpt")


def test_classes_that_are_not_imported_fall_back_with_a_warning():
    stored = {"color": {"__volt__": "enum", "cls": "volt_test_not_imported:Color", "name": "RED"},
              "cfg": {"__volt__": "dataclass", "cls": "volt_test_not_imported:Cfg", "fields": {"lr": 0.1}}}
    with pytest.warns(UserWarning, match=r"hparams\['color'\]: class volt_test_not_imported:Color is not available"):
        with pytest.warns(UserWarning, match="fields are returned as a dict"):
            decoded = decode_hparams(stored)
    assert decoded == {"color": "RED", "cfg": {"lr": 0.1}}
    assert "volt_test_not_imported" not in sys.modules  # decoding never imports a module named by the file


def test_dataclass_whose_fields_changed_falls_back_to_a_dict():
    stored = {"__volt__": "dataclass", "cls": f"{__name__}:OptimConfig", "fields": {"lr": 0.1, "momentum": 0.9}}
    with pytest.warns(UserWarning, match=r"OptimConfig\(\*\*fields\) failed .*momentum"):
        assert decode_hparams(stored) == {"lr": 0.1, "momentum": 0.9}


def test_enum_tag_naming_a_non_enum_is_not_resolved():
    stored = {"__volt__": "enum", "cls": "os:system", "name": "RED"}
    with pytest.warns(UserWarning, match="os:system is not available"):
        assert decode_hparams(stored) == "RED"


# ---------------------------------------------------------------------------------------------------------------
# what may be saved


class MyNet(torch.nn.Module):
    pass


@pytest.mark.parametrize("value, where, type_name", [
    ({"hyper_parameters": {"net": MyNet()}}, r"checkpoint\['hyper_parameters'\]\['net'\]", "MyNet"),
    ({"paths": [1, pathlib.Path("x")]}, r"checkpoint\['paths'\]\[1\]", "PosixPath|WindowsPath"),
    ({"counts": collections.defaultdict(int)}, r"checkpoint\['counts'\]", "defaultdict"),
    ({"by_color": {Color.RED: 1}}, r"checkpoint\['by_color'\] \(the key <Color.RED: 1>\)", "Color"),
])
def test_save_rejects_values_a_safe_load_cannot_read(tmp_path, value, where, type_name):
    with pytest.raises(TypeError, match=rf"^{where}: value of type \S*({type_name}) cannot be stored safely; .*"
                                        r"torch.load\(weights_only=True\)"):
        save_checkpoint(value, tmp_path / "a.ckpt")
    assert os.listdir(tmp_path) == []


def test_save_rejects_a_non_dict(tmp_path):
    with pytest.raises(TypeError, match="save_checkpoint expects a dict, got list"):
        save_checkpoint([1, 2], tmp_path / "a.ckpt")


def test_every_value_save_accepts_loads_with_weights_only(tmp_path):
    values = {
        "none": None, "bool": True, "int": 3, "float": float("nan"), "complex": 1 + 2j, "str": "s", "bytes": b"b",
        "bytearray": bytearray(b"ba"), "size": torch.Size([2, 3]), "dtype": torch.bfloat16,
        "device": torch.device("cpu"),
        "tensor": torch.arange(3), "parameter": torch.nn.Parameter(torch.ones(2)), "list": [1, [2]], "tuple": (1, (2,)),
        "set": {1, "a"}, "ordered": collections.OrderedDict(a=1), "counter": collections.Counter("aab"),
        1: "int key", (1, "a"): "tuple key", None: "None key",
    }
    save_checkpoint(values, tmp_path / "a.ckpt")
    loaded = torch.load(tmp_path / "a.ckpt", weights_only=True)
    assert set(loaded) == set(values)
    assert loaded["parameter"].requires_grad and loaded["size"] == values["size"]


def test_numpy_numbers_are_saved_as_python_numbers_and_the_callers_objects_are_left_alone(tmp_path):
    np = pytest.importorskip("numpy")
    groups = [{"lr": np.float64(0.1), "betas": (np.float32(0.5), 0.9), "params": [0]}]
    scheduler = {"base_lrs": [np.float64(0.1)], "last_epoch": np.int64(3)}
    save_checkpoint({"optimizer_states": [{"param_groups": groups}], "lr_schedulers": [scheduler]},
                    tmp_path / "a.ckpt")
    loaded = torch.load(tmp_path / "a.ckpt", weights_only=True)
    assert loaded["optimizer_states"][0]["param_groups"] == [{"lr": 0.1, "betas": (0.5, 0.9), "params": [0]}]
    assert loaded["lr_schedulers"] == [{"base_lrs": [0.1], "last_epoch": 3}]
    assert type(loaded["lr_schedulers"][0]["last_epoch"]) is int
    assert type(groups[0]["lr"]) is np.float64 and type(scheduler["base_lrs"][0]) is np.float64
    with pytest.raises(TypeError, match=r"checkpoint\['when'\]: value of type numpy.datetime64 cannot be stored"):
        save_checkpoint({"when": np.datetime64("2020-01-01")}, tmp_path / "b.ckpt")


def test_mappings_and_sequences_of_other_types_are_saved_as_plain_containers():
    np = pytest.importorskip("numpy")
    import types

    encoded = encode_hparams({"view": types.MappingProxyType({"a": 1}), "queue": collections.deque([1, 2]),
                              "steps": range(3), "keys": {"a": 1}.keys()})
    assert encoded == {"view": {"a": 1}, "queue": [1, 2], "steps": [0, 1, 2],
                       "keys": {"__volt__": "set", "items": ["a"]}}
    with pytest.warns(UserWarning, match=r"hparams\['when'\]: a value of type date cannot be stored safely"):
        assert encode_hparams({"when": np.datetime64("2020-01-02")}) == {"when": "datetime.date(2020, 1, 2)"}


def test_omegaconf_configs_are_stored_resolved_and_restored_as_omegaconf():
    omegaconf = pytest.importorskip("omegaconf")
    cfg = omegaconf.OmegaConf.create({"lr": 0.1, "start": "${lr}", "sizes": [1, 2], "broken": "${nowhere}"})
    encoded = encode_hparams({"cfg": cfg, "sizes": cfg.sizes})
    assert encoded == {"cfg": {"__volt__": "omegaconf",
                               "items": {"lr": 0.1, "start": "${lr}", "sizes": [1, 2], "broken": "${nowhere}"}},
                       "sizes": {"__volt__": "omegaconf", "items": [1, 2]}}
    del cfg.broken
    encoded = encode_hparams({"cfg": cfg})
    assert encoded["cfg"]["items"]["start"] == 0.1  # resolved when every interpolation resolves
    decoded = decode_hparams(encoded)
    assert isinstance(decoded["cfg"], omegaconf.DictConfig) and decoded["cfg"] == {"lr": 0.1, "start": 0.1,
                                                                                  "sizes": [1, 2]}


# ---------------------------------------------------------------------------------------------------------------
# atomic writes


def _failing_save(exception):
    def save(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 half of a checkpoint")
        raise exception

    return save


@pytest.mark.parametrize("exception", [OSError(28, "No space left on device"), KeyboardInterrupt()])
def test_failed_save_keeps_the_old_file_and_leaves_no_temporary_file(tmp_path, monkeypatch, exception):
    path = tmp_path / "last.ckpt"
    save_checkpoint({"step": 1, "w": torch.ones(3)}, path)
    monkeypatch.setattr(torch, "save", _failing_save(exception))
    with pytest.raises(type(exception)):
        save_checkpoint({"step": 2, "w": torch.zeros(3)}, path)
    monkeypatch.undo()
    assert os.listdir(tmp_path) == ["last.ckpt"]
    assert load_checkpoint(path)["step"] == 1


_FULL_DISK_FIT = """
import sys, torch, volt
from helpers import BoringModel
from volt.callbacks import ModelCheckpoint

class Big(BoringModel):  # a ~80 KB checkpoint: one fits on the 128 KB disk, a second copy beside it does not
    def __init__(self):
        super().__init__()
        self.register_buffer("ballast", torch.zeros(10_000))

trainer = volt.Trainer(default_root_dir=sys.argv[1], max_epochs=3, logger=False, enable_progress_bar=False,
                       enable_model_summary=False, limit_val_batches=0,
                       callbacks=[ModelCheckpoint(dirpath=sys.argv[1], filename="model", save_top_k=-1,
                                                  enable_version_counter=False)])  # overwritten each epoch
try:
    trainer.fit(Big())
except OSError as error:
    print("ERRNO", error.errno)
    print("MESSAGE", error)
"""


@pytest.mark.skipif(sys.platform != "linux", reason="a small private tmpfs needs Linux namespaces")
def test_full_disk_during_a_save_names_the_file_and_keeps_the_previous_checkpoint(tmp_path):
    """A real full disk (a 128 KB tmpfs in a private mount namespace): the second save of model.ckpt fails with one
    message naming the file and the full disk, instead of torch's "[enforce fail at inline_container.cc]", and the
    model.ckpt of the epoch before is intact."""
    disk = tmp_path / "disk"
    disk.mkdir()
    script = tmp_path / "fit.py"
    script.write_text(_FULL_DISK_FIT)
    tests_dir = os.path.dirname(os.path.abspath(__file__))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([tests_dir, os.environ.get("PYTHONPATH", "")])}
    shell = (f'mount -t tmpfs -o size=128k tmpfs "{disk}" || exit 77; "{sys.executable}" "{script}" "{disk}"; '
             f'ls -A "{disk}"; cp "{disk}/model.ckpt" "{tmp_path}/kept.ckpt"')
    try:
        done = subprocess.run(["unshare", "-rm", "sh", "-c", shell], capture_output=True, text=True, env=env,
                              timeout=120)
    except FileNotFoundError:
        pytest.skip("unshare is not installed")
    if done.returncode == 77 or "unshare:" in done.stderr:
        pytest.skip(f"cannot mount a private tmpfs here: {done.stderr.strip()[-200:]}")
    assert "ERRNO 28" in done.stdout, done.stdout + done.stderr
    message = done.stdout.split("MESSAGE ", 1)[1]
    assert message.startswith(f"[Errno 28] No space left on device: the checkpoint {disk}/model.ckpt could not be "
                              "written (")
    assert "The file that was at that path before, if any, is unchanged." in message
    assert "inline_container" not in message
    assert done.stdout.splitlines()[-1] == "model.ckpt", done.stdout  # no temporary file left beside it
    kept = torch.load(tmp_path / "kept.ckpt", weights_only=True)  # the epoch-0 checkpoint, whole
    assert (kept["epoch"], kept["global_step"]) == (0, 4)


def test_save_writes_to_a_hidden_temporary_file_in_the_same_folder(tmp_path, monkeypatch):
    real_save, written_to = torch.save, []

    def recording_save(obj, f, *args, **kwargs):
        written_to.append(f.name)
        real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", recording_save)
    save_checkpoint({"a": 1}, tmp_path / "epoch=1.ckpt")
    folder, name = os.path.split(written_to[0])
    assert folder == str(tmp_path)
    assert name.startswith(".epoch=1.ckpt.tmp-") and not name.endswith(".ckpt")


def _save_until_killed(path, weights):
    """Body of the child process: keep overwriting one checkpoint, continuing from the step it holds."""
    step = load_checkpoint(path)["step"] if os.path.exists(path) else 0
    while True:
        step += 1
        save_checkpoint({"step": step, "weights": weights}, path)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork to start the writer quickly")
@pytest.mark.timeout(60)
def test_sigkill_at_random_moments_never_leaves_a_broken_checkpoint(tmp_path):
    path = tmp_path / "model.ckpt"
    weights = torch.randn(1_250_000)  # 5 MB; made here because the forked child must not start torch threads
    context, rng = multiprocessing.get_context("fork"), random.Random(0)
    last_step, kills_mid_write = 0, 0
    for _ in range(20):
        writer = context.Process(target=_save_until_killed, args=(str(path), weights))
        writer.start()
        time.sleep(rng.uniform(0.02, 0.25))
        writer.kill()
        writer.join()
        leftovers = [name for name in os.listdir(tmp_path) if name != "model.ckpt"]
        assert not [name for name in leftovers if name.endswith(".ckpt")]
        kills_mid_write += bool(leftovers)
        for name in leftovers:
            os.remove(tmp_path / name)
        if path.exists():
            checkpoint = torch.load(path, weights_only=True)
            assert torch.equal(checkpoint["weights"], weights)
            assert checkpoint["step"] >= last_step  # never goes back to an older file
            last_step = checkpoint["step"]
    assert last_step > 20 and kills_mid_write > 0  # the kills really landed while files were being written


# ---------------------------------------------------------------------------------------------------------------
# safe loading


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"Checkpoint file not found: .*nope\.ckpt"):
        load_checkpoint(tmp_path / "nope.ckpt")
    with pytest.raises(IsADirectoryError, match="is a folder"):
        load_checkpoint(tmp_path)
    with pytest.raises(ValueError, match="does not point to a valid checkpoint"):  # Lightning's error for a folder
        load_checkpoint(tmp_path)


def _damage(data: bytes, how: str) -> bytes:
    if how == "empty":
        return b""
    if how == "garbage":
        return random.Random(0).randbytes(4000)
    if how == "text":
        return b"version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 12345\n"
    if how == "broken pickle":
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            member = next(info for info in archive.infolist() if info.filename.endswith("data.pkl"))
        name_length, extra_length = struct.unpack("<HH", data[member.header_offset + 26: member.header_offset + 30])
        at = member.header_offset + 30 + name_length + extra_length  # the pickle's first opcode
        return data[:at] + bytes([data[at] ^ 0xFF]) + data[at + 1:]
    return data[: int(len(data) * float(how))]  # truncated to a fraction


@pytest.mark.parametrize("how", ["empty", "garbage", "text", "broken pickle", "0.0005", "0.1", "0.5", "0.99"])
def test_damaged_file_raises_checkpoint_error_naming_the_file(tmp_path, how):
    path = tmp_path / "epoch=1.ckpt"
    save_checkpoint(_training_state(), path)
    path.write_bytes(_damage(path.read_bytes(), how))
    with pytest.raises(CheckpointError, match=r"epoch=1\.ckpt is damaged \(truncated or corrupt.*"
                                              r"Resume from an earlier checkpoint") as error:
        load_checkpoint(path)
    assert error.value.__cause__ is not None  # torch's own error stays attached for debugging


def test_flipped_bytes_anywhere_are_reported_as_damage(tmp_path):
    path = tmp_path / "a.ckpt"
    save_checkpoint(_training_state(), path)
    original, rng, reported = path.read_bytes(), random.Random(1), 0
    for _ in range(25):
        position = rng.randrange(len(original))
        path.write_bytes(original[:position] + bytes([original[position] ^ 0x5A]) + original[position + 1:])
        try:
            load_checkpoint(path)  # a flip inside tensor data is not seen: checksums are checked only on failure
        except CheckpointError as err:
            assert "is damaged" in str(err)  # never "refused", never torch's raw error
            reported += 1
    assert reported > 0


class _Payload:
    """Unpickling this runs `os.system("touch <marker>")`."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch '{self.marker}'",)


@pytest.mark.skipif(os.name == "nt", reason="the payload uses the POSIX touch command")
@pytest.mark.filterwarnings("ignore:Detected pickle protocol 5")
@pytest.mark.parametrize("writer", ["torch.save", "pickle protocol 2", "pickle protocol 5"])
def test_pickle_that_runs_code_is_refused_and_nothing_runs(tmp_path, writer):
    marker, path = tmp_path / "pwned", tmp_path / "model.ckpt"
    hostile = {"state_dict": {"w": torch.ones(2)}, "hyper_parameters": {"x": _Payload(marker)}}
    if writer == "torch.save":
        torch.save(hostile, path)
    else:
        path.write_bytes(pickle.dumps(hostile, protocol=int(writer[-1])))

    refusal = (r"Refused to load .*model\.ckpt: it references .*(posix|nt)\.system.*"
               r"Nothing in the file was executed.*weights_only=False only if you trust")
    with pytest.raises(CheckpointError, match=refusal):
        load_checkpoint(path)
    assert not marker.exists()

    if writer == "torch.save":  # the payload is real: an unsafe load does run it
        load_checkpoint(path, weights_only=False)
        assert marker.exists()


def test_enum_pickled_by_another_tool_is_refused_but_loads_when_trusted(tmp_path):
    path = tmp_path / "foreign.ckpt"
    torch.save({"hyper_parameters": {"color": Color.RED}}, path)
    with pytest.raises(CheckpointError, match=rf"references .*{__name__}\.Color"):
        load_checkpoint(path)
    assert load_checkpoint(path, weights_only=False)["hyper_parameters"]["color"] is Color.RED


def test_lightning_checkpoint_with_paths_namespace_and_attribute_dict_loads_safely(tmp_path):
    fabric_data = pytest.importorskip("lightning_fabric.utilities.data")
    path = tmp_path / "lightning.ckpt"
    hparams = fabric_data.AttributeDict(lr=0.1, root=pathlib.Path("/data"), pure=pathlib.PureWindowsPath("C:/x"))
    torch.save({"hyper_parameters": hparams, "args": argparse.Namespace(seed=1), "state_dict": {}}, path)

    loaded = load_checkpoint(path)
    assert loaded["hyper_parameters"] == {"lr": 0.1, "root": pathlib.Path("/data"),
                                          "pure": pathlib.PureWindowsPath("C:/x")}
    assert type(loaded["hyper_parameters"]) is dict
    assert loaded["args"] == argparse.Namespace(seed=1)


# ---------------------------------------------------------------------------------------------------------------
# links, remote storage, helpers


def test_atomic_symlink_points_last_at_the_newest_checkpoint(tmp_path):
    first, second, last = tmp_path / "epoch=0.ckpt", tmp_path / "epoch=1.ckpt", tmp_path / "last.ckpt"
    save_checkpoint({"epoch": 0}, first)
    save_checkpoint({"epoch": 1}, second)
    atomic_symlink(first, last)
    atomic_symlink(second, last)
    assert os.readlink(last) == "epoch=1.ckpt"  # relative: the folder can be moved
    assert load_checkpoint(last)["epoch"] == 1
    remove_checkpoint(last)
    assert checkpoint_exists(second) and not os.path.lexists(last)
    assert sorted(os.listdir(tmp_path)) == ["epoch=0.ckpt", "epoch=1.ckpt"]


def test_atomic_symlink_copies_where_links_are_not_supported(tmp_path, monkeypatch):
    def no_symlinks(*args, **kwargs):
        raise OSError("symbolic links are not supported here")

    monkeypatch.setattr(os, "symlink", no_symlinks)
    save_checkpoint({"epoch": 4}, tmp_path / "epoch=4.ckpt")
    atomic_symlink(tmp_path / "epoch=4.ckpt", tmp_path / "last.ckpt")
    assert not os.path.islink(tmp_path / "last.ckpt")
    assert load_checkpoint(tmp_path / "last.ckpt")["epoch"] == 4
    assert sorted(os.listdir(tmp_path)) == ["epoch=4.ckpt", "last.ckpt"]


@pytest.fixture
def memory_root():
    fsspec = pytest.importorskip("fsspec")
    root = f"memory://volt-test-{secrets.token_hex(4)}"
    yield root
    fs = fsspec.filesystem("memory")
    if fs.exists(root):
        fs.rm(root, recursive=True)


def test_remote_round_trip_through_fsspec(memory_root):
    import fsspec

    path = f"{memory_root}/run/epoch=0.ckpt"
    assert is_remote(path) and not is_remote("/tmp/a.ckpt") and not is_remote("file:///tmp/a.ckpt")
    checkpoint = _training_state()
    save_checkpoint(checkpoint, path)
    save_checkpoint(checkpoint, path)  # overwrite
    _assert_equal(load_checkpoint(path), checkpoint)
    atomic_symlink(path, f"{memory_root}/run/last.ckpt")
    assert load_checkpoint(f"{memory_root}/run/last.ckpt")["global_step"] == 120

    fs = fsspec.filesystem("memory")
    assert sorted(p.rsplit("/", 1)[1] for p in fs.ls(f"{memory_root}/run", detail=False)) == ["epoch=0.ckpt",
                                                                                               "last.ckpt"]
    remove_checkpoint(path)
    remove_checkpoint(path)  # already gone: not an error
    assert not checkpoint_exists(path)
    with pytest.raises(FileNotFoundError, match="epoch=0.ckpt"):
        load_checkpoint(path)


def test_failed_remote_save_keeps_the_old_file(memory_root, monkeypatch):
    import fsspec

    path = f"{memory_root}/a.ckpt"
    save_checkpoint({"step": 1}, path)
    monkeypatch.setattr(torch, "save", _failing_save(OSError("connection reset")))
    with pytest.raises(OSError, match="connection reset"):
        save_checkpoint({"step": 2}, path)
    monkeypatch.undo()
    assert load_checkpoint(path) == {"step": 1}
    assert len(fsspec.filesystem("memory").ls(memory_root)) == 1


def test_damaged_remote_file_is_reported(memory_root):
    import fsspec

    path = f"{memory_root}/a.ckpt"
    save_checkpoint(_training_state(), path)
    fs = fsspec.filesystem("memory")
    data = fs.cat_file(path)
    fs.pipe_file(path, data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"a\.ckpt is damaged"):
        load_checkpoint(path)


def test_local_checkpoints_never_import_fsspec(tmp_path):
    path = str(tmp_path / "a.ckpt")
    code = ("import sys; from volt.checkpoint import save_checkpoint, load_checkpoint; "
            f"save_checkpoint({{'a': 1}}, {path!r}); load_checkpoint({path!r}); "
            "assert 'fsspec' not in sys.modules, 'fsspec imported'")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr


# ---------------------------------------------------------------------------------------------------------------
# end to end through the Trainer


class _TinyModel(volt.LightningModule):
    def __init__(self, root=pathlib.Path("data"), color=Color.RED, dims=(4, 2), optim=OptimConfig(),
                 args=argparse.Namespace(seed=1)):
        super().__init__()
        self.save_hyperparameters()
        self.layer = torch.nn.Linear(*dims)

    def training_step(self, batch, batch_idx):
        return self.layer(batch[0]).pow(2).mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.hparams.optim.lr)


def test_trainer_checkpoints_load_safely_and_restore_hyperparameters(tmp_path):
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(8, 4)), batch_size=4)
    model = _TinyModel(root=tmp_path / "data", color=Color.GREEN, optim=OptimConfig(lr=0.3))
    trainer = volt.Trainer(max_epochs=1, default_root_dir=tmp_path, logger=False, enable_progress_bar=False,
                           enable_model_summary=False)
    trainer.fit(model, data)
    (path,) = (tmp_path / "checkpoints").glob("*.ckpt")

    assert torch.load(path, weights_only=True)["global_step"] == 2
    restored = _TinyModel.load_from_checkpoint(path)
    assert restored.hparams.root == tmp_path / "data" and restored.hparams.color is Color.GREEN
    assert restored.hparams.optim == OptimConfig(lr=0.3) and restored.hparams.args == argparse.Namespace(seed=1)
    assert torch.equal(restored.layer.weight, model.layer.weight)
