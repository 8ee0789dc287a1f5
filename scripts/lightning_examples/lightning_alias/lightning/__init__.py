"""`lightning` for the Lightning side of the examples comparison (put on PYTHONPATH for that run only).

Lightning's examples import the unified package (`import lightning as L`, `lightning.pytorch`, `lightning.fabric`);
the oracle installed with volt's test extra is the `pytorch-lightning` distribution. Here each `lightning.pytorch.X`
and `lightning.fabric.X` is that distribution's own module object (`pytorch_lightning.X`, `lightning_fabric.X`)
under a second name, so the examples run on pytorch-lightning 2.6.6 itself, unchanged.
"""
import importlib
import importlib.abc
import importlib.util
import sys

_ALIASES = {"lightning.pytorch": "pytorch_lightning", "lightning.fabric": "lightning_fabric"}


class _Alias(importlib.abc.Loader):
    """Loads `lightning.<...>` as the already importable real module, keeping that module's own spec."""

    def __init__(self, real_name: str) -> None:
        self.real_name = real_name

    def create_module(self, spec):
        return importlib.import_module(self.real_name)

    def exec_module(self, module) -> None:
        module.__spec__ = importlib.util.find_spec(self.real_name)  # the import system set the alias's spec


class _AliasFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):
        for alias, real in _ALIASES.items():
            if fullname == alias or fullname.startswith(alias + "."):
                real_name = real + fullname[len(alias):]
                real_spec = importlib.util.find_spec(real_name)
                if real_spec is None:
                    return None
                return importlib.util.spec_from_loader(
                    fullname, _Alias(real_name), is_package=real_spec.submodule_search_locations is not None)
        return None


sys.meta_path.insert(0, _AliasFinder())

import pytorch_lightning as _pytorch  # noqa: E402

from lightning import fabric, pytorch  # noqa: E402,F401  (aliases of the two distributions' roots)

__version__ = _pytorch.__version__
# the names `import lightning as L` gives: the Trainer API and Fabric
from pytorch_lightning import *  # noqa: E402,F401,F403
from lightning_fabric import Fabric  # noqa: E402,F401
