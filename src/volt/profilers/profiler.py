"""The Profiler base class, and PassThroughProfiler, which records nothing."""
import os
from contextlib import contextmanager
from typing import Optional

from volt.utilities.rank_zero import rank_zero_info


class Profiler:
    """Base class: `profile(action)` is a context manager; `summary()` is the report printed at the end."""

    def __init__(self, dirpath: Optional[str] = None, filename: Optional[str] = None) -> None:
        self.dirpath = dirpath
        self.filename = filename
        self.lightning_module = None  # the module of the running stage, set by the Trainer before `setup`
        self._stage: Optional[str] = None
        self._local_rank: Optional[int] = None

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

    def setup(self, stage: str, local_rank: Optional[int] = None, log_dir: Optional[str] = None) -> None:
        """A stage starts. Reports go to `log_dir` unless `dirpath` was given; `local_rank` is given when several
        processes run, and then goes into file names."""
        self._stage, self._local_rank = stage, local_rank
        self.dirpath = self.dirpath or log_dir

    def teardown(self, stage: Optional[str]) -> None:
        """The stage is over (also after an error): release whatever `start` acquired."""

    def reset(self) -> None:
        """Forget what was recorded, when a stage starts, for a profiler that reports each stage apart (what a stage
        recorded stays readable after it). SimpleProfiler keeps recording across stages, as Lightning's."""

    def describe(self, stage: str = "") -> None:
        """Log the summary (INFO, on the "volt" logger, on global rank 0, as Lightning), or write it to
        `dirpath/filename` when a filename is given (each rank its own file); then `teardown`, as Lightning: a
        described profiler holds nothing open (it can be deep-copied)."""
        report = self.summary()
        if stage:
            report = f"{stage.upper()} {report}"
        if self.filename:
            os.makedirs(self.output_dir, exist_ok=True)
            with open(os.path.join(self.output_dir, self.file_stem(stage) + ".txt"), "w") as f:
                f.write(report)
        else:
            rank_zero_info(report)
        self.teardown(self._stage)

    @property
    def output_dir(self) -> str:
        """Where report files go: `dirpath`, else the current directory."""
        return self.dirpath or "."

    def file_stem(self, stage: Optional[str]) -> str:
        """`<stage>-<filename>-<local_rank>` without the parts that are not set: the name of a report file."""
        parts = [stage, self.filename, None if self._local_rank is None else str(self._local_rank)]
        return "-".join(part for part in parts if part) or "profile"


class PassThroughProfiler(Profiler):
    """Does nothing (the default)."""

    def start(self, action_name: str) -> None:
        pass

    def stop(self, action_name: str) -> None:
        pass

    def summary(self) -> str:
        return ""
