"""SimpleProfiler: wall time of every hook and step (`Trainer(profiler="simple")`)."""
import math
import os
import time
from collections import defaultdict
from typing import Dict, List, Optional

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
        """Lightning's text table, cell for cell (programs and tests compare it): the action column as wide as the
        longest name, the others 15 characters, each cell followed by a tab; rows by share of the time (extended) or
        by mean duration, numbers to 5 significant digits."""
        sep = os.linesep
        # math.fsum: thousands of short durations summed with plain float addition lose their last digits
        stats = []  # (name, mean, calls, total)
        for name, durations in self.recorded_durations.items():
            if durations:
                total = math.fsum(durations)
                stats.append((name, total / len(durations), len(durations), total))
        width = max((len(name) for name, *_ in stats), default=0)

        def row(*cells: str) -> str:
            return sep + "|" + "".join(f"  {cell:<{width if i == 0 else 15}}\t|" for i, cell in enumerate(cells))

        if self.extended:
            header = row("Action", "Mean duration (s)", "Num calls", "Total time (s)", "Percentage %")
            total_run = time.perf_counter() - self.start_time
            stats.sort(key=lambda stat: -stat[3])
            first = row("Total", "-", str(sum(calls for _, _, calls, _ in stats)), f"{total_run:.5}", "100 %")
            rows = [row(name, f"{mean:.5}", str(calls), f"{total:.5}", f"{100 * total / total_run:.5}")
                    for name, mean, calls, total in stats]
        else:
            header = row("Action", "Mean duration (s)", "Total time (s)")
            stats.sort(key=lambda stat: -stat[1])
            first, rows = "", [row(name, f"{mean:.5}", f"{total:.5}") for name, mean, _, total in stats]
        rule = sep + "-" * len(header.expandtabs())
        return "".join(["Profiler Report", sep, rule, header, rule] + ([first, rule] if first else []) + rows
                       + [rule, sep])
