"""The package's layers point one way: a module imports only from its own layer or from lower ones, and no two
modules import each other, directly or through others (imports inside functions count too).

    5  volt, volt.cli, volt.examples, volt.demos, volt.dropin   entry points, demo models, `volt run`
    4  volt.trainer, volt.plugins               the Trainer, its loops, hook dispatch, checkpoints of a run; plugins
    3  volt.module, volt.datamodule, volt.callbacks,  what users subclass and plug in; the tuner's searches
       volt.tuner, volt.core                    (they reach the Trainer through `trainer.trial_run`)
    2  volt.distributed, volt.strategies, volt.accelerators   strategies, launcher, cluster environments, devices
    1  volt.checkpoint, volt.sharded_checkpoint, volt.loggers, volt.profilers, volt.plot, volt.plugins.io
                                                files: checkpoints (files and folders), logs, profiles, plots
    0  volt.utilities                           helpers with no volt dependency

Inside volt.trainer, trainer.py is the top: nothing else in the package imports it.
"""
import ast
import os

import pytest

import volt

SRC = os.path.dirname(volt.__file__)
LAYERS = [
    ["volt.utilities"],
    ["volt.checkpoint", "volt.sharded_checkpoint", "volt.loggers", "volt.profilers", "volt.plot", "volt.plugins.io"],
    ["volt.distributed", "volt.strategies", "volt.accelerators"],
    ["volt.module", "volt.datamodule", "volt.callbacks", "volt.tuner", "volt.core", "volt.utilities.model_helpers"],
    ["volt.trainer", "volt.plugins"],
    ["volt", "volt.cli", "volt.examples", "volt.__main__", "volt.demos", "volt.dropin"],
]


def _modules():
    """{dotted module name: path} for every file of the package."""
    found = {}
    for folder, _, files in os.walk(SRC):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                dotted = "volt." + os.path.relpath(path, SRC)[:-3].replace(os.sep, ".")
                found[dotted[: -len(".__init__")] if dotted.endswith(".__init__") else dotted] = path
    return found


def _imports(modules):
    """{module: {volt modules it imports anywhere in its file}}."""
    graph = {}
    for module, path in modules.items():
        package = module if path.endswith("__init__.py") else module.rpartition(".")[0]
        targets = set()
        for node in ast.walk(ast.parse(open(path).read())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")
                    base = ".".join(parts[: len(parts) - node.level + 1] + ([node.module] if node.module else []))
                names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
            else:
                continue
            targets |= {name for name in names if name == "volt" or name.startswith("volt.")}
        graph[module] = {target for target in targets if target != module}
    return graph


def _layer(module):
    best = None
    for rank, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if module == prefix or module.startswith(prefix + "."):
                if best is None or len(prefix) > best[1]:
                    best = (rank, len(prefix))
    assert best is not None, f"{module} belongs to no layer: add it to LAYERS"
    return best[0]


MODULES = _modules()
GRAPH = _imports(MODULES)


def test_every_module_has_a_layer():
    for module in MODULES:
        _layer(module)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_upward_import(module):
    upward = sorted(target for target in GRAPH[module] if _layer(target) > _layer(module))
    assert not upward, f"{module} (layer {_layer(module)}) imports higher layers: {upward}"


def test_no_import_cycle():
    state, path = {}, []

    def visit(module):
        state[module] = "open"
        path.append(module)
        for target in sorted(GRAPH.get(module, ())):
            target = target if target in GRAPH else target.rpartition(".")[0]
            if state.get(target) == "open":
                cycle = path[path.index(target):] + [target]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if target in GRAPH and target not in state:
                visit(target)
        path.pop()
        state[module] = "done"

    for module in sorted(GRAPH):
        if module not in state:
            visit(module)


def test_trainer_module_is_the_top_of_its_package():
    importers = sorted(m for m, targets in GRAPH.items() if "volt.trainer.trainer" in targets
                       and m.startswith("volt.trainer"))
    assert importers == ["volt.trainer"] or importers == [], importers
