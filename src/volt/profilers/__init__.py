"""Profilers: `Trainer(profiler="simple")` times every hook and step; "advanced" runs cProfile per action;
"pytorch" records operators with torch.profiler (`volt.profilers.pytorch`).

Profiling wraps hook dispatch only when a profiler is set, so an unprofiled run pays nothing for it.

The Trainer drives a profiler through this protocol (Lightning's): `setup(stage, local_rank, log_dir)` when a stage
starts (with `lightning_module` set just before), `start(action)`/`stop(action)` around every hook and step,
`describe(stage)` on every rank when the stage ends (a report file per rank; only rank 0 logs it), and
`teardown(stage)` on every rank once it is over, even after an error.
"""
from volt.profilers.advanced import AdvancedProfiler
from volt.profilers.profiler import PassThroughProfiler, Profiler
from volt.profilers.pytorch import PyTorchProfiler
from volt.profilers.simple import SimpleProfiler

__all__ = ["AdvancedProfiler", "PassThroughProfiler", "Profiler", "PyTorchProfiler", "SimpleProfiler"]


def make_profiler(profiler) -> Profiler:
    """Resolve `Trainer(profiler=...)`: None (PassThroughProfiler, which records nothing, as in Lightning),
    "simple", "advanced", "pytorch", or a Profiler instance."""
    if profiler in (None, False):
        return PassThroughProfiler()
    if isinstance(profiler, Profiler):
        return profiler
    if isinstance(profiler, str) and profiler.lower() in ("simple", "advanced", "pytorch", "passthrough"):
        return {"simple": SimpleProfiler, "advanced": AdvancedProfiler, "pytorch": PyTorchProfiler,
                "passthrough": PassThroughProfiler}[profiler.lower()]()
    from volt.utilities.exceptions import MisconfigurationException

    raise MisconfigurationException(
        f"Trainer(profiler={profiler!r}) is not supported. When passing string value for the `profiler` parameter of"
        " `Trainer`, it can only be one of 'simple', 'advanced', 'pytorch' or 'passthrough'; or pass a"
        " volt.profilers.Profiler instance."
    )
