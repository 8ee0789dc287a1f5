"""Run unmodified Lightning programs on volt: `lightning`, `lightning.pytorch`, `pytorch_lightning`,
`lightning.fabric` and `lightning_fabric` (and their submodules) resolve to volt's modules.

    volt run train.py --max_epochs 3         # a script, as `python train.py --max_epochs 3`
    volt run -m mypackage.train               # a module, as `python -m mypackage.train`

    import volt.dropin; volt.dropin.install()  # in a notebook, before the first Lightning import
    pytest -p volt.dropin.pytest_plugin        # a test suite

`install()` puts a finder first on `sys.meta_path` that answers Lightning module names with the volt module objects
themselves (so `isinstance` holds either way, and class paths such as Hydra's `_target_:
lightning.pytorch.Trainer` resolve to volt). Only the process that calls it is affected: plain `python train.py`
still uses Lightning when it is installed. `volt run` also arranges that the Python processes the program starts
(multiprocessing spawn and forkserver children, DataLoader workers, subprocesses) install it at startup:
see `volt/dropin/run.py`.

A Lightning module or name volt does not provide raises an ImportError that names it, says why, and what to use
instead (`volt/dropin/paths.py`).
"""
import importlib
import importlib.util
import sys
from typing import Optional

from volt.dropin.paths import FABRIC_PROVIDED, MISSING_NAMES, PYTORCH_MOVED, missing_module_reason

# Lightning's package roots (most specific first) -> which package they are
_ROOTS = {"lightning.pytorch": "pytorch", "lightning.fabric": "fabric", "pytorch_lightning": "pytorch",
          "lightning_fabric": "fabric", "lightning": "lightning"}
_CANONICAL = {"pytorch": "lightning.pytorch", "fabric": "lightning.fabric", "lightning": "lightning"}
_STAND_INS = {"pytorch": "volt.dropin.pytorch", "fabric": "volt.dropin.fabric", "lightning": "volt.dropin.lightning"}


class NotProvidedError(ImportError):
    """A Lightning module or name that volt does not provide. An ImportError, so `except ImportError` fallbacks
    in the program work, and so that `from lightning.pytorch.x import Name` shows this message."""


def split_name(fullname: str):
    """("pytorch" | "fabric" | "lightning", the path below that root) for a Lightning module name, else None."""
    for root, kind in _ROOTS.items():
        if fullname == root or fullname.startswith(root + "."):
            return kind, fullname[len(root) + 1:]
    return None


def volt_module_name(kind: str, relative: str) -> str:
    """The volt module for Lightning's `<kind root>.<relative>`; raises NotProvidedError where volt has none."""
    if not relative:
        return _STAND_INS[kind]
    lightning_name = f"{_CANONICAL[kind]}.{relative}"
    if kind == "pytorch":
        volt_name = PYTORCH_MOVED.get(relative, f"volt.{relative}")
        if _exists(volt_name):
            return volt_name
        reason = missing_module_reason(relative) or f"volt has no module {volt_name}"
    elif kind == "fabric":
        if relative in FABRIC_PROVIDED:
            return FABRIC_PROVIDED[relative]
        reason = "Fabric is not part of volt; volt provides the helpers Trainer programs import from it " \
                 "(utilities.rank_zero, seed, cloud_io, apply_func, accelerators, plugins.environments)"
    else:
        reason = "volt provides lightning.pytorch (and Fabric's helpers), not the rest of the `lightning` package"
    raise NotProvidedError(f"volt does not provide {lightning_name}: {reason}.", name=lightning_name)


def _exists(module_name: str) -> bool:
    try:
        return importlib.util.find_spec(module_name) is not None
    except ModuleNotFoundError:  # a parent package is missing
        return False


def not_provided_attribute(module_name: str, name: str) -> Exception:
    """The error for a missing attribute of a module reached through a Lightning name."""
    reason = MISSING_NAMES.get(name)
    if reason is None:
        return AttributeError(f"module {module_name!r} has no attribute {name!r} (volt does not provide it).")
    return NotProvidedError(f"volt does not provide {module_name}.{name}: {reason}.", name=f"{module_name}.{name}")


class _AliasLoader:
    """Loads a Lightning module name as the volt module that stands for it (the same module object)."""

    def __init__(self, volt_name: str, lightning_name: str) -> None:
        self.volt_name = volt_name
        self.lightning_name = lightning_name
        self.created = False

    def create_module(self, spec):
        module = importlib.import_module(self.volt_name)
        _report_missing_names(module, self.lightning_name)
        self.created = True
        return module

    def exec_module(self, module) -> None:
        """After `create_module`, nothing to run: the volt module was imported (and run) under its own name. Called
        alone, this is `importlib.reload(lightning.pytorch)`: run the volt module's code again, as a reload does (to
        read environment variables such as POSSIBLE_USER_WARNINGS again)."""
        if self.created:
            self.created = False
            return
        parent = self.volt_name.rpartition(".")[0]
        search_path = sys.modules[parent].__path__ if parent else None
        loader = importlib.machinery.PathFinder.find_spec(self.volt_name, search_path).loader
        exec(loader.get_code(self.volt_name), module.__dict__)


class LightningAliases:
    """The `sys.meta_path` finder that maps Lightning module names to volt modules (installed by `install`)."""

    def find_spec(self, fullname: str, path=None, target=None):
        parts = split_name(fullname)
        if parts is None:
            return None
        from importlib.machinery import ModuleSpec

        kind, relative = parts
        lightning_name = f"{_CANONICAL[kind]}.{relative}".rstrip(".")
        volt_name = volt_module_name(kind, relative)
        return ModuleSpec(fullname, _AliasLoader(volt_name, lightning_name),
                          is_package=importlib.util.find_spec(volt_name).submodule_search_locations is not None)


def _report_missing_names(module, lightning_name: str) -> None:
    """Make a missing attribute of `module` raise the error that names the Lightning name (once per module)."""
    original = module.__dict__.get("__getattr__")
    if getattr(original, "volt_dropin", False):
        return

    def __getattr__(name: str):
        if original is not None:
            try:
                return original(name)
            except AttributeError:
                pass
        if name.startswith("__"):
            raise AttributeError(f"module {module.__name__!r} has no attribute {name!r}")
        raise not_provided_attribute(lightning_name, name)

    __getattr__.volt_dropin = True
    module.__getattr__ = __getattr__


_FINDER: Optional[LightningAliases] = None


def install() -> None:
    """Make Lightning's module names resolve to volt in this process. Call it before anything imports Lightning;
    if Lightning was imported already, this raises (the program would mix the two)."""
    global _FINDER
    if _FINDER is not None:
        return
    loaded = sorted({name.partition(".")[0] for name in sys.modules if split_name(name) is not None
                     and not getattr(sys.modules[name], "__name__", "").startswith("volt")})
    if loaded:
        raise RuntimeError(
            f"volt.dropin.install(): Lightning is already imported in this process ({', '.join(loaded)}). "
            "Call it before the first Lightning import (restart the notebook kernel), or use `volt run`."
        )
    _FINDER = LightningAliases()
    sys.meta_path.insert(0, _FINDER)


def installed() -> bool:
    """Whether Lightning names resolve to volt in this process."""
    return _FINDER is not None
