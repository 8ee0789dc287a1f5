"""Loaded at startup by the Python processes that a `volt run` program starts (`volt run` puts this folder on
PYTHONPATH; see volt/dropin/run.py): Lightning's module names resolve to volt in them too.

volt itself is imported only when the process first imports a Lightning name, so a child that never does (a
DataLoader worker, an unrelated script) pays nothing. The `sitecustomize` this file shadows, if any, still runs.
"""
import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
_ROOTS = ("lightning", "pytorch_lightning", "lightning_fabric")


class _InstallVoltOnFirstLightningImport:
    def find_spec(self, fullname, path=None, target=None):
        if fullname.partition(".")[0] not in _ROOTS:
            return None
        sys.meta_path.remove(self)
        import volt.dropin

        volt.dropin.install()
        return volt.dropin.LightningAliases().find_spec(fullname, path, target)


def _run_shadowed_sitecustomize() -> None:
    from importlib.machinery import PathFinder
    from importlib.util import module_from_spec

    others = [entry for entry in sys.path if os.path.abspath(entry or os.curdir) != _HERE]
    spec = PathFinder.find_spec("sitecustomize", others)
    if spec is not None and spec.loader is not None:
        spec.loader.exec_module(module_from_spec(spec))


if os.environ.get("VOLT_DROPIN") == "1":
    sys.meta_path.insert(0, _InstallVoltOnFirstLightningImport())
sys.path[:] = [entry for entry in sys.path if os.path.abspath(entry or os.curdir) != _HERE]
_run_shadowed_sitecustomize()
