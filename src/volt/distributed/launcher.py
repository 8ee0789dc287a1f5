"""Starting the ranks, and stopping all of them when one fails.

Launchers:
- `ScriptLauncher` ("ddp"): this process is local rank 0; it re-runs the command that started it (`python
  script.py ...` or `python -m module ...`) once for every other local rank, with MASTER_ADDR, MASTER_PORT,
  NODE_RANK, LOCAL_RANK, WORLD_SIZE set. A process that already sees LOCAL_RANK does not launch again.
- `SpawnLauncher` ("ddp_spawn", "ddp_fork"/"ddp_notebook"): this process starts every local rank with
  multiprocessing and waits; rank 0 sends back the trained weights and the results.
- `ElasticLauncher` ("ddp" with `max_restarts` > 0): this process supervises; torch's elastic agent (what
  `torchrun --max-restarts` runs) re-runs the command in every local rank and restarts the whole group when a rank
  fails. The restarted ranks resume from the newest checkpoint (trainer/recovery.py); the failure record and the
  positions the ranks published stay in the agent's store, which outlives restarts, and explain each restart.

Failures never hang: each rank runs a `Watchdog` thread that, a few times a second and without touching the
training step, looks for (a) a failure record in the rendezvous store, written by the rank that raised (its rank,
error and traceback), (b) the death of a local rank this process launched (SIGKILL included), and (c) the death of
the launcher that started this process. A rank that learns of a failure stops its local children; if its own
training loop has not unwound within `GRACE_S` seconds (it is blocked in a collective, say), it exits with code 1.

Ranks out of step fail no rank: one waits in a collective another never calls, until the process-group timeout. So
the watchdog also publishes, once a second, where this rank is (stall.py); when a rank has not moved for
`stall_warning` seconds, rank 0 logs every rank's position once, and a collective that times out carries them in
its failure record.

Stop signals are not failures: the Trainer stops gracefully on SIGTERM/Ctrl-C (trainer/signals.py), which needs
every rank to get the signal. The script launcher starts its ranks in a session of their own and relays the
signals it receives to them, so a terminal's Ctrl-C or a `kill` of the main process reaches each rank once.
"""
import atexit
import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
import traceback
import weakref
from datetime import timedelta
from typing import Any, Callable, Dict, List, Optional

import torch
from torch.multiprocessing import ProcessRaisedException

from volt.distributed import stall
from volt.utilities.exceptions import MisconfigurationException, TrainingStopped
from volt.utilities.rank_zero import log

POLL_S = 0.2  # how often the watchdog looks
GRACE_S = 2.0  # how long a rank that learned of a failure waits for its own loop to unwind before exiting
KILL_GRACE_S = 1.0  # SIGTERM, then SIGKILL after this long
PUBLISH_S = 1.0  # how often a rank publishes its position and rank 0 reads all (less for a short stall_warning)

_LAUNCHER_PID = "VOLT_LAUNCHER_PID"
RUN_ENV_FLAG = "VOLT_DROPIN"  # "1" in a program run with `volt run` (volt/dropin/run.py) and the processes it starts


class RankFailedError(RuntimeError):
    """Another rank of the job failed (raised, was killed, or lost its launcher), so this rank stopped too."""

    def __init__(self, record: Dict[str, Any], full: bool = True) -> None:
        self.record = record
        super().__init__(describe_failure(record, full=full))


class SpawnedRankRaisedError(RankFailedError, ProcessRaisedException):
    """A rank that ddp_spawn/ddp_fork started raised. Also torch.multiprocessing's ProcessRaisedException, which
    `mp.spawn` (and so Lightning) raises there: users' `except ProcessRaisedException` catches it."""

    def __init__(self, record: Dict[str, Any], local_rank: int) -> None:
        super().__init__(record)
        self.msg, self.error_index, self.error_pid = str(self), local_rank, record.get("pid", -1)

    def __reduce__(self):
        return type(self), (self.record, self.error_index)


def failure_record(rank_info: Dict[str, Any], exc: Optional[BaseException] = None, reason: str = "") -> Dict[str, Any]:
    """Plain-data description of a failure: who failed, how, and when (wall-clock seconds)."""
    record = {**rank_info, "time": time.time()}
    if exc is not None:
        record["error"] = f"{type(exc).__name__}: {exc}".strip()
        record["traceback"] = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    if reason:
        record["error"] = reason
    return record


