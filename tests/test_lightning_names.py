"""Every public module of pytorch-lightning 2.6.6 has a volt counterpart holding the same public names, except the
omissions written down, each with its reason, in volt/dropin/paths.py; and that list holds nothing volt now has.

Lightning's public names are read from its source files (never imported): a module's `__all__` where it defines
one; otherwise the public names it defines (classes, functions, constants), and, for a package or a module that only
re-exports, the names it imports from Lightning.
"""
import ast
import importlib
import importlib.util
import os

import pytest

from volt.dropin import NotProvidedError, volt_module_name
from volt.dropin.paths import FABRIC_PROVIDED, MISSING_MODULES, MISSING_NAMES, missing_module_reason

_LIGHTNING_PACKAGES = ("pytorch_lightning", "lightning_fabric", "lightning", "lightning_utilities")


def _package_dir(package: str) -> str:
    spec = importlib.util.find_spec(package)
    if spec is None:
        pytest.skip(f"{package} is not installed (it is in the test extra)")
    return spec.submodule_search_locations[0]


def _modules(package: str):
    """{relative module path: source file} for every public module of an installed package, without importing it."""
    root = _package_dir(package)
    found = {}
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith(("_", ".")))
        relative_folder = os.path.relpath(folder, root).replace(os.sep, ".")
        for file in files:
            if not file.endswith(".py") or (file.startswith("_") and file != "__init__.py"):
                continue
            parts = [] if relative_folder == "." else relative_folder.split(".")
            if file != "__init__.py":
                parts.append(file[:-3])
            found[".".join(parts)] = os.path.join(folder, file)
    return found


def public_names(source_file: str):
    """The names a Lightning module offers, read from its source (see the module docstring)."""
    tree = ast.parse(open(source_file, encoding="utf-8").read())
    defined, imported, defines_code = [], [], False

    def visit(body):
        nonlocal defines_code
        for node in body:
            if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets):
                raise _DunderAll(ast.literal_eval(node.value))
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                defines_code = True
                defined.append(node.name)
            elif isinstance(node, ast.Assign) and not _is_type_variable(node.value):
                defined.extend(t.id for t in node.targets if isinstance(t, ast.Name))
            elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                defined.append(node.target.id)
            elif isinstance(node, ast.ImportFrom) and (node.level > 0 or (node.module or "").startswith(_LIGHTNING_PACKAGES)):
                imported.extend(alias.asname or alias.name for alias in node.names)
            elif isinstance(node, ast.If) and not (isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"):
                visit(node.body)
                visit(node.orelse)
            elif isinstance(node, ast.Try):
                visit(node.body)

    try:
        visit(tree.body)
    except _DunderAll as declared:
        return sorted(declared.names)
    is_package = os.path.basename(source_file) == "__init__.py"
    names = defined + (imported if is_package or not defines_code else [])
    return sorted({name for name in names if not name.startswith("_") and name not in ("log", "*")})


def _is_type_variable(value: ast.AST) -> bool:
    return isinstance(value, ast.Call) and getattr(value.func, "id", getattr(value.func, "attr", "")) == "TypeVar"


class _DunderAll(Exception):
    def __init__(self, names):
        super().__init__()
        self.names = names


def _volt_counterpart(kind: str, relative: str):
    try:
        return importlib.import_module(volt_module_name(kind, relative))
    except NotProvidedError:
        return None


def _missing(kind: str, modules):
    """[(Lightning module, name)] that volt lacks and no omission covers; and what the omissions cover."""
    uncovered, covered = [], []
    for relative, source in sorted(modules.items()):
        volt_module = _volt_counterpart(kind, relative)
        if volt_module is None:
            if kind == "pytorch" and not missing_module_reason(relative):
                uncovered.append((relative, "(the whole module)"))
            continue
        for name in public_names(source):
            if _has(volt_module, name):
                continue
            (covered if name in MISSING_NAMES else uncovered).append((relative, name))
    return uncovered, covered


def _has(module, name: str) -> bool:
    try:
        return hasattr(module, name)
    except NotProvidedError:  # volt's stand-in for a Lightning package says why it lacks the name
        return False


@pytest.fixture(scope="module")
def lightning_modules():
    return _modules("pytorch_lightning")


def test_every_public_lightning_name_exists_in_volt_or_is_a_written_omission(lightning_modules):
    uncovered, _ = _missing("pytorch", lightning_modules)
    assert not uncovered, (
        "volt lacks these public Lightning names, and volt/dropin/paths.py does not say why:\n"
        + "\n".join(f"  lightning.pytorch.{module}: {name}" for module, name in uncovered)
    )


def test_the_omission_lists_hold_only_what_volt_lacks(lightning_modules):
    """A module or name volt now provides must leave the lists (else its error message would be wrong)."""
    unknown = sorted(relative for relative in MISSING_MODULES if relative not in lightning_modules)
    assert not unknown, f"Not Lightning modules; remove them from MISSING_MODULES: {unknown}"
    provided = sorted(relative for relative in MISSING_MODULES if _volt_counterpart("pytorch", relative) is not None)
    assert not provided, f"volt now has these Lightning modules; remove them from MISSING_MODULES: {provided}"
    _, covered = _missing("pytorch", lightning_modules)
    fabric_modules = {relative: source for relative, source in _modules("lightning_fabric").items()
                      if relative in FABRIC_PROVIDED or relative == ""}
    _, fabric_covered = _missing("fabric", fabric_modules)
    still_missing = {name for _, name in covered + fabric_covered}
    stale = sorted(set(MISSING_NAMES) - still_missing)
    assert not stale, f"No Lightning module that volt provides lacks these; remove them from MISSING_NAMES: {stale}"


def test_fabric_helpers_that_trainer_programs_import_exist_in_volt():
    modules = {relative: source for relative, source in _modules("lightning_fabric").items()
               if relative in FABRIC_PROVIDED}
    assert set(modules) == set(FABRIC_PROVIDED), "FABRIC_PROVIDED names a module Lightning's Fabric does not have"
    uncovered, _ = _missing("fabric", modules)
    assert not uncovered, (
        "volt lacks these names of the Fabric modules it stands in for, and volt/dropin/paths.py does not say why:\n"
        + "\n".join(f"  lightning.fabric.{module}: {name}" for module, name in uncovered)
    )


def test_names_are_read_from_lightning_source(lightning_modules):
    """The reader itself: a module with __all__, one that defines, and one that only re-exports."""
    assert public_names(lightning_modules["callbacks"]) == sorted(importlib.import_module(
        "pytorch_lightning.callbacks").__all__)
    assert public_names(lightning_modules["trainer.states"]) == [
        "RunningStage", "TrainerFn", "TrainerState", "TrainerStatus"]
    assert "rank_zero_only" in public_names(lightning_modules["utilities.rank_zero"])
    assert "STEP_OUTPUT" in public_names(lightning_modules["utilities.types"])
