"""Automatic resume in a restarted process (volt/trainer/recovery.py), in one process: what makes `fit()` without a
`ckpt_path` resume, how to turn that off, and the errors of the restart settings. The restarts themselves, with
several processes under torchrun and volt's launcher, are in tests/distributed/test_recovery.py."""
import logging
import os

import pytest

from volt import Trainer
from volt.strategies import DDPStrategy, FSDPStrategy
from volt.utilities.exceptions import MisconfigurationException

from . import run_training

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")
CONFIG = dict(max_epochs=1, checkpoint={"every_n_train_steps": 1, "save_last": True, "save_top_k": 1})


@pytest.fixture
def crashed(tmp_path):
    """A run that failed after its third optimizer step; last.ckpt holds step 3."""
    with pytest.raises(RuntimeError, match="crash at step 3"):
        run_training.run(dict(root=str(tmp_path), crash_at_step=3, **CONFIG))
    return tmp_path


def test_a_process_restarted_by_torchs_elastic_agent_resumes_by_itself(crashed, monkeypatch, caplog):
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "1")  # what the agent sets in a restarted group
    caplog.set_level(logging.INFO, logger="volt")
    trainer = run_training.run(dict(root=str(crashed), **CONFIG))
    last = os.path.join(crashed, "ckpt", "last.ckpt")
    assert trainer.ckpt_path == last and trainer.global_step == 6
    messages = [m for m in caplog.messages if not m.startswith("`Trainer(")]  # the arguments' notices come first
    assert messages[0].startswith("Restart 1 of the process group by torch's elastic agent: the previous attempt ended "
                                  "without a failure record")
    assert (f"Lost to the failure: the training after the checkpoint at global step 3 ({last}); how far the failed "
            "attempt got was not recorded.") in messages
    assert any(m.startswith("Recovered: training again from global step 3, ") and
               m.endswith(" s after fit started (when the failure happened is unknown).") for m in messages), messages


def test_an_explicit_ckpt_path_or_volt_auto_resume_0_is_obeyed(crashed, monkeypatch, caplog):
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "1")
    caplog.set_level(logging.INFO, logger="volt")
    first = os.path.join(crashed, "ckpt", "epoch=0-step=3.ckpt")
    os.replace(os.path.join(crashed, "ckpt", "last.ckpt"), first)
    assert run_training.run(dict(root=str(crashed), ckpt_path=first, **CONFIG)).ckpt_path == first
    monkeypatch.setenv("VOLT_AUTO_RESUME", "0")
    assert run_training.run(dict(root=str(crashed / "fresh"), **CONFIG)).ckpt_path is None
    assert not any(m.startswith("Restart") for m in caplog.messages)
    monkeypatch.setenv("VOLT_AUTO_RESUME", "yes")
    with pytest.raises(MisconfigurationException, match=r"VOLT_AUTO_RESUME='yes' must be 1 \(a restarted job's `fit\(\)` "
                                                        r"without ckpt_path resumes from its last checkpoint; the "
                                                        r"default\) or 0 \(it starts from scratch\)\."):
        run_training.run(dict(root=str(crashed / "bad"), **CONFIG))


def test_restart_settings_are_checked(monkeypatch):
    with pytest.raises(MisconfigurationException, match=r"max_restarts=-1 must be an int >= 0"):
        DDPStrategy(max_restarts=-1)
    with pytest.raises(MisconfigurationException, match="restarts ranks by running your script again, which "
                                                         "start_method='spawn' does not do"):
        DDPStrategy(start_method="spawn", max_restarts=2)
    monkeypatch.setenv("VOLT_MAX_RESTARTS", "two")
    with pytest.raises(MisconfigurationException, match=r"VOLT_MAX_RESTARTS='two' must be a whole number >= 0"):
        DDPStrategy()
    monkeypatch.setenv("VOLT_MAX_RESTARTS", "2")
    assert DDPStrategy().max_restarts == 2 and DDPStrategy(max_restarts=0).max_restarts == 0
    assert FSDPStrategy().max_restarts == 2 and FSDPStrategy(max_restarts=1).max_restarts == 1
    with pytest.raises(MisconfigurationException, match=r"max_restarts=1.5 must be an int >= 0"):
        FSDPStrategy(max_restarts=1.5)
    with pytest.raises(MisconfigurationException, match=r"max_restarts=2 restarts the ranks of one node. On 2 nodes, "
                                                         r"start them with torchrun"):
        Trainer(accelerator="cpu", devices=2, num_nodes=2, strategy="ddp")