def describe_failure(record: Dict[str, Any], full: bool = True) -> str:
    where = f"Rank {record.get('rank', '?')} of {record.get('world_size', '?')}"
    extras = [f"node {record['node']}" if "node" in record else "",
              f"local rank {record['local_rank']}" if "local_rank" in record else "",
              f"pid {record['pid']}" if "pid" in record else ""]
    extras = ", ".join(e for e in extras if e)
    head = f"{where} ({extras}) failed, so every rank of the job was stopped: {record.get('error', 'unknown error')}"
    if full and record.get("positions"):
        head = f"{head}\n{describe_timeout_positions(record['positions'])}"
    if full and record.get("traceback"):
        return f"{head}\n\nTraceback of rank {record.get('rank', '?')}:\n{record['traceback'].rstrip()}"
    if full or not record.get("traceback"):
        return head
    return f"{head}\n(its traceback is printed by rank 0 and by rank {record.get('rank', '?')})"


def failure_summary(record: Dict[str, Any]) -> str:
    """One line on who failed and how (for the line a restarted job logs)."""
    who = f"rank {record.get('rank', '?')} of {record.get('world_size', '?')}"
    lines = (record.get("error") or "").strip().splitlines()
    error = lines[0][:300] if lines else "unknown error"
    if record.get("victim"):
        return (f"{who} lost its connection to another rank ({error}); that rank ended without a failure record, "
                "so it was killed (SIGKILL, the out-of-memory killer) or its machine failed")
    return f"{who} failed: {error}"


def describe_timeout_positions(positions: List[Optional[Dict[str, Any]]]) -> str:
    return f"Where each rank was when the collective timed out:\n{stall.describe_positions(positions)}"


def exit_reason(returncode: int) -> str:
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        hint = " (out of memory? see `dmesg`)" if name == "SIGKILL" else ""
        return f"the process was killed by {name}{hint}"
    return f"the process exited with code {returncode}; its own output above shows why"


def is_communication_error(exc: BaseException) -> bool:
    """A collective that failed because a peer went away (the symptom, not the cause)."""
    if isinstance(exc, RankFailedError):
        return True
    dist_error = getattr(torch.distributed, "DistError", None)
    if dist_error is not None and isinstance(exc, dist_error):
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and any(
        word in text for word in ("gloo", "NCCL", "Connection closed", "Connection reset", "Broken pipe"))


def is_collective_timeout(exc: BaseException) -> bool:
    """A collective on this rank that waited longer than the process-group timeout (gloo: 'Timed out waiting',
    NCCL's watchdog: 'timeout'); not the failure of another rank."""
    text = str(exc).lower()
    return (not isinstance(exc, RankFailedError) and is_communication_error(exc)
            and ("timed out" in text or "timeout" in text))


