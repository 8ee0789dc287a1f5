"""pytest plugin: the test-suite plumbing Lightning's tests/tests_pytorch needs, for running it on volt.

`scripts/lightning_suite/run.py` loads it after `volt.dropin.pytest_plugin`. Lightning's conftest.py and its test
helpers import a few of Lightning's private helpers for housekeeping (closing process groups, restoring signal
handlers, RunIf's skip conditions, version flags). volt does not provide them, and a conftest that fails to import
would stop every test. This plugin supplies stand-ins written for this harness, in two kinds:

- for the conftest only: removed as soon as the conftest is loaded, so a test that imports the same private name
  still fails (and is counted as a test of Lightning's internals);
- for the whole run: `lightning.pytorch.utilities.testing._runif_reasons` (RunIf, which most test files import) and
  the torch/Python version flags the tests read for their skip conditions (and the `flaky` marker of the
  rerun plugin Lightning's CI has; nothing is rerun).

Lightning's test files import private Lightning names at the top (`from lightning.pytorch.loops import _Loop`), so
one such import would stop every test of the file, most of which use only the public API. While pytest imports a
test file, a Lightning name volt does not provide is bound to a `_NotProvided` placeholder instead: the file's tests
run, and a test that uses the name fails with volt's own error (NotProvidedError, or AttributeError for a private
name), which `run.py` counts as a test of Lightning's internals. Processes the tests start (ddp_spawn ranks) load this
module too (see `sitecustomize.py`), with placeholders at every import, since they import test files to unpickle
test functions.

Nothing here changes what volt does, except one guard: a test that makes volt's strategy='ddp' start its other
ranks (by running the command line, here pytest, again) fails with a clear error instead (`_refuse_script_launch`).
Otherwise it only lets Lightning's tests reach volt's public API.
"""
import builtins
import contextlib
import os
import signal
import sys
import types

import pytest
import torch

_CONFTEST_ONLY = {}  # module name -> stand-in module, removed once Lightning's conftest is loaded
_CONFTEST_ATTRIBUTES = []  # (module, name) set for the conftest only


def _stand_in(name: str, **attributes) -> types.ModuleType:
    module = types.ModuleType(name, "stand-in of scripts/lightning_suite for Lightning's test suite")
    module.__dict__.update(attributes)
    return module


def _destroy_process_group() -> None:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def _process_group_exists() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


class _NoChildObserver:
    """No thread is ever one of these: volt has no such observer thread."""


class _Signals:
    @staticmethod
    def _valid_signals():
        return signal.valid_signals()


class _NoXLA:
    @staticmethod
    def is_available() -> bool:
        return False


def _free_port() -> int:
    from volt.distributed.environments import find_free_port

    return find_free_port()


def _version_at_least(requirement: str) -> bool:
    from volt.utilities.imports import RequirementCache

    return bool(RequirementCache(requirement))


def _runif_reasons(*, min_cuda_gpus=0, min_torch=None, max_torch=None, min_python=None, bf16_cuda=False,
                   tpu=False, mps=None, skip_windows=False, standalone=False, deepspeed=False, dynamo=False,
                   rich=False, omegaconf=False, psutil=False, sklearn=False, onnx=False, linux_only=False,
                   onnxscript=False, tensorrt=False):
    """RunIf's conditions (Lightning's keyword names) -> (reasons to skip, marker keywords for its conftest)."""
    import os
    import platform

    from packaging.version import Version

    reasons, markers = [], {}
    if min_cuda_gpus:
        markers["min_cuda_gpus"] = True
        if torch.cuda.device_count() < min_cuda_gpus:
            reasons.append(f"GPUs>={min_cuda_gpus}")
    torch_version = Version(torch.__version__.split("+")[0])
    if min_torch and torch_version < Version(min_torch):
        reasons.append(f"torch>={min_torch}")
    if max_torch and torch_version >= Version(max_torch):
        reasons.append(f"torch<{max_torch}")
    if min_python and sys.version_info[:3] < tuple(int(p) for p in min_python.split(".")):
        reasons.append(f"python>={min_python}")
    if bf16_cuda and not (torch.cuda.is_available() and torch.cuda.is_bf16_supported()):
        reasons.append("CUDA device bf16")
    if tpu:
        markers["tpu"] = True
        reasons.append("TPU")
    mps_available = torch.backends.mps.is_available()
    if mps is True and not mps_available:
        reasons.append("MPS")
    if mps is False and mps_available:
        reasons.append("not MPS")
    if skip_windows and platform.system() == "Windows":
        reasons.append("unimplemented on Windows")
    if linux_only and platform.system() != "Linux":
        reasons.append("only Linux")
    if standalone:
        markers["standalone"] = True
        if os.getenv("PL_RUN_STANDALONE_TESTS", "0") != "1":
            reasons.append("Standalone execution")
    if dynamo and not (torch._dynamo.is_dynamo_supported() if hasattr(torch, "_dynamo") else False):
        reasons.append("torch.dynamo")
    for wanted, requirement in ((deepspeed, "deepspeed"), (rich, "rich>=10.2.2"), (omegaconf, "omegaconf"),
                                (psutil, "psutil"), (sklearn, "scikit-learn"), (onnx, "onnx"),
                                (onnxscript, "onnxscript"), (tensorrt, "torch_tensorrt")):
        if wanted and not _version_at_least(requirement):
            reasons.append(requirement)
    return reasons, markers


