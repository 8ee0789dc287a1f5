"""SimpleProfiler: wall time of every hook and step (`Trainer(profiler="simple")`)."""
import time
from collections import defaultdict
from typing import Dict, List, Optional

from volt.profilers.profiler import Profiler


class SimpleProfiler(Profiler):
    """Wall time per action: calls, mean and total, sorted by total."""

    def __init__(self, dirpath: Optional[str] = None, filename: Optional[str] = None) -> None:
        super().__init__(dirpath, filename)
        self._started: Dict[str, float] = {}
        # action -> the duration of each call, in seconds (Lightning's public attribute name)
        self.recorded_durations: Dict[str, List[float]] = defaultdict(list)
        self._begin = time.perf_counter()

    def start(self, action_name: str) -> None:
        if action_name in self._started:
            raise ValueError(f"Attempted to start {action_name} which has already started.")
        self._started[action_name] = time.perf_counter()

    def stop(self, action_name: str) -> None:
        start = self._started.pop(action_name, None)
        if start is None:
            raise ValueError(f"Attempting to stop recording an action ({action_name}) which was never started.")
        self.recorded_durations[action_name].append(time.perf_counter() - start)

    def reset(self) -> None:
        self.recorded_durations.clear()
        self._begin = time.perf_counter()

    def summary(self) -> str:
        total_run = time.perf_counter() - self._begin
        rows = sorted(((name, len(d), sum(d)) for name, d in self.recorded_durations.items()), key=lambda r: -r[2])
        width = max([len("Action")] + [len(r[0]) for r in rows]) + 2
        lines = ["Profiler Report", "",
                 f"{'Action':<{width}}| {'Mean duration (s)':>18} | {'Num calls':>10} | {'Total time (s)':>15} | "
                 f"{'Percentage %':>12}",
                 "-" * (width + 66)]
        for name, calls, total in rows:
            lines.append(f"{name:<{width}}| {total / calls:>18.6g} | {calls:>10} | {total:>15.6g} | "
                         f"{100 * total / total_run:>12.3f}")
        return "\n".join(lines)