class Watchdog:
    """The thread that notices failures elsewhere in the job (see the module docstring)."""

    def __init__(self, rank_info: Dict[str, Any]) -> None:
        self.rank_info = rank_info
        self.children: Dict[int, subprocess.Popen] = {}  # global rank -> process this one launched
        parent = os.environ.get(_LAUNCHER_PID)
        self.parent_pid = int(parent) if parent else None
        self.failure: Optional[Dict[str, Any]] = None
        self.in_stage = False  # True while this rank runs a Trainer stage (fit/validate/...)
        self._store_lock = threading.Lock()  # held by the thread while it uses the store (see `end_stage`)
        self.stopped_by_signal = False  # the Trainer stopped gracefully on a signal (every rank exits with 1)
        self._address: Optional[tuple] = None  # the rendezvous store, once known
        self._store = None
        self._store_lost = False
        self._key = failure_key()
        self._lock = threading.Lock()
        self._thread: Optional[threading.Thread] = None
        self._stop = threading.Event()  # the thread ends: at interpreter exit (`close`), or after a stage (`end_stage`)
        # graceful stop agreement (see `request_stop`)
        self.stage_runs = 0
        self.stop_wanted = False  # some rank received a stop signal
        self.stop_at: Optional[int] = None  # the batch count after which every rank stops, once agreed
        self.proposal: Optional[int] = None  # this rank's proposal, once made
        self._stop_requested = False
        self.batch_source = None  # callable: this rank's current count of finished training batches
        self.rendezvous_done = False  # the process group is up (before that, a lost store means rank 0 ended)
        # where this rank is (stall.py), and the stall report
        self._position_source: Optional[weakref.ref] = None  # the running Trainer's (stall.PositionSource)
        self._training_thread: Optional[int] = None
        self.stall_warning = 0.0  # seconds without a change before rank 0 reports; 0: never
        self.timeout: Optional[timedelta] = None  # the process group's, named in the report
        self._where: Optional[str] = None
        self._since = 0.0  # when `_where` last changed (time.monotonic)
        self._left: Optional[tuple] = None  # the previous position: (where, since, left at)
        self._publish_s = PUBLISH_S
        self._next_publish = 0.0
        self._beat = 0  # counts this rank's publications
        self._beats: Dict[int, tuple] = {}  # rank 0: each rank's last publication count, and when it changed
        self._previous: Dict[int, str] = {}  # rank 0: where each rank was at the last read
        self._reported: Optional[Dict[int, str]] = None  # rank 0: the stalled ranks of the last report, and where

    def start(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="volt-watchdog", daemon=True)
            self._thread.start()

    def close(self) -> None:
        """At interpreter exit: end the thread first. A daemon thread still running while Python finalizes is torn
        down wherever it is; inside torch's C++ code that aborts the process ("terminate called without an active
        exception") after a run that succeeded."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5.0)

    def watch_store(self, host: str, port: int) -> None:
        """Follow the rendezvous store at host:port (a client of its own, connected once the store is up)."""
        self._address = (host, port)

    def _connected_store(self):
        if self._store is None and self._address is not None and not self._store_lost:
            self._store = connect_store(*self._address)
            if self._store is not None:
                self._check_world_size(self._store)
        return self._store

    def _check_world_size(self, store) -> None:
        """Ranks configured for different world sizes would wait at the rendezvous until its timeout: the first
        rank to connect writes its world size; one that disagrees fails the job at once."""
        mine = str(self.rank_info["world_size"])
        try:
            theirs = store.compare_set(self._key + "/world_size", "", mine).decode()
        except Exception:
            return
        if theirs == mine:
            return
        record = failure_record(self.rank_info, reason=(
            f"MisconfigurationException: this rank expects {mine} processes in the job, another rank expects "
            f"{theirs}. Give every node the same devices and num_nodes (or WORLD_SIZE)."))
        with self._lock:
            self.failure = self.failure or record
        try:
            store.compare_set(self._key, "", json.dumps(record))
        except Exception:
            pass
        _exit_now(describe_failure(record))

    def publish(self, record: Dict[str, Any]) -> Dict[str, Any]:
        """Record a failure for every rank to see; the first record written wins and is returned."""
        with self._lock:
            if self.failure is None:
                self.failure = record
        store = self._connected_store()
        if store is None:
            return self.failure
        try:
            return json.loads(store.compare_set(self._key, "", json.dumps(record)))
        except Exception:
            return self.failure

    # ------------------------------------------------------------------ graceful stop on a signal
    def begin_stage(self, position_source, stall_warning: float, timeout: timedelta) -> None:
        """A new Trainer stage, run by the calling thread: forget the previous stage's stop agreement (its store
        keys are per stage), and follow the position the Trainer publishes (a `stall.PositionSource`)."""
        self.stage_runs += 1
        self.stop_wanted, self.stop_at, self.proposal, self._stop_requested = False, None, None, False
        # the watchdog outlives Trainers
        self._position_source = weakref.ref(position_source) if position_source is not None else None
        self._training_thread = threading.get_ident()
        self.stall_warning, self.timeout = stall_warning, timeout
        self._publish_s = min(PUBLISH_S, stall_warning / 4) if stall_warning > 0 else PUBLISH_S
        self.in_stage = True

    def end_stage(self) -> None:
        """The Trainer stage is over: from now on this thread leaves the store alone. Waits for a store call in
        flight, so that the process never exits while the thread is inside one: torn down in C++ code at
        interpreter exit, the thread would abort the process ("terminate called without an active exception").
        Between stages the thread only watches the ranks this process launched and its own launcher; with neither
        (torchrun's ranks, one process) it ends here, and the next stage starts it again."""
        with self._store_lock:
            self.in_stage = False
        if not self.children and self.parent_pid is None:  # nothing to watch until the next stage: no thread left
            self.close()

    def request_stop(self) -> None:
        """This rank received a stop signal. Every rank must stop after the same batch, and volt adds no per-step
        collective to agree on it: instead this thread and its peers agree through the rendezvous store. Each rank
        proposes its current batch count + 1 (its watchdog does, so a rank blocked in a collective proposes too);
        the agreed stop is the largest proposal, and no rank runs past its own proposal before the agreement is
        known (`StopSignals.check`), so no rank can already be past the agreed batch."""
        self._stop_requested = True
        self.stop_wanted = True

    def _agree_on_stop(self, store) -> None:
        if self.stop_at is not None or self.batch_source is None:
            return
        prefix = f"{self._key}/stop/{self.stage_runs}"
        world = int(self.rank_info["world_size"])
        if self._stop_requested and self.proposal is None:
            self._propose(store, prefix)
        count = int(store.add(prefix + "/count", 0))
        if count and self.proposal is None:
            self.stop_wanted = True
            self._propose(store, prefix)
            count = int(store.add(prefix + "/count", 0))
        if count >= world:
            self.stop_at = max(int(store.get(f"{prefix}/{rank}")) for rank in range(world))

    def _propose(self, store, prefix: str) -> None:
        proposal = int(self.batch_source()) + 1
        store.set(f"{prefix}/{self.rank_info['rank']}", str(proposal))
        self.proposal = proposal
        store.add(prefix + "/count", 1)

    def peer_failure(self, wait_s: float = 0.0) -> Optional[Dict[str, Any]]:
        """The failure of another rank, if one is known (waiting up to `wait_s` for the watchdog to learn it)."""
        deadline = time.monotonic() + wait_s
        while True:
            failure = self.failure
            if failure is not None and failure.get("rank") != self.rank_info["rank"]:
                return failure
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.05)

    def stop_children(self) -> None:
        stop_processes(list(self.children.values()))

    # ------------------------------------------------------------------ where every rank is
    def _position_key(self, rank: int) -> str:
        return f"{self._key}/where/{rank}"

    def _publish_position(self) -> None:
        """Publish where this rank is (every `_publish_s`, inside a Trainer stage); on rank 0, report a stall. Uses
        the store client only once `_look` connected it, and leaves a lost store to `_look`."""
        now = time.monotonic()
        source = self._position_source() if self._position_source is not None else None
        if (not self.in_stage or self._store is None or source is None or self.failure is not None
                or now < self._next_publish):
            return
        self._next_publish = now + self._publish_s
        try:
            frame = stall.current_frame(self._training_thread)
            here = stall.position(source, frame, self.rendezvous_done)
            del frame
        except Exception as exc:  # a Trainer in the middle of being set up or torn down
            here = {"where": f"unknown ({type(exc).__name__})", "place": "unknown", "waiting": False}
        if here["where"] != self._where:
            self._left = (self._where, self._since, now)
            self._where, self._since = here["where"], now
        self._beat += 1
        here.update({"for": round(now - self._since, 1), "beat": self._beat, "time": time.time()})
        with self._store_lock:
            if not self.in_stage or self._store is None:  # the stage ended meanwhile (`end_stage`)
                return
            try:
                self._store.set(self._position_key(self.rank_info["rank"]), json.dumps(here))
                if self.rank_info["rank"] == 0 and self.stall_warning > 0:
                    self._report_stall(self._read_positions(self._store))
            except Exception:  # the store went away: `_look` tells why, if it matters
                pass

    def _read_positions(self, store) -> List[Optional[Dict[str, Any]]]:
        """Every rank's last published position (None for a rank that has published none)."""
        keys = [self._position_key(rank) for rank in range(int(self.rank_info["world_size"]))]
        present = keys if store.check(keys) else [key for key in keys if store.check([key])]
        values = dict(zip(present, store.multi_get(present))) if present else {}
        return [json.loads(values[key]) if key in values else None for key in keys]

    def _report_stall(self, positions: List[Optional[Dict[str, Any]]]) -> None:
        """Log every rank's position once per stall: when a rank inside a Trainer call has not moved for
        `stall_warning` seconds, and not again until every rank of that report has moved.

        A published position can be a period old, and a rank may have moved since. So the report waits until the
        positions are settled: every rank published again since the last read and is where it was then, or is
        advancing (moved at its last publication), or has been silent for several periods (hung, or exited: it is
        marked so). Ranks passing quickly through different collectives are then never reported out of step."""
        now = time.monotonic()
        previous, self._previous = self._previous, {rank: p["where"] for rank, p in enumerate(positions) if p}
        settled, stalled = True, {}
        for rank, p in enumerate(positions):
            if p is None:
                continue
            beat, seen = self._beats.get(rank, (None, now))
            if p["beat"] != beat:
                self._beats[rank] = (p["beat"], now)
            elif now - seen > 3 * self._publish_s:
                p["silent"] = now - seen
                continue
            else:  # not published since the last read: wait for its next position
                settled = False
                continue
            if p["for"] == 0:
                continue
            if previous.get(rank) != p["where"]:
                settled = False
            elif p["for"] >= self.stall_warning:
                stalled[rank] = p["where"]
        if self._reported is not None:
            if any(positions[rank] is not None and positions[rank]["where"] == where
                   for rank, where in self._reported.items()):
                return
            self._reported = None
        if not (settled and stalled):
            return
        self._reported = stalled
        log.warning(
            f"Ranks have stopped advancing: a rank has not moved for {self.stall_warning:g} s (stall_warning).\n"
            f"{stall.describe_positions(positions)}\n"
            f"If they stay there, the job fails when the collective timeout ({self.timeout}) runs out.")

    def positions_at_failure(self, exc: BaseException) -> List[Optional[Dict[str, Any]]]:
        """Every rank's position for the failure record of `exc`, a collective that timed out: this rank's from
        where it was raised, the others' as last published."""
        me = self.rank_info["rank"]
        try:
            positions = self._read_positions(self._store) if self._store is not None else None
        except Exception:
            positions = None
        positions = positions or [None] * int(self.rank_info["world_size"])
        source = self._position_source() if self._position_source is not None else None
        if source is not None:
            mine = stall.position(source, stall.innermost_frame(exc), self.rendezvous_done)
            left = self._left  # the watchdog may have seen this rank leave the collective already
            if mine["where"] == self._where:
                mine["for"] = round(time.monotonic() - self._since, 1)
            elif left is not None and mine["where"] == left[0]:
                mine["for"] = round(left[2] - left[1], 1)
            else:  # raised before the watchdog saw it there: it waited the whole timeout
                mine["for"] = self.timeout.total_seconds()
            positions[me] = mine
        return positions

    # ------------------------------------------------------------------ the thread
    def _run(self) -> None:
        while not self._stop.wait(POLL_S):
            record = self._look()
            if record is not None:
                self._handle(record)
                return
            self._publish_position()

    def _look(self) -> Optional[Dict[str, Any]]:
        if self.failure is not None:  # this rank failed itself: stop the local ranks it launched
            if self.children:
                self.stop_children()
            return None
        me = self.rank_info
        for rank, proc in self.children.items():  # this process is local rank 0; its children follow it
            code = proc.poll()
            if code not in (None, 0):
                info = {**me, "rank": rank, "local_rank": rank - me["rank"], "pid": proc.pid}
                return self.publish(failure_record(info, reason=exit_reason(code)))
        if self.parent_pid is not None and os.getppid() != self.parent_pid:
            info = {**me, "rank": me["rank"] - me["local_rank"], "local_rank": 0, "pid": self.parent_pid}
            return failure_record(info, reason="the launcher process (local rank 0 of this node) died")
        with self._store_lock:
            if not self.in_stage:
                return None
            store = self._connected_store()
            if store is not None:
                try:
                    if store.check([self._key]):
                        return json.loads(store.get(self._key))
                    self._agree_on_stop(store)
                except Exception:  # the store host is gone; a dead peer shows up in the collectives or channels
                    self._store, self._store_lost = None, True
                    if not self.rendezvous_done:  # ...but nothing would show it to a rank still at the rendezvous
                        me = self.rank_info
                        host = {**me, "rank": 0, "local_rank": 0, "pid": "?"}
                        return failure_record(host, reason=(
                            "the rendezvous store went away before every rank joined (its host, rank 0, ended); "
                            "see that rank's output for why"))
        return None

    def _handle(self, record: Dict[str, Any]) -> None:
        with self._lock:
            if self.failure is None:
                self.failure = record
        if record.get("rank") == self.rank_info["rank"]:
            return
        self.stop_children()
        deadline = time.monotonic() + GRACE_S
        while time.monotonic() < deadline:
            if not self.in_stage:
                return  # the training loop unwound by itself and reports the failure
            time.sleep(0.05)
        me = self.rank_info["rank"]
        _exit_now(f"rank {me} is exiting: {describe_failure(record, full=me == 0)}")