def _install_conftest_stand_ins() -> None:
    import volt.accelerators

    _CONFTEST_ONLY.update({
        "lightning.fabric.plugins.environments.lightning": _stand_in(
            "lightning.fabric.plugins.environments.lightning", find_free_network_port=_free_port),
        "lightning.fabric.strategies.launchers.subprocess_script": _stand_in(
            "lightning.fabric.strategies.launchers.subprocess_script", _ChildProcessObserver=_NoChildObserver),
        "lightning.fabric.utilities.distributed": _stand_in(
            "lightning.fabric.utilities.distributed", _destroy_dist_connection=_destroy_process_group,
            _distributed_is_initialized=_process_group_exists),
        "lightning.pytorch.trainer.connectors.signal_connector": _stand_in(
            "lightning.pytorch.trainer.connectors.signal_connector", _SignalConnector=_Signals),
    })
    sys.modules.update(_CONFTEST_ONLY)
    if "XLAAccelerator" not in volt.accelerators.__dict__:
        volt.accelerators.XLAAccelerator = _NoXLA
        _CONFTEST_ATTRIBUTES.append((volt.accelerators, "XLAAccelerator"))


def _install(conftest: bool) -> None:
    import volt.utilities.imports as imports

    if conftest:
        _install_conftest_stand_ins()
    testing = _stand_in("lightning.pytorch.utilities.testing", _runif_reasons=_runif_reasons)
    sys.modules["lightning.pytorch.utilities.testing"] = sys.modules["pytorch_lightning.utilities.testing"] = testing
    flags = {"_TORCH_GREATER_EQUAL_2_2": "torch>=2.2.0", "_TORCH_GREATER_EQUAL_2_3": "torch>=2.3.0",
             "_TORCH_GREATER_EQUAL_2_4": "torch>=2.4.0", "_TORCH_GREATER_EQUAL_2_5": "torch>=2.5.0",
             "_TORCH_EQUAL_2_9": "torch>=2.9.0,<2.10.0"}
    for name, requirement in flags.items():
        if not hasattr(imports, name):
            setattr(imports, name, _version_at_least(requirement))


class _NotProvided:
    """A Lightning name volt does not provide, bound in a test file: using it raises volt's error for the name."""

    def __init__(self, error: Exception) -> None:
        object.__setattr__(self, "_error", error)

    def _raise(self, *args, **kwargs):
        raise self._error

    __call__ = __instancecheck__ = __subclasscheck__ = __getitem__ = __iter__ = _raise

    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        if name == "is_available":  # skip conditions such as `XLAAccelerator.is_available()`: a device volt lacks
            return lambda *args, **kwargs: False
        raise self._error

    def __mro_entries__(self, bases):
        error = self._error

        class NotProvidedBase:
            def __init__(self, *args, **kwargs):
                raise error

        return (NotProvidedBase,)

    def __repr__(self) -> str:
        return f"<not provided by volt: {self._error}>"


