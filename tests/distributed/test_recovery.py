"""Automatic recovery: a rank SIGKILLed under `torchrun --max-restarts` or volt's own launcher with
`DDPStrategy(max_restarts=...)` (and FSDP with background sharded checkpoints): the group restarts, the unchanged
script resumes from the newest checkpoint (each rank continuing its own stream from its saved state, no replay) and
ends bit-identical to an uninterrupted run; rank 0 logs the restart, what was lost and the time to recover. Script:
scripts/recover.py.
"""
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from distributed.helpers import SCRIPTS, finish, reports, script_env, torchrun

pytestmark = [pytest.mark.distributed, pytest.mark.timeout(120)]
TORCHRUN = torchrun() + ["--nproc-per-node", "2", "--max-restarts", "1"]
RESTART = ("Restart 1 of at most 1 (the last one allowed) of the process group by torch's elastic agent: the previous "
           "attempt ended without a failure record: a rank was killed (SIGKILL, the out-of-memory killer) or its "
           "machine failed; the agent's log above names it. Resuming from the newest checkpoint (ckpt_path='last').")


def start(out: Path, options: dict, launcher=None) -> subprocess.Popen:
    command = (launcher or [sys.executable]) + [str(SCRIPTS / "recover.py"), str(out), json.dumps(options)]
    return subprocess.Popen(command, env=script_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)


def run(out: Path, options: dict, launcher=None) -> str:
    proc = start(out, options, launcher)
    output = finish(proc, timeout=100)
    assert proc.returncode == 0, output[-6000:]
    return output


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("uninterrupted")
    run(out, {})
    return reports(out)


def assert_same_run(out: Path, expected: dict) -> dict:
    got = reports(out)
    assert sorted(got) == [0, 1]
    for rank in (0, 1):
        assert got[rank]["global_step"] == expected[rank]["global_step"] == 16
        for name, value in expected[rank]["weights"].items():
            assert torch.equal(got[rank]["weights"][name], value), f"rank {rank}: {name}"
    return got


def test_a_rank_killed_under_torchrun_recovers_by_itself(tmp_path, uninterrupted):
    """Rank 1 dies after step 5; last.ckpt is at step 4: one step is lost and run again."""
    kill = {"rank": 1, "step": 5, "attempts": [0]}
    output = run(tmp_path, {"kill": kill}, TORCHRUN)
    assert "failed (exitcode: -9) local_rank: 1" in output  # the agent's own line, which the restart line points to
    assert RESTART in output
    assert ("Lost to the failure: 1 optimizer step, run again from the checkpoint at global step 4 "
            f"({tmp_path}/ckpt/last.ckpt); the failed attempt had reached step 5.") in output
    assert re.search(r"Recovered \d+\.\d s after the failure: training again from global step 4 \(\d+\.\d s of it in "
                     r"this process's fit: loading the checkpoint and positioning the data\)\.", output), output
    got = assert_same_run(tmp_path, uninterrupted)
    # each rank continued its own stream from its saved state: its last 4 batches of epoch 0, then epoch 1
    assert [got[rank]["served"] for rank in (0, 1)] == [4 * 4 + 32] * 2


def test_volts_launcher_restarts_the_group_when_rank_0_dies_before_any_checkpoint(tmp_path, uninterrupted):
    """`DDPStrategy(max_restarts=1)` with the plain `python script.py`: rank 0 itself dies, at step 1, before the first
    checkpoint; the group restarts and trains from scratch, and says so."""
    output = run(tmp_path, {"max_restarts": 1, "kill": {"rank": 0, "step": 1, "attempts": [0]}})
    assert "after a failure the group is restarted (at most 1 time) and resumes from the newest checkpoint" in output
    assert RESTART in output
    assert "No checkpoint to resume from yet: starting from scratch; the failed attempt had reached global step 1." \
        in output
    assert re.search(r"Recovered \d+\.\d s after the failure: training again from scratch", output), output
    assert_same_run(tmp_path, uninterrupted)


def test_a_used_up_restart_budget_ends_with_a_clear_error(tmp_path):
    """Rank 1 dies at step 3 in the first attempt and again after the one restart allowed."""
    proc = start(tmp_path, {"max_restarts": 1, "kill": {"rank": 1, "step": 3, "attempts": [0, 1]}})
    output = finish(proc, timeout=100)
    assert proc.returncode == 1, output[-4000:]
    assert "Lost to the failure: 1 optimizer step, run again from the checkpoint at global step 2" in output
    assert re.search(r"RestartsExhaustedError: Rank 1 \(local rank 1, pid \d+\) failed after the last restart that "
                     r"max_restarts=1 allows: the process was killed by SIGKILL \(out of memory\? see `dmesg`\)\. The "
                     r"job stops here; a later run resumes with `trainer\.fit\(\.\.\., ckpt_path='last'\)`\.",
                     output), output[-4000:]
    assert not list(tmp_path.glob("rank*.pt"))


@pytest.mark.timeout(240)
def test_fsdp_with_background_sharded_checkpoints_recovers_by_itself(tmp_path):
    """`FSDPStrategy(max_restarts=1)`: checkpoints are sharded folders written in the background; rank 1 dies after
    step 5 and the group resumes from the folder last.ckpt, ending bit-identical to an uninterrupted FSDP run."""
    (tmp_path / "uninterrupted").mkdir()
    (tmp_path / "killed").mkdir()
    run(tmp_path / "uninterrupted", {"fsdp": True})
    kill = {"rank": 1, "step": 5, "attempts": [0]}
    output = run(tmp_path / "killed", {"fsdp": True, "max_restarts": 1, "kill": kill})
    assert RESTART in output
    assert "Lost to the failure: 1 optimizer step, run again from the checkpoint at global step 4" in output
    assert (tmp_path / "killed" / "ckpt" / "last.ckpt" / "volt_checkpoint.json").is_file()  # a folder
    assert_same_run(tmp_path / "killed", reports(tmp_path / "uninterrupted"))