def _exit_now(message: str) -> None:
    """End this process from the watchdog thread: the main thread may be blocked in a collective."""
    sys.stderr.write(f"\n[volt] {message}\n")
    sys.stderr.flush()
    sys.stdout.flush()
    os._exit(1)


def failure_key(attempt: Optional[int] = None) -> str:
    """The store key of this job's failure record, per attempt (default: this one): restarts by torch's elastic
    agent share one store, and each attempt gets fresh keys."""
    run = os.environ.get("TORCHELASTIC_RUN_ID", "")
    attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") if attempt is None else attempt
    return f"volt/failure/{run}/{attempt}"


def previous_attempt() -> Optional[Dict[str, Any]]:
    """In a group restarted by torch's elastic agent, what the previous attempt left in the agent's store (which
    outlives restarts): its failure record ("failure"), the furthest global step its ranks reached ("step", from
    the record and their published positions) and when it failed ("time": the record's time, else when its ranks
    last published). None without such a store (torchrun without an agent store, one process) or when nothing was
    left."""
    attempt = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") or 0)
    if attempt == 0 or os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True":
        return None
    store = connect_store(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]))
    if store is None:
        return None
    key = failure_key(attempt - 1)
    keys = [key] + [f"{key}/where/{rank}" for rank in range(int(os.environ.get("WORLD_SIZE", "1")))]
    try:
        found = [json.loads(store.get(k)) if store.check([k]) else None for k in keys]
    except Exception:  # the store went away
        return None
    failure, positions = found[0], [p for p in found[1:] if p is not None]
    steps = [p["step"] for p in positions + [failure or {}] if p.get("step") is not None]
    seen = [p["time"] for p in positions if "time" in p]
    if failure is None and not positions:
        return None
    return {"failure": failure, "step": max(steps) if steps else None,
            "time": failure["time"] if failure and "time" in failure else (max(seen) if seen else None)}


