"""AdvancedProfiler: cProfile statistics per hook and step (`Trainer(profiler="advanced")`)."""
import os
import re
from typing import Any, Dict, Optional

from volt.profilers.profiler import Profiler


class AdvancedProfiler(Profiler):
    """cProfile statistics for each action (top functions by cumulative time).

    `line_count_restriction`: how many functions each action's report lists (a count, or a fraction of them).
    `dump_stats=True`: also write each action's raw statistics, for `pstats`/snakeviz, when the report is made, to
    `<dirpath>/<stage>-<filename>-<local rank>-<action>.prof` (the parts that are set; characters that cannot be in a
    file name become "_").
    """

    def __init__(self, dirpath: Optional[str] = None, filename: Optional[str] = None,
                 line_count_restriction: float = 1.0, dump_stats: bool = False) -> None:
        super().__init__(dirpath, filename)
        self.profiled_actions: Dict[str, Any] = {}  # action -> cProfile.Profile
        self.line_count_restriction = line_count_restriction
        self.dump_stats = dump_stats

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
            if self.dump_stats:
                self._dump(name, profiler)
            stream = io.StringIO()
            pstats.Stats(profiler, stream=stream).strip_dirs().sort_stats("cumulative").print_stats(
                self.line_count_restriction)
            out.append(f"\nProfile stats for: {name}\n{stream.getvalue()}")
        return "\n".join(out)

    def _dump(self, action_name: str, profiler: Any) -> None:
        parts = [self._stage, self.filename, None if self._local_rank is None else str(self._local_rank), action_name]
        stem = re.sub(r"_+", "_", re.sub(r'[\\/:*?"<>|\n\r\t]', "_", "-".join(p for p in parts if p))).strip()
        os.makedirs(self.output_dir, exist_ok=True)
        profiler.dump_stats(os.path.join(self.output_dir, f"{stem or 'profile'}.prof"))

    def reset(self) -> None:
        self.profiled_actions = {}
