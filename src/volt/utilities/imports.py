"""Which optional packages are installed, as the flags Lightning programs test (`if _TORCHVISION_AVAILABLE: ...`).

Each flag is a `RequirementCache`: it checks the installed distribution (never imports the package) the first time
it is used, so importing this module costs nothing.
"""
import importlib
import platform
import sys
from types import ModuleType
from typing import Callable, Optional


class RequirementCache:
    """Truthy when `requirement` (e.g. "torchvision" or "rich>=10.2.2") is installed; `str()` says why not.

    `module` names the import to look for when it differs from the distribution's name."""

    def __init__(self, requirement: str, module: Optional[str] = None) -> None:
        self.requirement = requirement
        self.module = module
        self._available: Optional[bool] = None
        self._message = ""

    def _check(self) -> None:
        import importlib.metadata
        import importlib.util

        from packaging.requirements import Requirement

        req = Requirement(self.requirement)
        try:
            version = importlib.metadata.version(req.name)
        except importlib.metadata.PackageNotFoundError:
            found = importlib.util.find_spec(self.module or req.name.replace("-", "_")) is not None
            self._available = found and not req.specifier
            self._message = f"Requirement {self.requirement!r} met" if self._available else \
                f"Requirement {self.requirement!r} not met: {req.name} is not installed. Try `pip install {req}`."
            return
        self._available = req.specifier.contains(version, prereleases=True)
        self._message = (f"Requirement {self.requirement!r} met" if self._available else
                         f"Requirement {self.requirement!r} not met: found {req.name}=={version}. "
                         f"Try `pip install -U '{req}'`.")

    def __bool__(self) -> bool:
        if self._available is None:
            self._check()
        return bool(self._available)

    def __str__(self) -> str:
        bool(self)
        return self._message

    def __repr__(self) -> str:
        return f"RequirementCache({self.requirement!r})"


def compare_version(package: str, op: Callable, version: str, use_base_version: bool = False) -> bool:
    """`op(installed version of package, version)`, e.g. `compare_version("torch", operator.ge, "2.6")`; False when
    the package is not installed."""
    import importlib.metadata

    from packaging.version import Version

    try:
        installed = Version(importlib.metadata.version(package))
    except importlib.metadata.PackageNotFoundError:
        return False
    if use_base_version:
        installed = Version(installed.base_version)
    return op(installed, Version(version))


def import_isolated(name: str) -> ModuleType:
    """Import `name`, a package a feature loads on first use, leaving the global RNG states as they were.

    Some packages draw random numbers when imported (comet_ml, which tensorboardX imports when installed, draws from
    `random`; so does rich). Imported lazily in the middle of a seeded run, they would shift its random numbers, and
    only in the first run of a process: later runs find the package imported. Already imported: a dict look-up.
    """
    module = sys.modules.get(name)
    if module is None:
        from volt.utilities.seed import isolate_rng

        with isolate_rng():
            module = importlib.import_module(name)
    return module


_IS_WINDOWS = platform.system() == "Windows"
_PYTHON_GREATER_EQUAL_3_10_0 = sys.version_info >= (3, 10)
_PYTHON_GREATER_EQUAL_3_11_0 = sys.version_info >= (3, 11)
_TORCH_GREATER_EQUAL_2_6 = RequirementCache("torch>=2.6.0")
_TORCH_GREATER_EQUAL_2_7 = RequirementCache("torch>=2.7.0")
_TORCH_GREATER_EQUAL_2_8 = RequirementCache("torch>=2.8.0")
_TORCHVISION_AVAILABLE = RequirementCache("torchvision")
_TORCHMETRICS_GREATER_EQUAL_0_8_0 = RequirementCache("torchmetrics>=0.8.0")
_TORCHMETRICS_GREATER_EQUAL_0_9_1 = RequirementCache("torchmetrics>=0.9.1")
_TORCHMETRICS_GREATER_EQUAL_0_11 = RequirementCache("torchmetrics>=0.11.0")
_TORCHMETRICS_GREATER_EQUAL_1_0_0 = RequirementCache("torchmetrics>=1.0.0")
_OMEGACONF_AVAILABLE = RequirementCache("omegaconf")
_RICH_AVAILABLE = RequirementCache("rich>=10.2.2")
_JSONARGPARSE_AVAILABLE = RequirementCache("jsonargparse")
_TENSORBOARD_AVAILABLE = RequirementCache("tensorboard")
_TENSORBOARDX_AVAILABLE = RequirementCache("tensorboardX")

__all__ = ["RequirementCache", "compare_version"]
