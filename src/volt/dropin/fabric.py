"""What `import lightning.fabric` and `import lightning_fabric` give under `volt run`. volt has no Fabric; the
helpers Trainer programs import from Fabric's submodules (utilities.rank_zero, seed, cloud_io, apply_func,
accelerators, plugins.environments) are volt's own (see `volt/dropin/paths.py`)."""
import importlib

from volt.dropin import not_provided_attribute
from volt.trainer.checkpointing import LIGHTNING_COMPAT_VERSION as __version__
from volt.utilities.seed import seed_everything

__path__: list = []  # a package: volt.dropin's finder answers for its submodules

_SUBPACKAGES = ("accelerators", "plugins", "utilities")

__all__ = ["seed_everything"]


def __getattr__(name: str):
    if name in _SUBPACKAGES:
        return importlib.import_module(f"lightning_fabric.{name}")
    if name.startswith("__"):
        raise AttributeError(f"module 'lightning.fabric' has no attribute {name!r}")
    raise not_provided_attribute("lightning.fabric", name)
