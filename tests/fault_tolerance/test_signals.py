"""Graceful stop: SIGTERM / Ctrl-C finish the batch, save a checkpoint that resumes exactly, and exit with a clear
message; SIGUSR1 under SLURM also requeues the job, and the requeued job resumes by itself."""
import os
import re
import signal
import sys

import pytest
import torch

import volt

from . import run_training
from .harness import assert_same, load_final, run_script

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

CONFIG = dict(accumulate=2, val_check_interval=0.5, max_epochs=2,
              checkpoint={"every_n_train_steps": 4, "save_last": True, "save_top_k": 1})


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    root = tmp_path_factory.mktemp("reference")
    run_training.run(dict(root=str(root), **CONFIG))
    return load_final(root)


class Recorder(volt.Callback):
    def __init__(self):
        self.exceptions, self.teardowns = [], []

    def on_exception(self, trainer, pl_module, exception):
        self.exceptions.append(exception)

    def teardown(self, trainer, pl_module, stage):
        self.teardowns.append(stage)


@pytest.mark.parametrize("signum", ["SIGTERM", "SIGINT"])
def test_signal_stops_after_the_step_with_a_checkpoint_that_resumes_exactly(tmp_path, reference, signum):
    cfg = dict(root=str(tmp_path), **CONFIG)
    handler_before = signal.getsignal(getattr(signal, signum))
    # sent in the middle of the optimizer step that makes global_step 3
    with pytest.raises(SystemExit, match=rf"Training stopped by {signum} at epoch 0, global step 3; saved .*last"
                                         r"\.ckpt\. Resume with `trainer.fit\(\.\.\., ckpt_path='last'\)`") as stop:
        run_training.run(dict(cfg, signal={"hook": "on_before_optimizer_step", "step": 2, "signum": signum}))
    assert stop.value.code != 0  # the process exits with status 1 and the message
    assert signal.getsignal(getattr(signal, signum)) == handler_before  # fit put the previous handler back
    last = torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=True)
    assert last["global_step"] == 3  # the step in progress was finished, not cut short

    run_training.run(dict(cfg, ckpt_path="last"))
    assert_same(load_final(tmp_path), reference)


def test_graceful_stop_runs_on_exception_and_finalizes(tmp_path):
    recorder = Recorder()
    trainer = volt.Trainer(default_root_dir=tmp_path, max_epochs=1, logger=False, enable_progress_bar=False,
                           enable_model_summary=False, callbacks=[recorder, run_training.SendSignal(
                               "on_train_batch_start", 1, "SIGTERM")])
    train, val = run_training.loaders(dict(run_training.DEFAULTS))
    received = []  # the program's own SIGTERM handler runs too, as in Lightning
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: received.append(signum))
    try:
        assert not trainer.received_sigterm
        with pytest.raises(SystemExit, match="Training stopped by SIGTERM"):
            trainer.fit(run_training.Net(), train, val)
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert received == [signal.SIGTERM] and trainer.received_sigterm
    assert [type(e).__name__ for e in recorder.exceptions] == ["TrainingStopped"]
    assert trainer.interrupted
    # without a ModelCheckpoint dirpath, the stop checkpoint goes where ModelCheckpoint would write
    assert os.path.isfile(os.path.join(trainer.checkpoint_callback.dirpath, "last.ckpt"))


def test_second_ctrl_c_stops_at_once(tmp_path):
    """The second Ctrl-C interrupts at once; as in Lightning, the run then ends with SystemExit(1) after the
    exception hooks and teardown."""
    with pytest.raises(SystemExit) as stop:
        run_training.run(dict(root=str(tmp_path), **CONFIG,
                              signal={"hook": "on_before_optimizer_step", "step": 1, "signum": "SIGINT", "times": 2}))
    assert stop.value.code == 1 and isinstance(stop.value.__cause__, KeyboardInterrupt)
    assert not os.path.exists(tmp_path / "ckpt" / "last.ckpt")  # no stop checkpoint: it did not wait


