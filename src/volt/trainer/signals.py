"""Graceful stop on SIGTERM or Ctrl-C, and SLURM requeue on SIGUSR1, during `fit`.

A handler only records which signal arrived. The fit loop reads that record (one attribute read, no host sync, no
collective) each time a batch or an epoch end is complete, the same points where ModelCheckpoint writes. There volt
writes `last.ckpt` into the checkpoint folder (a checkpoint that resumes exactly), requeues the job when the signal
was the requeue signal, and raises `TrainingStopped`: `on_exception` callbacks run, loggers finalize, and the process
exits with status 1 and a message saying how to resume. A second Ctrl-C stops at once (KeyboardInterrupt, which
the Trainer turns into SystemExit(1) after the exception hooks, as Lightning does).

SLURM: with `SLURM_JOB_ID` set, SIGUSR1 (`VOLT_REQUEUE_SIGNAL`: a name such as "SIGUSR2", or "" to leave the signal
alone) saves and then runs `scontrol requeue <job id>` (`VOLT_REQUEUE_COMMAND`, where `{job_id}` is replaced; setting
it also turns requeueing on outside SLURM). `Trainer(plugins=[SLURMEnvironment(auto_requeue=False)])` turns
requeueing off (the signal is left alone); `SLURMEnvironment(requeue_signal=signal.SIGUSR2)` picks the signal. In the
requeued job (`SLURM_RESTART_COUNT` > 0), `fit` without a `ckpt_path` resumes from "last" by itself
(trainer/recovery.py).

Several processes (DDP): every rank must stop after the same batch, even when the signal reaches only some ranks or
reaches them at different batches. volt adds no per-step collective for this: a rank that received a signal tells
its watchdog thread, and the watchdogs agree through the rendezvous store on the batch to stop after
(`launcher.Watchdog.request_stop`). The training loop only reads an attribute per batch, and waits (at a batch end,
outside any collective) only if it reaches its own proposal before the agreement is known.
"""
import time
import os
import signal
from typing import Dict, Optional

from volt.utilities.exceptions import TrainingStopped
from volt.utilities.rank_zero import rank_zero_info, rank_zero_warn

DEFAULT_REQUEUE_COMMAND = "scontrol requeue {job_id}"


def slurm_job_id() -> Optional[str]:
    """The job id to requeue: `<array job>_<task>` for an array task, else SLURM_JOB_ID."""
    array_job, array_task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    if array_job and array_task:
        return f"{array_job}_{array_task}"
    return os.environ.get("SLURM_JOB_ID")


def requeued_job() -> bool:
    """Whether this process is a requeued (restarted) SLURM job, which should resume from its last checkpoint."""
    return slurm_job_id() is not None and int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0) > 0


def _requeue_signal(environment=None) -> Optional[int]:
    """The signal that saves and requeues, or None: outside SLURM (unless VOLT_REQUEUE_COMMAND is set), or when the
    Trainer's `plugins=[SLURMEnvironment(auto_requeue=False)]` says so."""
    from volt.distributed.environments import SLURMEnvironment

    slurm = environment if isinstance(environment, SLURMEnvironment) else None
    if slurm is not None and not slurm.auto_requeue:
        return None
    if slurm_job_id() is None and "VOLT_REQUEUE_COMMAND" not in os.environ:
        return None
    if slurm is not None and slurm.requeue_signal is not None:
        return int(slurm.requeue_signal)
    name = os.environ.get("VOLT_REQUEUE_SIGNAL", "SIGUSR1").strip()
    if not name:
        return None
    if name.isdigit():
        return int(name)
    try:
        return int(getattr(signal.Signals, name if name.startswith("SIG") else "SIG" + name))
    except AttributeError:
        raise ValueError(
            f"VOLT_REQUEUE_SIGNAL={name!r} is not a signal name; use e.g. 'SIGUSR1', a number, or '' to disable."
        ) from None


