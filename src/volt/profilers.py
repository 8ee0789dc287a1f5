"""Profilers: `Trainer(profiler="simple")` times every hook and step; "advanced" runs cProfile per action.

Profiling wraps hook dispatch only when a profiler is set, so an unprofiled run pays nothing for it.
"""
import os
import time
from collections import defaultdict
from contextlib import contextmanager
from typing import Any, Dict, List, Optional


class Profiler:
    """Base class: `profile(action)` is a context manager; `summary()` is the report printed at the end."""

    def __init__(self, dirpath: Optional[str] = None, filename: Optional[str] = None) -> None:
        self.dirpath = dirpath
        self.filename = filename

    def start(self, action_name: str) -> None:
        raise NotImplementedError

    def stop(self, action_name: str) -> None:
        raise NotImplementedError

    def summary(self) -> str:
        raise NotImplementedError

    @contextmanager
    def profile(self, action_name: str):
        self.start(action_name)
        try:
            yield action_name
        finally:
            self.stop(action_name)

    def reset(self) -> None:
        """Forget what was recorded (called after each stage's report)."""

    def describe(self, stage: str = "") -> None:
        """Print the summary, or write it to `dirpath/filename` when a filename is given; then reset."""
        report = self.summary()
        if stage:
            report = f"{stage.upper()} {report}"
        if self.filename:
            dirpath = self.dirpath or "."
            os.makedirs(dirpath, exist_ok=True)
            with open(os.path.join(dirpath, f"{stage + '-' if stage else ''}{self.filename}.txt"), "w") as f:
                f.write(report)
        else:
            print(report)
        self.reset()


class PassThroughProfiler(Profiler):
    """Does nothing (the default)."""

    def start(self, action_name: str) -> None:
        pass

    def stop(self, action_name: str) -> None:
        pass

    def summary(self) -> str:
        return ""


class SimpleProfiler(Profiler):
    """Wall time per action: calls, mean and total, sorted by total."""

    def __init__(self, dirpath: Optional[str] = None, filename: Optional[str] = None) -> None:
        super().__init__(dirpath, filename)
        self._started: Dict[str, float] = {}
        self.recorded: Dict[str, List[float]] = defaultdict(list)
        self._begin = time.perf_counter()

    def start(self, action_name: str) -> None:
        if action_name in self._started:
            raise ValueError(f"Attempted to start {action_name} which has already started.")
        self._started[action_name] = time.perf_counter()

    def stop(self, action_name: str) -> None:
        start = self._started.pop(action_name, None)
        if start is None:
            raise ValueError(f"Attempting to stop recording an action ({action_name}) which was never started.")
        self.recorded[action_name].append(time.perf_counter() - start)

    def reset(self) -> None:
        self.recorded.clear()
        self._begin = time.perf_counter()

    def summary(self) -> str:
        total_run = time.perf_counter() - self._begin
        rows = sorted(((name, len(d), sum(d)) for name, d in self.recorded.items()), key=lambda r: -r[2])
        width = max([len("Action")] + [len(r[0]) for r in rows]) + 2
        lines = ["Profiler Report", "",
                 f"{'Action':<{width}}| {'Mean duration (s)':>18} | {'Num calls':>10} | {'Total time (s)':>15} | "
                 f"{'Percentage %':>12}",
                 "-" * (width + 66)]
        for name, calls, total in rows:
            lines.append(f"{name:<{width}}| {total / calls:>18.6g} | {calls:>10} | {total:>15.6g} | "
                         f"{100 * total / total_run:>12.3f}")
        return "\n".join(lines)


class AdvancedProfiler(Profiler):
    """cProfile statistics for each action (top functions by cumulative time)."""

    def __init__(self, dirpath: Optional[str] = None, filename: Optional[str] = None, line_count_restriction: float = 1.0) -> None:
        super().__init__(dirpath, filename)
        self.profiled_actions: Dict[str, Any] = {}  # action -> cProfile.Profile
        self.line_count_restriction = line_count_restriction

    def start(self, action_name: str) -> None:
        import cProfile

        self.profiled_actions.setdefault(action_name, cProfile.Profile()).enable()

    def stop(self, action_name: str) -> None:
        profiler = self.profiled_actions.get(action_name)
        if profiler is None:
            raise ValueError(f"Attempting to stop recording an action ({action_name}) which was never started.")
        profiler.disable()

    def summary(self) -> str:
        import io
        import pstats

        out = ["Profiler Report"]
        for name, profiler in self.profiled_actions.items():
            stream = io.StringIO()
            pstats.Stats(profiler, stream=stream).strip_dirs().sort_stats("cumulative").print_stats(
                self.line_count_restriction)
            out.append(f"\nProfile stats for: {name}\n{stream.getvalue()}")
        return "\n".join(out)

    def reset(self) -> None:
        self.profiled_actions = {}


def make_profiler(profiler) -> Optional[Profiler]:
    """Resolve `Trainer(profiler=...)`: None, "simple", "advanced", or a Profiler instance."""
    if profiler in (None, False):
        return None
    if isinstance(profiler, Profiler):
        return profiler
    if isinstance(profiler, str) and profiler.lower() in ("simple", "advanced", "passthrough"):
        return {"simple": SimpleProfiler, "advanced": AdvancedProfiler,
                "passthrough": PassThroughProfiler}[profiler.lower()]()
    raise ValueError(
        f"profiler={profiler!r} is not supported. Use 'simple', 'advanced', or a volt.profilers.Profiler instance."
    )


def profile_method(profiler: Profiler, obj, name: str, action: str) -> None:
    """Time every call of `obj.name` under `action` (set on the instance, so the class is untouched)."""
    method = getattr(obj, name)

    def profiled(*args, **kwargs):
        with profiler.profile(action):
            return method(*args, **kwargs)

    setattr(obj, name, profiled)
