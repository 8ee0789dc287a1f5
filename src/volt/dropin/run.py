"""`volt run`: run an unmodified Lightning program on volt.

    volt run train.py --lr 0.1          # as `python train.py --lr 0.1`
    volt run -m mypackage.train --lr 0.1  # as `python -m mypackage.train --lr 0.1`
    python -m volt run train.py          # the same

The program runs in this process as `__main__`, with the `sys.argv`, `sys.path[0]`, `__file__` and `__spec__` that
`python` would give it, after `volt.dropin.install()` has made Lightning's module names resolve to volt. Its exit
status is the program's (an uncaught exception: 1, with the traceback from the program's own code on).

Processes the program starts run on volt as well. `volt run` sets `VOLT_DROPIN=1` and puts `volt/dropin/boot` first
on `PYTHONPATH`, so every Python process started from here (multiprocessing spawn and forkserver children,
DataLoader workers, `subprocess` calls to python) loads the `sitecustomize` there at startup; it resolves Lightning
names to volt from the first Lightning import on (importing volt only then), and runs any `sitecustomize` it
shadows. volt's DDP launcher starts the other ranks as `python -m volt run ...` (volt/distributed/launcher.py).
Forked processes inherit the aliases anyway. Under torchrun, run `torchrun ... -m volt run train.py`.
"""
import builtins
import os
import sys
import types
from typing import List

from volt.distributed.launcher import RUN_ENV_FLAG
BOOT_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "boot")

USAGE = """usage: volt run SCRIPT [ARGS...]
       volt run -m MODULE [ARGS...]

Run a PyTorch Lightning program on volt without changing it: `lightning`, `lightning.pytorch`, `pytorch_lightning`
(and the helpers of `lightning.fabric`) resolve to volt inside it and inside the processes it starts."""


def main(argv: List[str]) -> None:
    """`volt run ...`; `argv` is what follows `run`."""
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE, file=sys.stdout if argv else sys.stderr)
        raise SystemExit(0 if argv else 2)
    if argv[0] == "-m" and len(argv) < 2:
        print("volt run: -m needs a module name\n\n" + USAGE, file=sys.stderr)
        raise SystemExit(2)
    from volt.dropin import install

    if argv[0] == "-m":
        install()  # before finding `pkg.mod`, which imports `pkg`, which may import Lightning
        code, globals_ = _prepare_module(argv[1], argv[2:])
    else:
        code, globals_ = _prepare_script(argv[0], argv[1:])
        install()
    prepare_child_processes()
    _run(code, globals_)


def prepare_child_processes() -> None:
    """Make the Python processes started from this one resolve Lightning names to volt (see the module docstring)."""
    os.environ[RUN_ENV_FLAG] = "1"
    paths = os.environ.get("PYTHONPATH", "").split(os.pathsep)
    if BOOT_DIR not in paths:
        os.environ["PYTHONPATH"] = os.pathsep.join([BOOT_DIR] + [p for p in paths if p])


def _prepare_script(path: str, args: List[str]):
    """The code of the script at `path` and a fresh `__main__` for it, as `python path args...` sets them up."""
    absolute = os.path.abspath(path)
    try:
        import io

        with io.open_code(absolute) as file:
            source = file.read()
    except OSError as err:
        print(f"volt run: can't open file {absolute!r}: [Errno {err.errno}] {err.strerror}", file=sys.stderr)
        raise SystemExit(2) from None
    from importlib.machinery import SourceFileLoader

    code = compile(source, absolute, "exec", dont_inherit=True)
    sys.argv = [path, *args]
    sys.path[0] = os.path.dirname(absolute)
    return code, _main_module(__file__=absolute, __loader__=SourceFileLoader("__main__", absolute))


def _prepare_module(name: str, args: List[str]):
    """The code of module `name` (a package's `__main__`) and a fresh `__main__` for it, as `python -m` does."""
    import importlib.util

    sys.path[0] = os.getcwd()
    try:
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.submodule_search_locations is not None:
            name = f"{name}.__main__"
            spec = importlib.util.find_spec(name)
    except ImportError as err:
        spec, reason = None, str(err)
    else:
        reason = f"No module named {name}"
    if spec is None or spec.loader is None:
        print(f"volt run: {reason}", file=sys.stderr)
        raise SystemExit(1)
    code = spec.loader.get_code(name)
    sys.argv = [spec.origin, *args]
    return code, _main_module(__file__=spec.origin, __loader__=spec.loader, __spec__=spec,
                              __package__=spec.parent)


def _main_module(**attributes) -> dict:
    main = types.ModuleType("__main__")
    main.__dict__.update({"__builtins__": builtins, "__spec__": None, "__package__": None, **attributes})
    sys.modules["__main__"] = main
    return main.__dict__


def _run(code, globals_: dict) -> None:
    """Run the program; an uncaught exception is reported from the program's own frames on, with status 1."""
    try:
        exec(code, globals_)
    except (SystemExit, KeyboardInterrupt):
        raise
    except BaseException as exc:  # noqa: B036 -- reported as Python would, then the same exit status
        traceback = exc.__traceback__
        while traceback is not None and traceback.tb_frame.f_globals is not globals_:
            traceback = traceback.tb_next
        exc = exc.with_traceback(traceback or exc.__traceback__)
        sys.excepthook(type(exc), exc, exc.__traceback__)
        raise SystemExit(1) from None
