"""Automatic recovery: a job whose processes were started again after a failure resumes `fit` by itself.

Who restarts a job:
- torch's elastic agent, under `torchrun --max-restarts N` or volt's own launcher with `DDPStrategy(max_restarts=N)`
  or `FSDPStrategy(max_restarts=N)` (distributed/launcher.py, `ElasticLauncher`): when a rank dies, the agent stops
  the others and starts the whole group again, at most N times. The new processes see TORCHELASTIC_RESTART_COUNT > 0.
- SLURM: a requeued job (volt requeues on SIGUSR1, trainer/signals.py; `sbatch --requeue` after a node failure)
  sees SLURM_RESTART_COUNT > 0.

In a restarted process, `fit` without a `ckpt_path` resumes from the newest last checkpoint (`ckpt_path="last"`;
under SLURM, Lightning's "hpc" checkpoint if there is one), so the user's script needs no change; with no
checkpoint yet it starts from scratch and says so. An explicit `ckpt_path` is always honoured, and
VOLT_AUTO_RESUME=0 turns automatic resuming off.

Rank 0 logs one line for each of: the restart (which one, of how many, and why the previous attempt ended: the
watchdog's failure record, which the agent's store keeps across restarts), what was lost (the optimizer steps the
failed attempt had run past the checkpoint), and the time to recover (from the failure to training again).
"""
import os
import time
from typing import Any, Dict, Optional

from volt.distributed.launcher import failure_summary, previous_attempt
from volt.trainer.signals import requeued_job, slurm_job_id
from volt.utilities.exceptions import MisconfigurationException
from volt.utilities.rank_zero import rank_zero_info

AUTO_RESUME_ENV = "VOLT_AUTO_RESUME"
_NO_RECORD = ("the previous attempt ended without a failure record: a rank was killed (SIGKILL, the out-of-memory "
              "killer) or its machine failed; the agent's log above names it")


def detect() -> Optional["Restart"]:
    """The restart this process is, if `fit` should resume by itself; None for a first start (or when opted out)."""
    if not _auto_resume():
        return None
    attempt = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") or 0)
    if attempt > 0:
        budget = os.environ.get("TORCHELASTIC_MAX_RESTARTS")
        last = " (the last one allowed)" if budget == str(attempt) else ""
        of = f" of at most {budget}" if budget else ""
        return Restart(f"Restart {attempt}{of}{last} of the process group by torch's elastic agent",
                       previous_attempt(), unexplained=_NO_RECORD)
    if requeued_job():
        return Restart(f"Restart {os.environ['SLURM_RESTART_COUNT']} of SLURM job {slurm_job_id()} (requeued)", None)
    return None


def _auto_resume() -> bool:
    raw = os.environ.get(AUTO_RESUME_ENV, "1").strip()
    if raw not in ("0", "1"):
        raise MisconfigurationException(
            f"{AUTO_RESUME_ENV}={raw!r} must be 1 (a restarted job's `fit()` without ckpt_path resumes from its last "
            "checkpoint; the default) or 0 (it starts from scratch)."
        )
    return raw == "1"


class Restart:
    """One restarted process's recovery: what the previous attempt left (`launcher.previous_attempt`) and the log
    lines. `announce` when the checkpoint is chosen, `loaded` once it is read, `recovered` at the resume point."""

    def __init__(self, what: str, previous: Optional[Dict[str, Any]], unexplained: str = "") -> None:
        previous = previous or {}
        self.what = what
        self.unexplained = unexplained  # what to say when the previous attempt left no failure record
        self.failure: Optional[Dict[str, Any]] = previous.get("failure")
        self.reached_step: Optional[int] = previous.get("step")  # the furthest step the failed attempt reached
        self.failed_at: Optional[float] = previous.get("time")  # when it ended (wall clock)
        self.started = time.time()
        self.ended_by = "the failure"  # what ended the previous attempt
        self.resumed_step: Optional[int] = None  # None: started from scratch

    def announce(self, ckpt_path: str) -> None:
        why = f"the previous attempt ended because {failure_summary(self.failure)}" if self.failure else \
            self.unexplained
        rank_zero_info(f"{self.what}{': ' + why if why else ''}. Resuming from the newest checkpoint "
                       f"(ckpt_path={ckpt_path!r}).")

    def loaded(self, path: Optional[str], checkpoint: Optional[Dict[str, Any]]) -> None:
        """Say what the failure cost: the work since the checkpoint resumed from (everything, with none yet)."""
        if checkpoint is None:
            reached = f"; the failed attempt had reached global step {self.reached_step}" if self.reached_step else ""
            rank_zero_info(f"No checkpoint to resume from yet: starting from scratch{reached}.")
            return
        step = self.resumed_step = int(checkpoint.get("global_step", 0))
        stopped_by = ((checkpoint.get("loops") or {}).get("fit_loop") or {}).get("stopped_by")
        if stopped_by:
            self.ended_by = f"the stop on {stopped_by}"
            if self.failed_at is None:
                self.failed_at = os.path.getmtime(path)
            rank_zero_info(f"Lost to the restart: nothing; the previous run stopped on {stopped_by} at global step "
                           f"{step} and saved the checkpoint resumed from ({path}).")
        elif self.reached_step is not None:
            lost = max(0, self.reached_step - step)
            rank_zero_info(f"Lost to the failure: {lost} optimizer step{'' if lost == 1 else 's'}, run again from the "
                           f"checkpoint at global step {step} ({path}); the failed attempt had reached step "
                           f"{self.reached_step}.")
        else:
            age = (f", written {self.failed_at - os.path.getmtime(path):.1f} s before the failure"
                   if self.failed_at is not None else "")
            rank_zero_info(f"Lost to the failure: the training after the checkpoint at global step {step} "
                           f"({path}){age}; how far the failed attempt got was not recorded.")

    def recovered(self) -> None:
        """The run is ready to train again: the time from the failure to here."""
        now = time.time()
        where = "from scratch" if self.resumed_step is None else f"from global step {self.resumed_step}"
        if self.failed_at is not None:
            work = "" if self.resumed_step is None else ": loading the checkpoint and positioning the data"
            rank_zero_info(f"Recovered {now - self.failed_at:.1f} s after {self.ended_by}: training again {where} "
                           f"({now - self.started:.1f} s of it in this process's fit{work}).")
        else:
            rank_zero_info(f"Recovered: training again {where}, {now - self.started:.1f} s after fit started (when "
                           "the failure happened is unknown).")