def connect_store(host: str, port: int):
    """A client of the rendezvous store, or None if it is not (or no longer) up."""
    import socket

    try:  # a silent probe first: torch logs every failed store connection
        socket.create_connection((host, port), timeout=0.5).close()
        return torch.distributed.TCPStore(host, port, is_master=False, timeout=timedelta(seconds=2),
                                          wait_for_workers=False)
    except Exception:
        return None


def announce_failure(record: Dict[str, Any]) -> None:
    """Publish a failure that happened before this rank had a watchdog (e.g. a bad Trainer argument on one node),
    so ranks already waiting at the rendezvous stop instead of waiting for the timeout."""
    if "MASTER_ADDR" not in os.environ or "MASTER_PORT" not in os.environ:
        return
    store = connect_store(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]))
    if store is not None:
        try:
            store.compare_set(failure_key(), "", json.dumps(record))
        except Exception:
            pass


_WATCHDOG: Optional[Watchdog] = None


def process_watchdog(rank_info: Dict[str, Any]) -> Watchdog:
    """The watchdog of this process, shared by every Trainer in it (it owns the local ranks launched here)."""
    global _WATCHDOG
    if _WATCHDOG is None:
        _WATCHDOG = Watchdog(rank_info)
        # registered first, so it runs last at exit: after the wait for the launched ranks, which it watches
        atexit.register(_WATCHDOG.close)
    _WATCHDOG.rank_info = rank_info
    return _WATCHDOG