def test_signal_outside_the_training_loop_is_not_lost(tmp_path):
    """A signal that arrives after the last batch (no batch end left to act on it) is delivered again when `fit`
    returns, to the handler that was there before."""
    received = []
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: received.append(signum))
    try:
        class LateSignal(volt.Callback):
            def on_train_end(self, trainer, pl_module):
                os.kill(os.getpid(), signal.SIGTERM)

        trainer = volt.Trainer(default_root_dir=tmp_path, max_epochs=1, logger=False, enable_progress_bar=False,
                               enable_model_summary=False, enable_checkpointing=False, callbacks=[LateSignal()])
        train, val = run_training.loaders(dict(run_training.DEFAULTS))
        trainer.fit(run_training.Net(), train, val)
        assert received == [signal.SIGTERM]
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_slurm_requeue_then_the_requeued_job_resumes_by_itself(tmp_path, reference, monkeypatch, caplog):
    """The requeued job logs the same three lines as a job restarted by torch's elastic agent: the restart, what
    was lost (nothing: the stop saved where it was) and the time to recover."""
    requeued = tmp_path / "requeued.txt"
    script = f"import sys; open({str(requeued)!r}, 'w').write(sys.argv[1])"
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    monkeypatch.setenv("VOLT_REQUEUE_COMMAND", f'{sys.executable} -c "{script}" {{job_id}}')
    cfg = dict(root=str(tmp_path), **CONFIG)
    with pytest.raises(SystemExit, match=r"Training stopped by SIGUSR1 .* Requeued job 4242 with"):
        run_training.run(dict(cfg, signal={"hook": "on_train_batch_start", "step": 5, "signum": "SIGUSR1"}))
    assert requeued.read_text() == "4242"

    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")  # what SLURM sets in the requeued job
    caplog.set_level("INFO", logger="volt")
    run_training.run(cfg)  # no ckpt_path: a requeued job resumes from its last checkpoint
    assert_same(load_final(tmp_path), reference)
    last = tmp_path / "ckpt" / "last.ckpt"
    assert "Restart 1 of SLURM job 4242 (requeued). Resuming from the newest checkpoint (ckpt_path='last')." \
        in caplog.messages
    assert (f"Lost to the restart: nothing; the previous run stopped on SIGUSR1 at global step 5 and saved the "
            f"checkpoint resumed from ({last}).") in caplog.messages
    assert re.search(r"Recovered \d+\.\d s after the stop on SIGUSR1: training again from global step 5 \(\d+\.\d s "
                     r"of it in this process's fit: loading the checkpoint and positioning the data\)\.", caplog.text)


def test_failing_requeue_command_still_saves_and_says_so(tmp_path, monkeypatch):
    monkeypatch.setenv("SLURM_JOB_ID", "7")
    monkeypatch.setenv("VOLT_REQUEUE_COMMAND", f"{sys.executable} -c 'raise SystemExit(3)'")
    with pytest.warns(UserWarning, match="Requeue command .* exited with 3.*Resubmit the job yourself"):
        with pytest.raises(SystemExit, match=r"Requeueing failed"):
            run_training.run(dict(root=str(tmp_path), **CONFIG,
                                  signal={"hook": "on_train_batch_start", "step": 1, "signum": "SIGUSR1"}))
    assert os.path.isfile(tmp_path / "ckpt" / "last.ckpt")


def test_requeue_signal_setting_is_checked(tmp_path, monkeypatch):
    monkeypatch.setenv("SLURM_JOB_ID", "7")
    monkeypatch.setenv("VOLT_REQUEUE_SIGNAL", "SIGNOPE")
    with pytest.raises(ValueError, match="VOLT_REQUEUE_SIGNAL='SIGNOPE' is not a signal name"):
        run_training.run(dict(root=str(tmp_path), **CONFIG))


def test_sigterm_from_outside_exits_cleanly_and_the_new_process_resumes(tmp_path, reference):
    """The real thing, in a separate process: status 1, the message on stderr (no traceback), then a new process
    with ckpt_path="last" ends bit-identical to the uninterrupted run."""
    cfg = dict(root=str(tmp_path), **CONFIG)
    stopped = run_script(dict(cfg, signal={"hook": "on_before_optimizer_step", "step": 4, "signum": "SIGTERM"}))
    assert stopped.returncode == 1
    assert "Training stopped by SIGTERM at epoch" in stopped.stderr and "Traceback" not in stopped.stderr
    resumed = run_script(dict(cfg, ckpt_path="last"))
    assert resumed.returncode == 0, resumed.stderr
    assert_same(load_final(tmp_path), reference)
