"""SimpleProfiler: wall time of every hook and step (`Trainer(profiler="simple")`)."""
import math
import time
from collections import defaultdict
from typing import Dict, List, Optional, Sequence

from volt.profilers.profiler import Profiler


class SimpleProfiler(Profiler):
    """Wall time per action: mean and total, sorted by total.

    `extended=True` (the default, as Lightning) also gives each action's number of calls and share of the time since
    the profiler was made, with a total row. As Lightning's, it keeps recording across the Trainer's stages (fit,
    then test, ...): each stage's report covers the stages before it too.
    """

    def __init__(self, dirpath: Optional[str] = None, filename: Optional[str] = None, extended: bool = True) -> None:
        super().__init__(dirpath, filename)
        self.extended = extended
        self._started: Dict[str, float] = {}
        # action -> the duration of each call, in seconds (Lightning's public attribute name)
        self.recorded_durations: Dict[str, List[float]] = defaultdict(list)
        self.start_time = time.perf_counter()  # what the percentages are of (Lightning's public attribute name)

    def start(self, action_name: str) -> None:
        if action_name in self._started:
            raise ValueError(f"Attempted to start {action_name} which has already started.")
        self._started[action_name] = time.perf_counter()

    def stop(self, action_name: str) -> None:
        start = self._started.pop(action_name, None)
        if start is None:
            raise ValueError(f"Attempting to stop recording an action ({action_name}) which was never started.")
        self.recorded_durations[action_name].append(time.perf_counter() - start)

    def summary(self) -> str:
        # math.fsum: thousands of short durations summed with plain float addition lose their last digits
        rows = sorted(((name, len(d), math.fsum(d)) for name, d in self.recorded_durations.items() if d),
                      key=lambda row: -row[2])
        if not self.extended:
            return _table(["Action", "Mean duration (s)", "Total time (s)"],
                          [[name, f"{total / calls:.5g}", f"{total:.5g}"] for name, calls, total in rows])
        total_run = time.perf_counter() - self.start_time
        table = [[name, f"{total / calls:.5g}", str(calls), f"{total:.5g}", f"{100 * total / total_run:.5g}"]
                 for name, calls, total in rows]
        total_row = ["Total", "-", str(sum(calls for _, calls, _ in rows)), f"{total_run:.5g}", "100 %"]
        return _table(["Action", "Mean duration (s)", "Num calls", "Total time (s)", "Percentage %"], table, total_row)


def _table(header: Sequence[str], rows: List[List[str]], total: Optional[Sequence[str]] = None) -> str:
    """A text table: left-aligned columns as wide as their widest cell, the total row (if any) under the header."""
    widths = [max(len(cell) for cell in column) for column in zip(header, *rows, *([total] if total else []))]

    def line(cells: Sequence[str]) -> str:
        return "|  " + "  |  ".join(cell.ljust(width) for cell, width in zip(cells, widths)) + "  |"

    rule = "-" * len(line(header))
    lines = ["Profiler Report", rule, line(header), rule]
    if total:
        lines += [line(total), rule]
    return "\n".join(lines + [line(row) for row in rows] + [rule])