def stop_processes(processes: List[Any]) -> None:
    """SIGTERM every live process, then SIGKILL the ones still alive after KILL_GRACE_S."""
    alive = [p for p in processes if _alive(p)]
    for p in alive:
        _signal(p, signal.SIGTERM)
    deadline = time.monotonic() + KILL_GRACE_S
    while alive and time.monotonic() < deadline:
        time.sleep(0.02)
        alive = [p for p in alive if _alive(p)]
    for p in alive:
        _signal(p, signal.SIGKILL)
    for p in processes:
        try:
            p.wait() if isinstance(p, subprocess.Popen) else p.join()
        except Exception:
            pass


def _alive(process: Any) -> bool:
    return process.poll() is None if isinstance(process, subprocess.Popen) else process.is_alive()


def _signal(process: Any, sig: int) -> None:
    try:
        os.kill(process.pid, sig)
    except (ProcessLookupError, TypeError):
        pass


# ====================================================================== "ddp": re-run the script
def script_command() -> List[str]:
    """The command line that started this process, to start the other local ranks with. A program run with
    `volt run` (a Lightning program on volt) is run that way again."""
    import __main__

    python = [sys.executable, "-m", "volt", "run"] if os.environ.get(RUN_ENV_FLAG) == "1" else [sys.executable]
    spec = getattr(__main__, "__spec__", None)
    if spec is not None and spec.name:
        module = spec.name[: -len(".__main__")] if spec.name.endswith(".__main__") else spec.name
        return [*python, "-m", module, *sys.argv[1:]]
    script = sys.argv[0] if sys.argv else ""
    if not script or script == "-c" or not os.path.exists(script):
        raise MisconfigurationException(
            "strategy='ddp' starts the other ranks by running your script again, but this process was not started "
            "from a script (interactive session, notebook or `python -c`). Use strategy='ddp_notebook' (fork) or "
            "'ddp_spawn', or put the code in a file and run `python file.py`."
        )
    return [*python, os.path.abspath(script), *sys.argv[1:]]


class ScriptLauncher:
    """Starts local ranks 1..N-1 of this node by re-running this process's command (see the module docstring)."""

    def __init__(self, num_local: int, node_rank: int, world_size: int, main_address: str, main_port: int) -> None:
        self.num_local = num_local
        self.node_rank = node_rank
        self.world_size = world_size
        self.main_address = main_address
        self.main_port = main_port

    def start(self, watchdog: Watchdog) -> None:
        command = script_command()
        shared = {"MASTER_ADDR": self.main_address, "MASTER_PORT": str(self.main_port),
                  "NODE_RANK": str(self.node_rank), "WORLD_SIZE": str(self.world_size)}
        os.environ.update(shared)
        os.environ["LOCAL_RANK"] = "0"  # this process is local rank 0 now: a second fit() must not launch again
        base_rank = self.node_rank * self.num_local
        for local_rank in range(1, self.num_local):
            env = {**os.environ, **shared, "LOCAL_RANK": str(local_rank), "RANK": str(base_rank + local_rank),
                   _LAUNCHER_PID: str(os.getpid())}
            # a session of their own: a terminal's Ctrl-C reaches them once, through the relay below
            watchdog.children[base_rank + local_rank] = subprocess.Popen(command, env=env, start_new_session=True)
        relay_signals(watchdog)
        atexit.register(_wait_for_children, watchdog)


_RELAYED = {int(getattr(signal, name)) for name in ("SIGINT", "SIGTERM", "SIGUSR1", "SIGUSR2", "SIGHUP")
            if hasattr(signal, name)}