class StopSignals:
    """The signal handlers of one `fit` call and the signal they received."""

    AGREEMENT_TIMEOUT_S = 60.0  # a peer that cannot agree this long is gone; the watchdog reports it

    def __init__(self, environment=None) -> None:
        self.environment = environment  # a `plugins=` ClusterEnvironment; a SLURMEnvironment's settings apply
        self.received: Optional[int] = None
        self._requeue_signal: Optional[int] = None
        self._previous: Dict[int, object] = {}
        self.coordinator = None  # agrees with the other ranks on when to stop (None: a single process)
        self.stopping: Optional[str] = None  # the signal being acted on while its checkpoint is written
        self.received_sigterm = False  # this fit got SIGTERM (Lightning's `trainer.received_sigterm`)
        self._passed_on: set = set()  # signals already handed to the user's own handler

    def install(self, coordinator=None) -> None:
        """Catch SIGTERM, SIGINT and the requeue signal until `restore` (only possible in the main thread)."""
        self.received = None
        self.received_sigterm = False
        self._passed_on = set()
        self.coordinator = coordinator
        self._requeue_signal = _requeue_signal(self.environment)
        wanted = [signal.SIGTERM, signal.SIGINT] + ([self._requeue_signal] if self._requeue_signal else [])
        for signum in wanted:
            try:
                self._previous[signum] = signal.signal(signum, self._handle)
            except ValueError:  # not the main thread: leave signals to the application
                break

    def restore(self) -> None:
        """Put the previous handlers back; a signal that arrived but was never acted on is delivered again."""
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        self._previous = {}
        received, self.received = self.received, None
        if received is not None and received not in self._passed_on:
            signal.raise_signal(received)

    def _handle(self, signum: int, frame) -> None:
        if signum == signal.SIGTERM:
            self.received_sigterm = True
            previous = self._previous.get(signum)
            if callable(previous):  # the program's own SIGTERM handler runs too, as in Lightning
                self._passed_on.add(signum)
                previous(signum, frame)
        if signum == signal.SIGINT and self.received == signal.SIGINT:
            self.received = None
            raise KeyboardInterrupt  # the second Ctrl-C: stop now
        if self.received is None:
            self.received = signum
            how = " (Ctrl-C again to stop at once)" if signum == signal.SIGINT else ""
            rank_zero_info(f"Received {signal.Signals(signum).name}: stopping after the current batch{how}.")

    def pending(self) -> bool:
        """Whether this rank, or another rank, received a stop signal (two attribute reads: hot-path cheap)."""
        return self.received is not None or (self.coordinator is not None and self.coordinator.stop_wanted)

    def check(self, trainer, batches_done: int) -> None:
        """At a batch or epoch end with a stop pending: stop now (one process), or once the ranks' agreed batch is
        reached (several). Never runs past this rank's own proposal before the agreement is known."""
        coordinator = self.coordinator
        if coordinator is None:
            return self.stop(trainer)
        if self.received is not None and not coordinator.stop_wanted:
            coordinator.request_stop()
        deadline = time.monotonic() + self.AGREEMENT_TIMEOUT_S
        while coordinator.stop_at is None:
            proposal = coordinator.proposal
            if proposal is None or batches_done < proposal:
                return  # keep training; the agreement arrives through the watchdog thread
            if time.monotonic() > deadline:
                rank_zero_warn("The ranks did not agree on when to stop; stopping this rank now.")
                return self.stop(trainer)
            time.sleep(0.005)
        if batches_done >= coordinator.stop_at:
            self.stop(trainer)

    def stop(self, trainer) -> None:
        """Write a checkpoint that resumes exactly, requeue if asked, then raise `TrainingStopped`."""
        signum, self.received = self.received, None
        if signum is None:  # another rank was signalled; this one stops with it
            signum = signal.SIGTERM
        name = signal.Signals(signum).name
        path = stop_checkpoint_path(trainer)
        callback = trainer.checkpoint_callback
        if callback is not None and callback.save_last:  # its own `last`: a resumed run updates it, not `last-v1`
            callback.last_model_path = path
        self.stopping = name  # the checkpoint records it: a restarted job then knows that nothing was lost
        try:
            trainer.save_checkpoint(path)
        finally:
            self.stopping = None
        message = (f"Training stopped by {name} at epoch {trainer.current_epoch}, global step {trainer.global_step};"
                   f" saved {path}. Resume with `trainer.fit(..., ckpt_path='last')`.")
        if signum == self._requeue_signal and trainer.is_global_zero:
            message += " " + _requeue()
        rank_zero_info(message)
        raise TrainingStopped(message)


def stop_checkpoint_path(trainer) -> str:
    """`last.ckpt` in the first ModelCheckpoint's folder (where `ckpt_path="last"` looks), or in
    `<default_root_dir>/checkpoints` without one."""
    callback = trainer.checkpoint_callback
    if callback is None:
        return os.path.join(trainer.default_root_dir, "checkpoints", "last.ckpt")
    return os.path.join(callback.resolve_dirpath(trainer), callback.CHECKPOINT_NAME_LAST + callback.FILE_EXTENSION)


def _requeue() -> str:
    """Run the requeue command; returns a sentence for the exit message."""
    import shlex
    import subprocess

    job_id = slurm_job_id() or ""
    command = os.environ.get("VOLT_REQUEUE_COMMAND", DEFAULT_REQUEUE_COMMAND).replace("{job_id}", job_id)
    try:
        result = subprocess.run(shlex.split(command), capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as err:
        rank_zero_warn(f"Requeue command `{command}` failed: {err}. Resubmit the job yourself.")
        return f"Requeueing failed ({err})."
    if result.returncode != 0:
        output = (result.stderr or result.stdout).strip()
        rank_zero_warn(f"Requeue command `{command}` exited with {result.returncode}: {output}. "
                       "Resubmit the job yourself.")
        return f"Requeueing failed (`{command}` exited with {result.returncode})."
    return f"Requeued job {job_id} with `{command}`."
