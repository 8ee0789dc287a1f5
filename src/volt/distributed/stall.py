"""Where each rank is, for the report when ranks stop advancing (see `launcher.Watchdog`).

A rank that waits in a collective the others never call (say `strategy.barrier()` under `if global_rank == 0`)
waits until the process-group timeout, and torch then names no one. So each rank's watchdog thread samples, about
once a second, where its training thread is: the loop's place in words, from the position source the Trainer hands the
strategy (`PositionSource`: plain attribute reads from the other thread), and, from that thread's Python stack, the
collective it waits in and who called it. Nothing runs on the
training path. Ranks publish their position in the rendezvous store; rank 0 reports a stall once, and a collective
that times out carries every rank's position in its failure record.

A position is plain data: `where` (the text shown), `place` (the loop part: stage and counters), `waiting` (in a
collective, backward's gradient all-reduce included, or at the rendezvous), `for` (seconds since `where` last changed), `beat` (counts the rank's publications) and, added by the reader,
`silent` (seconds since the rank last published, when that is long). `step` (optimizer steps done in fit) and
`time` (wall clock, added by the watchdog) tell a restarted job what the failure cost (trainer/recovery.py).
"""
import os
import sys
import sysconfig
from typing import Any, Dict, FrozenSet, List, Optional, Protocol, Tuple

import torch

_TORCH_DIR = os.path.dirname(torch.__file__) + os.sep
_VOLT_DIST = os.path.dirname(os.path.abspath(__file__)) + os.sep
_VOLT_DIR = os.path.dirname(_VOLT_DIST.rstrip(os.sep)) + os.sep
_STRATEGY_FILE = _VOLT_DIST + "parallel.py"
_C10D_FILE = os.path.join(_TORCH_DIR, "distributed", "distributed_c10d.py")
# ParallelStrategy's collectives (DDPStrategy and FSDPStrategy inherit them)
_COLLECTIVES = {"barrier", "broadcast", "reduce", "all_gather", "gather_object", "reduce_boolean_decision"}
_STDLIB = sysconfig.get_paths()["stdlib"] + os.sep
_SITE = tuple({sysconfig.get_paths()[key] + os.sep for key in ("purelib", "platlib")})
JOINING = "joining the process group (init_process_group)"


class PositionSource(Protocol):
    """What the running Trainer publishes for these reports (its LoopPosition implements it)."""

    loop_files: FrozenSet[str]  # the loops' source files: past them, the caller of a collective is the Trainer itself

    def place(self) -> str:  # the Trainer call and its counters, e.g. 'fit: epoch 0, 12 train batches done'
        ...

    def steps_done(self) -> Optional[int]:  # optimizer steps so far in fit, else None (a restarted job's "lost")
        ...


def position(source: PositionSource, frame, joined: bool) -> Dict[str, Any]:
    """This rank's position inside a Trainer call: `frame` is the training thread's innermost frame (or the frame a
    collective raised in); `joined` is False while the process group is still forming."""
    if not joined:
        place, detail, waiting, step = JOINING, "", True, None
    else:
        place, step = source.place(), source.steps_done()
        detail, waiting = activity(frame, source.loop_files) if frame is not None else ("", False)
    return {"where": f"{place}; {detail}" if detail else place, "place": place, "waiting": waiting, "step": step}


def activity(frame, loop_files: FrozenSet[str] = frozenset()) -> Tuple[str, bool]:
    """What the thread whose innermost frame is `frame` does, and whether it waits for other ranks: the
    collective it is in and its caller, else backward, else the innermost frame of code outside torch and the
    standard library (a user's step, a checkpoint write)."""
    frames = []
    while frame is not None:
        frames.append(frame)
        frame = frame.f_back
    outermost = None
    for index, f in enumerate(frames):
        if _is_collective(f):
            outermost = index
    if outermost is not None:
        caller = _caller(frames[outermost + 1:], loop_files)
        name = frames[outermost].f_code.co_name
        return (f"in {name}, called from {_label(caller)}" if caller is not None else f"in {name}"), True
    for f in frames:
        code = f.f_code
        if code.co_filename.startswith(_TORCH_DIR) and code.co_name in ("backward", "_engine_run_backward"):
            return "in backward", True  # under DDP, where the gradient all-reduce waits
    for f in frames:
        filename = f.f_code.co_filename
        if not (filename.startswith(_TORCH_DIR) or _is_stdlib(filename)):
            return f"in {_label(f)}", False
    return "", False


def _is_collective(frame) -> bool:
    code = frame.f_code
    return (code.co_filename == _C10D_FILE and code.co_name != "init_process_group") or (
        code.co_filename == _STRATEGY_FILE and code.co_name in _COLLECTIVES)


def _caller(frames, loop_files: FrozenSet[str]) -> Optional[Any]:
    """The code that called a collective (frames outward from it): the first frame outside torch, volt's
    strategies and the standard library, or past volt code (self.log's sync_dist, say) the user's code that
    called that, unless the Trainer's own loop comes first."""
    first = None
    for f in frames:
        filename = f.f_code.co_filename
        if filename.startswith((_TORCH_DIR, _VOLT_DIST)) or _is_stdlib(filename):
            continue
        if not filename.startswith(_VOLT_DIR):
            return f
        if first is None:
            first = f
        if filename in loop_files:
            break
    return first