def relay_signals(watchdog: Watchdog) -> None:
    """Pass the stop signals this process receives (SIGINT, SIGTERM, SIGUSR1/2, SIGHUP) on to its local ranks at
    once, whoever handles them here (the Trainer's graceful stop does during fit), so every rank acts on the same
    signal at the same time. Uses Python's signal wakeup fd, which every Python-level handler writes to; if another
    component (an event loop) already owns it, signals are not relayed."""
    import socket

    receiver, sender = socket.socketpair()
    sender.setblocking(False)
    try:
        previous = signal.set_wakeup_fd(sender.fileno(), warn_on_full_buffer=False)
    except ValueError:  # not the main thread
        return
    if previous != -1:
        signal.set_wakeup_fd(previous)
        return

    def relay() -> None:
        while True:
            for signum in receiver.recv(64):
                if signum in _RELAYED:
                    for proc in watchdog.children.values():
                        if proc.poll() is None:
                            _signal(proc, signum)

    threading.Thread(target=relay, name="volt-signal-relay", daemon=True).start()
    watchdog.relay_sockets = (receiver, sender)  # kept open for the life of the process


def _wait_for_children(watchdog: Watchdog) -> None:
    """At exit, wait for the ranks this process launched (they run the same script), and exit non-zero if one
    failed."""
    try:
        for proc in watchdog.children.values():
            proc.wait()
    except KeyboardInterrupt:
        watchdog.stop_children()
        raise
    failed = {rank: p.returncode for rank, p in watchdog.children.items() if p.returncode != 0}
    if failed:
        if watchdog.failure is None and not watchdog.stopped_by_signal:  # else it was reported already
            rank, code = sorted(failed.items())[0]
            sys.stderr.write(f"\n[volt] rank {rank} failed: {exit_reason(code)}\n")
        sys.stderr.flush()
        sys.stdout.flush()
        os._exit(1)


# ====================================================================== "ddp" with restarts
class RestartsExhaustedError(RuntimeError):
    """A rank failed again after the last restart `max_restarts` allows."""


class ElasticLauncher:
    """Runs this process's command in every local rank under torch's elastic agent, which restarts the whole group
    when a rank fails, at most `max_restarts` times (see the module docstring).

    This process trains nothing: as under torchrun, the whole script, including the code after `fit`, runs in the
    ranks, and this process exits when the group ends: with status 0 once every rank succeeded, else with
    `RestartsExhaustedError` naming the rank that failed last.
    """

    def __init__(self, num_local: int, max_restarts: int, main_address: str, main_port: int) -> None:
        self.num_local = num_local
        self.max_restarts = max_restarts
        self.main_address = main_address
        self.main_port = main_port

    def run(self) -> None:
        from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
        from torch.distributed.launcher.api import LaunchConfig, elastic_launch

        command = script_command()
        config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=self.num_local, run_id=f"volt-{os.getpid()}",
                              rdzv_backend="static", rdzv_endpoint=f"{self.main_address}:{self.main_port}",
                              rdzv_configs={"rank": 0}, max_restarts=self.max_restarts)
        log.info(f"Running {self.num_local} ranks under torch's elastic agent: after a failure the group is restarted "
                 f"(at most {self.max_restarts} time{'s' if self.max_restarts != 1 else ''}) and resumes from the "
                 "newest checkpoint.")
        try:
            elastic_launch(config, command[0])(*command[1:])
        except ChildFailedError as err:
            rank, failure = err.get_first_failure()
            raise RestartsExhaustedError(
                f"Rank {rank} (local rank {failure.local_rank}, pid {failure.pid}) failed after the last restart "
                f"that max_restarts={self.max_restarts} allows: {exit_reason(failure.exitcode)}. The job stops "
                "here; a later run resumes with `trainer.fit(..., ckpt_path='last')`."
            ) from None
        raise SystemExit(0)


