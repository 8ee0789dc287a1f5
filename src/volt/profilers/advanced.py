"""AdvancedProfiler: cProfile statistics per hook and step (`Trainer(profiler="advanced")`)."""
from typing import Any, Dict, Optional

from volt.profilers.profiler import Profiler


class AdvancedProfiler(Profiler):
    """cProfile statistics for each action (top functions by cumulative time)."""

    def __init__(self, dirpath: Optional[str] = None, filename: Optional[str] = None,
                 line_count_restriction: float = 1.0) -> None:
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