def _is_stdlib(filename: str) -> bool:
    return filename.startswith("<frozen") or (filename.startswith(_STDLIB) and not filename.startswith(_SITE))


def _label(frame) -> str:
    code = frame.f_code
    name = getattr(code, "co_qualname", code.co_name)
    return f"{name} ({os.path.basename(code.co_filename)}:{frame.f_lineno})"


def current_frame(thread_id: Optional[int]):
    """The innermost frame of thread `thread_id` (the training thread), or None."""
    return sys._current_frames().get(thread_id) if thread_id is not None else None


def innermost_frame(exc: BaseException):
    """The frame `exc` was raised in."""
    tb = exc.__traceback__
    if tb is None:
        return None
    while tb.tb_next is not None:
        tb = tb.tb_next
    return tb.tb_frame


# ---------------------------------------------------------------------------------------------- the report
def describe_positions(positions: List[Optional[Dict[str, Any]]]) -> str:
    """One line per group of ranks at the same position (advancing: it changed at the rank's last publication),
    then what the positions mean."""
    groups: Dict[Any, List[int]] = {}
    for rank, p in enumerate(positions):
        key = None if p is None else (p["where"], p["for"] == 0)
        groups.setdefault(key, []).append(rank)
    lines = []
    for key, ranks in sorted(groups.items(), key=lambda item: item[1][0]):
        who, one = _ranks(ranks), len(ranks) == 1
        if key is None:
            lines.append(f"  {who} {'has' if one else 'have'} not reported a position")
        elif key[1]:
            lines.append(f"  {who} {'is' if one else 'are'} at '{key[0]}' (advancing)")
        else:
            seconds = min(positions[r]["for"] for r in ranks)
            lines.append(f"  {who} {'has' if one else 'have'} been at '{key[0]}' for {_seconds(seconds)}")
        silent = [r for r in ranks if positions[r] is not None and positions[r].get("silent")]
        if silent:
            quiet = min(positions[r]["silent"] for r in silent)
            lines[-1] += f" (no update from {_ranks(silent)} for {_seconds(quiet)}: hung, or exited)"
    return "\n".join(lines) + "\n" + verdict(positions)


OUT_OF_STEP = ("A collective (barrier, broadcast, all_gather, reduce, self.log(..., sync_dist=True)) was called on "
               "some ranks only, e.g. under `if self.global_rank == 0:`; every rank must call the same collectives "
               "in the same order.")


def verdict(positions: List[Optional[Dict[str, Any]]]) -> str:
    """What the positions mean. Ranks are out of step for sure only when every rank waits in a collective and not
    all in the same one at the same place; a rank still working may be what the others wait for. Said once
    every rank has joined the process group: until then, the late ranks are the story."""
    missing = [rank for rank, p in enumerate(positions) if p is None]
    joining = [rank for rank, p in enumerate(positions) if p is not None and p["place"] == JOINING]
    late = missing or joining
    if late:
        return (f"{_ranks(late)} {'has' if len(late) == 1 else 'have'} not joined the process group yet: still "
                "starting, not yet in a Trainer call, or unable to reach the rendezvous store on rank 0.")
    same_place = len({p["place"] for p in positions}) == 1
    busy = [rank for rank, p in enumerate(positions) if not p["waiting"]]
    waiting = {p["where"] for p in positions if p["waiting"]}
    if not busy and len(waiting) > 1:
        where = "at different places" if not same_place else "at the same place but in different collectives"
        return f"Every rank waits, {where}: they are out of step. {OUT_OF_STEP}"
    if not waiting or (same_place and not busy):
        return (f"{'Every rank is at the same place' if same_place else 'No rank waits in a collective'}: a slow "
                "step (a long batch, a checkpoint write, a slow data loader), not ranks out of step.")
    working = f"{_ranks(busy)} {'is' if len(busy) == 1 else 'are'} still working"
    if same_place:
        return (f"Every rank is at the same place; {working} there while the others wait in a collective: a slow "
                "step (a long checkpoint write, a slow batch), not ranks out of step.")
    return (f"The ranks are at different places; {working} while the others wait in a collective. If "
            f"{'it reaches' if len(busy) == 1 else 'they reach'} that collective, this is a slow step; if not, the "
            f"ranks are out of step. {OUT_OF_STEP}")


def _seconds(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds < 10 else f"{seconds:.0f} s"


def _ranks(ranks: List[int]) -> str:
    """'rank 3', 'ranks 0-2, 5'."""
    spans, start = [], ranks[0]
    for previous, rank in zip(ranks, ranks[1:] + [None]):
        if rank != previous + 1:
            spans.append(str(start) if start == previous else f"{start}-{previous}")
            start = rank
    return f"rank {spans[0]}" if len(ranks) == 1 else f"ranks {', '.join(spans)}"
