"""When one rank fails, every process of the job ends within seconds, non-zero, naming the failing rank.

Each test times the job from the moment of the failure (the failing rank writes the time just before it raises
or kills itself) to the moment every process has closed its output, and checks that no rank outlives the job.
"""
import os
import re
import signal
import time

import pytest

from distributed.helpers import finish, free_port, running, start, torchrun, wait_for_files

pytestmark = pytest.mark.distributed
TARGET_S = 5.0


def ended_within(proc, failed_at_file, timeout=50):
    output = finish(proc, timeout)
    ended = time.time()
    assert failed_at_file.exists(), output[-4000:]
    return output, ended - float(failed_at_file.read_text())


def assert_no_rank_left(out):
    pids = [int(p.read_text()) for p in out.glob("pid*")]
    assert len(pids) == 2
    time.sleep(0.2)  # an orphaned zombie needs a moment to be reaped
    assert not [pid for pid in pids if running(pid)]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("launcher, fail", [("ddp", "raise"), ("ddp", "kill"), ("ddp_spawn", "kill"),
                                            ("torchrun", "raise")])
def test_a_failing_rank_stops_the_job(tmp_path, launcher, fail):
    options = {"phases": ["fail"], "fail": fail, "strategy": "ddp" if launcher == "torchrun" else launcher}
    command = torchrun() + ["--nproc-per-node", "2"] if launcher == "torchrun" else None
    proc = start(tmp_path, options, command)
    output, seconds = ended_within(proc, tmp_path / "failed_at")
    print(f"{launcher}/{fail}: every process ended {seconds:.2f} s after the failure")
    assert proc.returncode != 0
    assert seconds < TARGET_S, output[-4000:]
    if fail == "raise":
        assert "Rank 1 of 2" in output and "ValueError: planned failure on rank 1" in output, output[-4000:]
        assert 'train.py", line' in output  # the failing rank's traceback
    else:
        assert "Rank 1 of 2" in output and "killed by SIGKILL" in output, output[-4000:]
    if launcher != "ddp_spawn":
        assert_no_rank_left(tmp_path)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("strategy", ["ddp", "ddp_spawn"])
def test_ctrl_c_stops_every_rank(tmp_path, strategy):
    proc = start(tmp_path, {"phases": ["fail"], "fail": "slow", "strategy": strategy})
    wait_for_files([tmp_path / "pid0", tmp_path / "pid1"], timeout=45)
    sent = time.time()
    os.killpg(proc.pid, signal.SIGINT)  # what a terminal does on Ctrl-C
    output = finish(proc, timeout=30)
    assert time.time() - sent < TARGET_S, output[-4000:]
    assert proc.returncode != 0
    assert_no_rank_left(tmp_path)


@pytest.mark.timeout(60)
def test_killing_the_launcher_stops_the_ranks_it_started(tmp_path):
    proc = start(tmp_path, {"phases": ["fail"], "fail": "slow"})
    wait_for_files([tmp_path / "pid0", tmp_path / "pid1"], timeout=45)
    sent = time.time()
    os.kill(int((tmp_path / "pid0").read_text()), signal.SIGKILL)
    output = finish(proc, timeout=30)
    assert time.time() - sent < TARGET_S, output[-4000:]
    assert "the launcher process (local rank 0 of this node) died" in output, output[-4000:]
    assert_no_rank_left(tmp_path)


@pytest.mark.timeout(60)
def test_nodes_that_disagree_on_the_world_size_fail_at_once(tmp_path):
    port = str(free_port())
    env = dict(MASTER_ADDR="127.0.0.1", MASTER_PORT=port)
    nodes = [start(tmp_path, {"devices": 1, "num_nodes": n + 2}, NODE_RANK=str(n), **env) for n in (0, 1)]
    outputs = [finish(node, timeout=50) for node in nodes]
    assert all(node.returncode != 0 for node in nodes)
    assert re.search(r"this rank expects (3|2) processes in the job, another rank expects (2|3)", "".join(outputs))


@pytest.mark.timeout(60)
def test_a_signal_to_one_rank_stops_every_rank_after_the_same_batch(tmp_path):
    """SIGTERM reaches only rank 1: the ranks agree (through the rendezvous store, no per-step collective) on one
    batch, both stop after it with a checkpoint, and nothing hangs."""
    proc = start(tmp_path, {"phases": ["fail"], "fail": "slow", "strategy": "ddp"})
    wait_for_files([tmp_path / "pid0", tmp_path / "pid1"], timeout=45)
    time.sleep(0.3)
    os.kill(int((tmp_path / "pid1").read_text()), signal.SIGTERM)
    output = finish(proc, timeout=40)
    assert proc.returncode != 0
    stops = [(tmp_path / f"stopped{rank}").read_text().split() for rank in (0, 1)]
    assert stops[0] == stops[1], (stops, output[-4000:])
    assert stops[0][1] == "TrainingStopped"
    assert "Training stopped by SIGTERM" in output, output[-4000:]
    assert list(tmp_path.rglob("last.ckpt")), output[-4000:]
    assert_no_rank_left(tmp_path)


def test_the_watchdog_thread_ends_before_python_finalizes():
    """A daemon thread still running while Python finalizes is torn down wherever it is; caught inside torch's C++
    store client it aborted finished runs ('terminate called without an active exception'). The watchdog's thread
    is joined at exit, after every exit handler registered later (the wait for launched ranks among them)."""
    import subprocess
    import sys

    from distributed.helpers import script_env

    code = (
        "import atexit\n"
        "from volt.distributed import launcher\n"
        "watchdog = None\n"
        "atexit.register(lambda: print('alive at the end:', watchdog._thread.is_alive()))\n"
        "watchdog = launcher.process_watchdog({'rank': 0, 'world_size': 1, 'local_rank': 0, 'node_rank': 0})\n"
        "watchdog.start()\n"
        "atexit.register(lambda: print('alive before close:', watchdog._thread.is_alive()))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], env=script_env(), capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["alive before close: True", "alive at the end: False"]