class _ModuleView:
    """A module as `from module import names` sees it while a test file is imported: missing names are
    placeholders."""

    def __init__(self, name: str, module=None, error: Exception = None) -> None:
        self._name, self._module, self._error = name, module, error

    def __getattr__(self, attribute: str):
        if self._module is None:
            return _NotProvided(self._error)
        try:
            return getattr(self._module, attribute)
        except AttributeError as error:  # volt's NotProvidedError is an ImportError, caught below
            return _NotProvided(error)
        except ImportError as error:
            return _NotProvided(error)


def _is_lightning_name(name: str) -> bool:
    return name.split(".")[0] in ("lightning", "pytorch_lightning", "lightning_fabric")


def _lenient_import(original):
    def __import__(name, globals=None, locals=None, fromlist=(), level=0):
        if level or not fromlist or not _is_lightning_name(name):
            return original(name, globals, locals, fromlist, level)
        try:
            module = original(name, globals, locals, fromlist, level)
        except ImportError as error:
            if not isinstance(error, _NOT_PROVIDED):
                raise
            return _ModuleView(name, error=error)
        missing = [n for n in fromlist if n != "*" and not _has(module, n)]
        return _ModuleView(name, module) if missing else module

    return __import__


def _has(module, name: str) -> bool:
    try:
        getattr(module, name)
    except (AttributeError, ImportError):
        try:
            __import__(f"{module.__name__}.{name}")
            return True
        except ImportError:
            return False
    return True


@contextlib.contextmanager
def _placeholders_for_missing_names():
    original = builtins.__import__
    builtins.__import__ = _lenient_import(original)
    try:
        yield
    finally:
        builtins.__import__ = original


# A process that a test started (a ddp_spawn rank, a subprocess; see sitecustomize.py): it imports Lightning's test
# files when it unpickles a test's function, so it gets the same stand-ins, and placeholders at every import.
_CHILD = os.environ.get("VOLT_LIGHTNING_SUITE_CHILD") == "1"
if _CHILD:
    import volt.dropin

    volt.dropin.install()  # before the stand-ins: install() refuses to run once a Lightning name is loaded
_install(conftest=not _CHILD)
from volt.dropin import NotProvidedError as _NOT_PROVIDED  # noqa: E402  (after the stand-ins are in place)

if _CHILD:
    builtins.__import__ = _lenient_import(builtins.__import__)
else:
    os.environ["VOLT_LIGHTNING_SUITE_CHILD"] = "1"  # for the processes the tests start


def _refuse_script_launch(self, watchdog):
    """volt's strategy='ddp' starts its other ranks by running the command line again: here, the whole pytest run
    (whose failing copies would stop this process). A test that gets there fails with this error instead; Lightning's
    tests that do so swap or mock Lightning's launcher."""
    raise RuntimeError("strategy='ddp' would start its other ranks by running this pytest command again (Lightning's"
                       " test swaps or mocks the launcher); not done under the suite harness.")


def pytest_configure(config):
    """Lightning's CI has pytest-rerunfailures, whose `flaky` marker some test files use (its pytest settings make
    an unknown marker an error). Registered here; no test is rerun.

    A pytest process that a test started (volt's DDP launcher runs the command line again for its other ranks, where
    Lightning's test mocks the launch) stops at once: it would run the whole directory again and overwrite the run's
    result files. The test that launched it then fails, as it should."""
    if _CHILD:
        pytest.exit("this pytest process was started by a test (a DDP launch re-running the command line); it does"
                    " not run the suite again", returncode=1)
    import volt.distributed.launcher

    volt.distributed.launcher.ScriptLauncher.start = _refuse_script_launch
    config.addinivalue_line("markers", "flaky(reruns): rerun a flaky test (pytest-rerunfailures; not rerun here)")


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    """While a test file is imported, Lightning names volt lacks become placeholders (see the module docstring)."""
    if isinstance(collector, pytest.Module):
        with _placeholders_for_missing_names():
            yield
    else:
        yield


@pytest.hookimpl
def pytest_plugin_registered(plugin, manager):
    """Once Lightning's conftest is loaded, take the conftest-only stand-ins away again."""
    if getattr(plugin, "__file__", "").endswith("tests_pytorch/conftest.py"):
        for name, module in _CONFTEST_ONLY.items():
            if sys.modules.get(name) is module:
                del sys.modules[name]
        for module, name in _CONFTEST_ATTRIBUTES:
            delattr(module, name)