# ====================================================================== "ddp_spawn" / "ddp_fork"
class SpawnLauncher:
    """Starts every local rank with multiprocessing ("spawn" or "fork") and waits for them.

    Rank 0 sends back what the main process needs (trained weights, metrics, checkpoint paths, the stage result);
    the strategy applies it to the user's objects here.
    """

    def __init__(self, start_method: str, num_local: int) -> None:
        self.start_method = start_method
        self.num_local = num_local

    def launch(self, strategy, function: Callable, args: tuple) -> Any:
        import multiprocessing.connection

        import torch.multiprocessing as mp

        if self.start_method == "fork" and torch.cuda.is_available() and torch.cuda.is_initialized():
            raise MisconfigurationException(
                "strategy='ddp_fork'/'ddp_notebook' cannot fork after CUDA was initialized in the main process. "
                "Restart the session and avoid CUDA calls before `trainer.fit`, or use strategy='ddp_spawn'."
            )
        context = mp.get_context(self.start_method)
        queue = context.SimpleQueue()
        processes = [
            context.Process(target=_spawned_rank, args=(local_rank, strategy, function, args, queue, os.getpid()),
                            name=f"volt-rank-{local_rank}")
            for local_rank in range(self.num_local)
        ]
        for p in processes:
            p.start()
        received: Dict[str, Any] = {"result": None, "error": [], "stopped": []}
        first_failed: List[int] = []
        interrupted = []

        def on_sigint(signum, frame):  # the ranks got Ctrl-C too: let them stop gracefully; twice stops at once
            if interrupted:
                raise KeyboardInterrupt
            interrupted.append(signum)

        previous = _set_sigint(on_sigint)
        try:
            pending = {p.sentinel: p for p in processes}
            while pending and not first_failed:
                ready = multiprocessing.connection.wait(list(pending) + [queue._reader], timeout=POLL_S)
                self._drain(queue, received)
                ended = [pending.pop(s) for s in ready if s in pending]
                for p in ended:
                    p.join()  # the sentinel fires at exit; join collects the exit code
                stopped = {e.rank for e in received["stopped"]}
                first_failed = [processes.index(p) for p in ended
                                if p.exitcode != 0 and processes.index(p) not in stopped]
        except BaseException:
            stop_processes(processes)
            raise
        finally:
            _set_sigint(previous)
        stop_processes(processes)
        self._drain(queue, received)
        if received["stopped"] and not first_failed:
            raise received["stopped"][0].exception  # a graceful stop on a signal, as in one process
        if interrupted and not first_failed:
            raise KeyboardInterrupt
        if first_failed or received["result"] is None:
            cause = self._root_cause(first_failed, processes, received["error"], strategy)
            if "traceback" in cause:  # it raised (not killed)
                raise SpawnedRankRaisedError(cause, cause.get("local_rank", 0))
            raise RankFailedError(cause)
        return torch.load(io.BytesIO(received["result"]), weights_only=False)

    @staticmethod
    def _drain(queue, received: Dict[str, Any]) -> None:
        while not queue.empty():
            kind, value = queue.get()
            if kind == "result":
                received["result"] = value
            else:
                received[kind].append(value)

    def _root_cause(self, first_failed: List[int], processes, errors: List[Dict[str, Any]],
                    strategy) -> Dict[str, Any]:
        """The rank that failed first: one that raised, else one that was killed or exited non-zero."""
        base = strategy.node_rank * self.num_local
        raised = [e for e in errors if not e.get("victim")]
        for local_rank in first_failed:
            for error in raised:
                if error.get("rank") == base + local_rank:
                    return error
        if raised:
            return min(raised, key=lambda e: e["rank"])
        for local_rank in first_failed or [i for i, p in enumerate(processes) if p.exitcode]:
            p = processes[local_rank]
            info = {"rank": base + local_rank, "world_size": strategy.world_size, "local_rank": local_rank,
                    "pid": p.pid}
            return failure_record(info, reason=exit_reason(p.exitcode))
        if errors:
            return errors[0]
        return failure_record(strategy.rank_info(), reason="rank 0 ended without sending its results back")


class _Stopped:
    """A spawned rank's graceful stop, sent back so that the main process raises the same exception."""

    def __init__(self, rank: int, exception: BaseException) -> None:
        self.rank, self.exception = rank, exception


def _set_sigint(handler):
    """Install a SIGINT handler if this is the main thread; returns the previous one (None if not installed)."""
    if handler is None:
        return None
    try:
        return signal.signal(signal.SIGINT, handler)
    except ValueError:
        return None


def is_graceful_stop(exc: BaseException) -> bool:
    """The Trainer stopped on SIGTERM/Ctrl-C after saving a checkpoint (trainer/signals.py): not a failure."""
    return isinstance(exc, TrainingStopped)


def _spawned_rank(local_rank: int, strategy, function: Callable, args: tuple, queue, launcher_pid: int) -> None:
    """The body of one spawned rank: run the stage; rank 0 sends the results back; failures go back as records."""
    global _WATCHDOG
    _WATCHDOG = None  # a forked rank must not inherit the launching process's watchdog
    os.environ[_LAUNCHER_PID] = str(launcher_pid)
    strategy.set_local_rank(local_rank)
    module = strategy.lightning_module
    if module is not None:  # spawn hands tensors over in shared memory: each rank needs weights of its own
        for tensor in list(module.parameters()) + list(module.buffers()):
            if tensor.is_shared():
                tensor.data = tensor.data.clone()
    try:
        output = strategy.run_guarded(function, *args)
    except BaseException as exc:
        if is_graceful_stop(exc):
            queue.put(("stopped", _Stopped(local_rank, exc)))
        else:
            # a rank stopped by another's failure (or by a broken connection) is a symptom, not the cause
            victim = isinstance(exc, RankFailedError) or is_communication_error(exc)
            queue.put(("error", {**failure_record(strategy.rank_info(), exc), "victim": victim}))
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(1)
    if strategy.global_rank == 0:
        buffer = io.BytesIO()
        torch.save(output, buffer)
        queue.put(("result", buffer.getvalue()))
