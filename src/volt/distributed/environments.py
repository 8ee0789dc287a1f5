"""Cluster environments: where a process learns its rank, the world size and the rendezvous address.

Detected in this order: torchrun (torch.distributed.elastic), SLURM, then plain environment variables
(MASTER_ADDR, MASTER_PORT, NODE_RANK, LOCAL_RANK, WORLD_SIZE), which is also what volt's own launcher sets for
the processes it starts.
"""
import os
import re
import socket
from typing import Optional

from volt.utilities.exceptions import MisconfigurationException


class ClusterEnvironment:
    """Where ranks come from. `creates_processes_externally` is True when something other than volt (torchrun,
    srun, the user) has already started one process per rank, so volt must not start more."""

    creates_processes_externally = False

    @staticmethod
    def detect() -> bool:
        raise NotImplementedError

    @property
    def main_address(self) -> str:
        return os.environ.get("MASTER_ADDR", "127.0.0.1")

    @property
    def main_port(self) -> int:
        return int(os.environ["MASTER_PORT"])

    def world_size(self) -> int:
        raise NotImplementedError

    def global_rank(self) -> int:
        raise NotImplementedError

    def local_rank(self) -> int:
        raise NotImplementedError

    def node_rank(self) -> int:
        raise NotImplementedError

    def set_world_size(self, size: int) -> None:
        """Told by the strategy (num_nodes * devices); environments that know better ignore it."""

    def set_global_rank(self, rank: int) -> None:
        """Told by the strategy; environments that know better ignore it."""

    def local_world_size(self) -> Optional[int]:
        """Processes per node, when the environment says (None when volt decides from `devices`)."""
        return None

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class LightningEnvironment(ClusterEnvironment):
    """Plain environment variables, as volt's launcher (and Lightning's) sets them.

    With no LOCAL_RANK in the environment this process is local rank 0 of its node and volt's launcher starts the
    other local ranks; MASTER_PORT is picked free if unset.
    """

    def __init__(self) -> None:
        self._world_size = 1
        self._global_rank = 0

    @staticmethod
    def detect() -> bool:
        return True

    @property
    def creates_processes_externally(self) -> bool:  # type: ignore[override]
        return "LOCAL_RANK" in os.environ

    @property
    def main_port(self) -> int:
        if "MASTER_PORT" not in os.environ:
            os.environ["MASTER_PORT"] = str(find_free_port())
        return int(os.environ["MASTER_PORT"])

    def world_size(self) -> int:
        return self._world_size

    def set_world_size(self, size: int) -> None:
        self._world_size = size

    def global_rank(self) -> int:
        return self._global_rank

    def set_global_rank(self, rank: int) -> None:
        self._global_rank = rank

    def local_rank(self) -> int:
        return int(os.environ.get("LOCAL_RANK", 0))

    def node_rank(self) -> int:
        return int(os.environ.get("NODE_RANK", os.environ.get("GROUP_RANK", 0)))


class TorchElasticEnvironment(ClusterEnvironment):
    """torchrun / torch.distributed.elastic: every rank was started by torchrun, which set all the variables."""

    creates_processes_externally = True

    @staticmethod
    def detect() -> bool:
        required = ("RANK", "GROUP_RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE")
        return "TORCHELASTIC_RUN_ID" in os.environ or all(key in os.environ for key in required)

    @property
    def main_address(self) -> str:
        return _require("MASTER_ADDR", "torchrun")

    @property
    def main_port(self) -> int:
        return int(_require("MASTER_PORT", "torchrun"))

    def world_size(self) -> int:
        return int(_require("WORLD_SIZE", "torchrun"))

    def global_rank(self) -> int:
        return int(_require("RANK", "torchrun"))

    def local_rank(self) -> int:
        return int(_require("LOCAL_RANK", "torchrun"))

    def node_rank(self) -> int:
        return int(os.environ.get("GROUP_RANK", 0))

    def local_world_size(self) -> Optional[int]:
        return int(os.environ["LOCAL_WORLD_SIZE"]) if "LOCAL_WORLD_SIZE" in os.environ else None


class SLURMEnvironment(ClusterEnvironment):
    """A SLURM job step started with `srun`: one task per rank. Interactive allocations (`salloc` then python)
    are not srun steps and fall through to plain environment variables.

    `auto_requeue=False` leaves the requeue signal alone: the job is not requeued when SLURM signals that its time is
    up. `requeue_signal` is that signal (default SIGUSR1, or `VOLT_REQUEUE_SIGNAL`); see `volt/trainer/signals.py`.
    """

    creates_processes_externally = True

    def __init__(self, auto_requeue: bool = True, requeue_signal: Optional[int] = None) -> None:
        self.auto_requeue = auto_requeue
        self.requeue_signal = requeue_signal

    @staticmethod
    def detect() -> bool:
        if "SLURM_NTASKS" not in os.environ:
            return False
        return os.environ.get("SLURM_JOB_NAME") not in ("bash", "interactive")

    @property
    def main_address(self) -> str:
        if "MASTER_ADDR" in os.environ:
            return os.environ["MASTER_ADDR"]
        nodelist = os.environ.get("SLURM_NODELIST", os.environ.get("SLURM_JOB_NODELIST", "127.0.0.1"))
        return first_slurm_host(nodelist)

    @property
    def main_port(self) -> int:
        if "MASTER_PORT" in os.environ:
            return int(os.environ["MASTER_PORT"])
        # every task of the job must pick the same port without talking: derive it from the job id
        job_id = os.environ.get("SLURM_JOB_ID", "0")
        return 15000 + int(job_id[-4:]) if job_id[-4:].isdigit() else 15000

    def world_size(self) -> int:
        # srun sets it; where something else made detect() true (a wrapper, a test's mock), that is one task
        return int(os.environ.get("SLURM_NTASKS", "1"))

    def global_rank(self) -> int:
        return int(_require("SLURM_PROCID", "SLURM"))

    def local_rank(self) -> int:
        return int(_require("SLURM_LOCALID", "SLURM"))

    def node_rank(self) -> int:
        return int(_require("SLURM_NODEID", "SLURM"))

    def local_world_size(self) -> Optional[int]:
        per_node = os.environ.get("SLURM_NTASKS_PER_NODE", "")
        match = re.match(r"^(\d+)", per_node)
        return int(match.group(1)) if match else None


def first_slurm_host(nodelist: str) -> str:
    """The first host of a SLURM node list: "node[003-005,7],gpu1" -> "node003"."""
    first = re.split(r",(?![^\[]*\])", nodelist.strip())[0]
    match = re.match(r"^([^\[]*)\[([^\]]*)\]", first)
    if not match:
        return first
    prefix, ranges = match.groups()
    return prefix + ranges.split(",")[0].split("-")[0]


def detect_environment() -> ClusterEnvironment:
    """The environment this process runs in: torchrun, then SLURM, then plain environment variables."""
    for env_type in (TorchElasticEnvironment, SLURMEnvironment):
        if env_type.detect():
            return env_type()
    return LightningEnvironment()


def find_free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


find_free_network_port = find_free_port  # Lightning's name


def _require(key: str, source: str) -> str:
    if key not in os.environ:
        raise MisconfigurationException(
            f"The {source} environment was detected, but {key} is not set. Start the job with {source}'s own "
            "launcher (which sets it), or unset the variables that made volt think it runs under it."
        )
    return os.environ[key]
