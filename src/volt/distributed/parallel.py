"""Multi-process training on torch.distributed: what every data-parallel strategy shares (`ParallelStrategy`).

One process per device. The process group is gloo on CPU and nccl on CUDA; ranks come from the cluster
environment (torchrun, SLURM, or volt's own launcher). Each rank runs the whole Trainer. Failures are watched off
the training path by `launcher.Watchdog`, which also publishes where each rank is for stall reports (stall.py).

Checkpoints come in two forms (`state_dict_type`). "full": one file in the single-device layout, written by rank 0;
the model and optimizer state are whole (FSDP gathers them to rank 0), and each rank's own training state (its RNG
streams, `self.log` epoch accumulators, the position of a stateful stream) is gathered into it (`gather_object`, at
saves only, never per step).
"sharded": a folder that every rank writes its own part of, in parallel, with torch.distributed.checkpoint
(volt/sharded_checkpoint.py): FSDP's shards by their owners, replicated tensors spread over the ranks, each rank's own
training state by that rank; nothing is gathered. Either form loads into any strategy on any number of ranks.
Inside a gradient-accumulation window each rank has summed the gradients of its own batches (accumulating batches
skip the all-reduce): a checkpoint written there first averages them over the ranks, in place, as the window's last
backward would, and stores that one average. So no checkpoint grows with world size x model size, and the run that
saved continues from exactly what a resumed run starts from.

A rank that dies ends the job (launcher.py), unless restarts are allowed: `max_restarts` (or VOLT_MAX_RESTARTS)
runs the ranks under torch's elastic agent, as `torchrun --max-restarts` does, and a restarted group resumes from
the newest checkpoint by itself (trainer/recovery.py).

On the same number of ranks, with the same seed (the sample order is a function of the seed and the epoch), each
rank takes back its own state and the resumed run matches the uninterrupted one bit for bit, inside an accumulation
window too. (Except DDP on 3 or more ranks: DDP lays its gradient buckets out anew after its first step, and the
all-reduce's order of summation depends on the layout, so the first step of a resumed run rounds differently; with
`find_unused_parameters=True` DDP keeps its first layout and the match is bit for bit.) (The average changes the rounding of the window's sum, not its value: compared with a run that did not
save inside that window, e.g. when a stop signal wrote the checkpoint, the result agrees to float rounding.) A run may
also resume on another number of ranks (or another strategy). Kept exactly then: weights, optimizer, scheduler and
precision state, the epoch and step counters, the callbacks' state, and the pending gradients (every rank starts
from their average, to which the window's remaining batches add). From the next epoch on, each epoch's sample order
is re-split over the new ranks, so each global batch holds the same samples when batch size x ranks stays the same
(the optimizer then sees the same means, to float rounding). Not kept: mid-epoch, the batch cursor counts this rank's
batches, so the rest of the interrupted epoch is not exactly the samples no rank had seen; every rank continues from
rank 0's RNG streams and epoch accumulators.
"""
import atexit
import io
import math
import os
import time
from datetime import timedelta
from typing import Any, Callable, Dict, List, Optional, Union

import torch
import torch.distributed as dist

from volt.distributed import launcher as _launcher
from volt.distributed.environments import (ClusterEnvironment, LightningEnvironment, detect_environment,
                                           find_free_port)
from volt.distributed.samplers import DistributedEvalSampler, DistributedTrainSampler, describe_sampler
from volt.distributed.strategy import Strategy
from volt.utilities import rank_zero
from volt.utilities.apply_func import apply_to_collection
from volt.utilities.exceptions import MisconfigurationException

DEFAULT_TIMEOUT = timedelta(minutes=30)  # long enough for a slow checkpoint write on rank 0 while the others wait
DEFAULT_STALL_WARNING = 300.0
TIMEOUT_ENV = "VOLT_COLLECTIVE_TIMEOUT"
STALL_WARNING_ENV = "VOLT_STALL_WARNING"
MAX_RESTARTS_ENV = "VOLT_MAX_RESTARTS"
_START_METHODS = ("popen", "spawn", "fork", "forkserver")
_REDUCE_OPS = {"mean": "sum", "avg": "sum", "sum": "sum", "max": "max", "min": "min"}


class StepForward(torch.nn.Module):
    """Routes a LightningModule step through `forward`, so that a DDP/FSDP wrapper around this module sees it:
    DDP prepares its gradient hooks in forward, FSDP gathers the root parameters there."""

    def __init__(self, module: torch.nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return getattr(self.module, method)(*args, **kwargs)


class ParallelStrategy(Strategy):
    """One process per device: process group, launch, failure handling, collectives and data sharding."""

    strategy_name = "ddp"

    def __init__(self, accelerator: Optional[str] = None, parallel_devices: Optional[List[torch.device]] = None,
                 cluster_environment: Optional[ClusterEnvironment] = None,
                 process_group_backend: Optional[str] = None, timeout: Optional[timedelta] = None,
                 start_method: str = "popen", stall_warning: Optional[float] = None,
                 max_restarts: Optional[int] = None, state_dict_type: str = "full", checkpoint_io: Optional[Any] = None,
                 precision_plugin: Optional[Any] = None) -> None:
        super().__init__(accelerator=accelerator if isinstance(accelerator, str) else None,
                         checkpoint_io=checkpoint_io, precision_plugin=precision_plugin)
        if state_dict_type not in ("full", "sharded"):
            raise MisconfigurationException(
                f"state_dict_type={state_dict_type!r} is not supported: use 'full' (one checkpoint file, written by "
                "rank 0) or 'sharded' (a checkpoint folder that every rank writes its part of)."
            )
        self.state_dict_type = state_dict_type
        if start_method not in _START_METHODS:
            raise MisconfigurationException(
                f"start_method={start_method!r} is not supported; choose one of {', '.join(_START_METHODS)}."
            )
        self.max_restarts = max_restarts_setting(max_restarts)
        if self.max_restarts and start_method != "popen":
            raise MisconfigurationException(
                f"max_restarts={self.max_restarts} restarts ranks by running your script again, which "
                f"start_method={start_method!r} does not do. Use strategy='ddp' (start_method='popen')."
            )
        self.parallel_devices = list(parallel_devices) if parallel_devices is not None else None
        self.cluster_environment = cluster_environment
        self.process_group_backend = process_group_backend
        self.timeout = collective_timeout(timeout)
        self.stall_warning = stall_warning_seconds(stall_warning, self.timeout)
        self.start_method = start_method
        self.world_size = 1
        self.global_rank = 0
        self.local_rank = 0
        self.node_rank = 0
        self.num_nodes = 1
        self._watchdog: Optional[_launcher.Watchdog] = None
        self._background_group: Any = None

    # ------------------------------------------------------------------ topology (decided at Trainer construction)
    def configure(self, device_type: str, device_ids: List[int], num_nodes: int) -> None:
        """Fix devices, world size and this process's ranks from the Trainer's arguments and the environment."""
        env = self.cluster_environment = self.cluster_environment or detect_environment()
        if self.accelerator is None:
            self.accelerator = device_type
        devices = self.parallel_devices or [_device(device_type, i) for i in device_ids]
        self._check_restarts(env, num_nodes)
        if isinstance(env, LightningEnvironment):
            world = self._own_world(env, devices, num_nodes)
        else:
            devices, num_nodes, world = self._external_world(env, devices, num_nodes, device_type)
        self.parallel_devices = devices
        self.num_nodes = num_nodes
        self.world_size = world
        if self.process_group_backend is None:
            self.process_group_backend = "nccl" if devices[0].type == "cuda" else "gloo"
        self.node_rank = env.node_rank()
        if self.node_rank >= num_nodes:
            raise MisconfigurationException(f"NODE_RANK={self.node_rank} must be below num_nodes={num_nodes}.")
        self.set_local_rank(env.local_rank() if env.creates_processes_externally else 0)

    def _check_restarts(self, env: ClusterEnvironment, num_nodes: int) -> None:
        """`max_restarts` is for volt's own launcher, on one node; elsewhere the launcher decides."""
        if not self.max_restarts:
            return
        if not env.creates_processes_externally:
            if num_nodes > 1:
                raise MisconfigurationException(
                    f"max_restarts={self.max_restarts} restarts the ranks of one node. On {num_nodes} nodes, start "
                    "them with torchrun (`--nnodes`, `--rdzv-backend c10d`, `--max-restarts`) or SLURM (`--requeue`)."
                )
        elif os.environ.get("TORCHELASTIC_MAX_RESTARTS") != str(self.max_restarts):
            rank_zero.rank_zero_warn(
                f"max_restarts={self.max_restarts} is for volt's own launcher; this process was started by "
                f"{type(env).__name__}, which decides about restarts (torchrun --max-restarts, SLURM --requeue).")

    def _own_world(self, env: LightningEnvironment, devices: List[torch.device], num_nodes: int) -> int:
        """volt's launcher (or the user, with plain variables) starts devices x num_nodes processes."""
        world = num_nodes * len(devices)
        declared = os.environ.get("WORLD_SIZE")
        if env.creates_processes_externally and declared is not None and int(declared) != world:
            raise MisconfigurationException(
                f"WORLD_SIZE={declared} in the environment, but devices={len(devices)} x num_nodes={num_nodes} "
                f"= {world}. Set WORLD_SIZE to {world}, or change devices/num_nodes."
            )
        env.set_world_size(world)
        return world

    def _external_world(self, env: ClusterEnvironment, devices: List[torch.device], num_nodes: int,
                        device_type: str):
        """torchrun or srun started the processes: devices and num_nodes must match them (left at their
        defaults, they are taken from the environment)."""
        if self.start_method != "popen":
            raise MisconfigurationException(
                f"strategy={self.strategy_name!r} starts its own processes, but this process was started by "
                f"{type(env).__name__} (torchrun/srun). Use strategy='ddp' there."
            )
        world = env.world_size()
        per_node = env.local_world_size()
        if len(devices) == 1 and world > 1:
            devices = [_device(device_type, i) for i in range(per_node or max(1, world // num_nodes))]
        elif per_node is not None and len(devices) != per_node:
            raise MisconfigurationException(
                f"devices={len(devices)}, but {type(env).__name__} started {per_node} processes on this node. "
                f"Pass devices={per_node} (or leave devices at its default)."
            )
        if num_nodes == 1 and world > len(devices):
            num_nodes = world // len(devices)
        if num_nodes * len(devices) != world:
            raise MisconfigurationException(
                f"devices={len(devices)} x num_nodes={num_nodes} = {num_nodes * len(devices)} processes, but "
                f"{type(env).__name__} started {world} (WORLD_SIZE). Make the Trainer's devices and num_nodes "
                "match the launcher's processes per node and node count."
            )
        return devices, num_nodes, world

    def set_local_rank(self, local_rank: int) -> None:
        env = self.cluster_environment
        if local_rank >= len(self.parallel_devices):
            raise MisconfigurationException(
                f"LOCAL_RANK={local_rank}, but only {len(self.parallel_devices)} devices per node are configured."
            )
        self.local_rank = local_rank
        if isinstance(env, LightningEnvironment):
            env.set_global_rank(self.node_rank * len(self.parallel_devices) + local_rank)
        self.global_rank = env.global_rank()
        self._set_root_device(self.parallel_devices[local_rank])
        rank_zero.set_rank(self.global_rank)

    def rank_info(self) -> Dict[str, Any]:
        return {"rank": self.global_rank, "world_size": self.world_size, "node": self.node_rank,
                "local_rank": self.local_rank, "pid": os.getpid()}

    @property
    def num_processes(self) -> int:
        return len(self.parallel_devices or [None])

    # ------------------------------------------------------------------ launch and failure handling
    @property
    def launches_in_child_processes(self) -> bool:
        """spawn/fork: the calling process starts every rank and gets rank 0's result back (nothing else)."""
        return self.start_method != "popen"

    def launch(self, function: Callable, *args: Any, **kwargs: Any) -> Any:
        self._check_rendezvous_address()
        if self.launches_in_child_processes:
            return self._launch_spawn(function, args)
        env = self.cluster_environment
        starts_ranks = not env.creates_processes_externally and self.num_processes > 1
        if starts_ranks:
            self._check_not_a_started_rank(env)
        if self.max_restarts and not env.creates_processes_externally:  # this process supervises; it never returns
            _launcher.ElasticLauncher(self.num_processes, self.max_restarts, env.main_address, env.main_port).run()
        watchdog = self._get_watchdog()
        if starts_ranks:
            _launcher.ScriptLauncher(self.num_processes, self.node_rank, self.world_size, env.main_address,
                                     env.main_port).start(watchdog)
        return self.run_guarded(function, *args, **kwargs)

    @staticmethod
    def _check_not_a_started_rank(env: ClusterEnvironment) -> None:
        """A process that is already a node's rank 1, 2, ... must not start the ranks again: each copy would."""
        if env.local_rank() > 0:
            raise RuntimeError(
                f"Lightning attempted to launch new distributed processes with `local_rank > 0` (LOCAL_RANK="
                f"{env.local_rank()}): this process is already one of the ranks, and starting them again from here "
                f"would multiply them. Unset LOCAL_RANK if you set it yourself; in a ClusterEnvironment of your own, "
                f"`creates_processes_externally` must be True when a launcher started the processes "
                f"({type(env).__name__}'s is False)."
            )

    def _check_rendezvous_address(self) -> None:
        """Nodes started by hand must be told where rank 0 is: without it each would wait for the others at its
        own address until the timeout. Checked at launch, so that such a Trainer can still be built (as in
        Lightning) and the variables set before `fit`."""
        env = self.cluster_environment
        if (self.num_nodes > 1 and isinstance(env, LightningEnvironment)
                and not ("MASTER_ADDR" in os.environ and "MASTER_PORT" in os.environ)):
            raise MisconfigurationException(
                f"num_nodes={self.num_nodes}: every node must find rank 0 at the same address. Set MASTER_ADDR (the "
                "address of node 0) and MASTER_PORT (a free port there), and NODE_RANK (0..num_nodes-1), on "
                "every node; or launch with torchrun or SLURM."
            )

    def run_guarded(self, function: Callable, *args: Any, **kwargs: Any) -> Any:
        """Run one Trainer stage on this rank; if it fails, tell every other rank (and if another rank failed,
        say which, instead of this rank's broken-connection error)."""
        watchdog = self._get_watchdog()
        # from the start, so that a rank waiting at the rendezvous learns of one that failed before reaching it
        watchdog.watch_store(self.cluster_environment.main_address, self.cluster_environment.main_port)
        watchdog.begin_stage(self.position_source, self.stall_warning, self.timeout)
        watchdog.start()
        try:
            self._init_process_group()
            watchdog.rendezvous_done = True
            return function(*args, **kwargs)
        except BaseException as exc:
            if _launcher.is_graceful_stop(exc):  # a stop signal reached every rank: each saves and exits by itself
                watchdog.stopped_by_signal = True
                raise
            # before waiting below: the watchdog may publish this rank's position after the collective
            positions = watchdog.positions_at_failure(exc) if _launcher.is_collective_timeout(exc) else None
            symptom = _launcher.is_communication_error(exc)
            peer = watchdog.peer_failure(wait_s=1.0 if symptom else 0.0)
            if peer is not None and symptom:
                raise _launcher.RankFailedError(peer, full=self.is_global_zero) from None
            record = _launcher.failure_record(self.rank_info(), exc)
            if self.position_source is not None:  # how far training got: a restarted job reports what was lost
                record["step"] = self.position_source.steps_done()
            if positions is not None:
                record["positions"] = positions
            elif symptom:  # a peer went away without a record of its own (killed): this rank is its victim
                record["victim"] = True
            watchdog.publish(record)
            watchdog.stop_children()
            _record_for_torchelastic(exc)
            exc.add_note(f"[volt] raised on rank {self.global_rank} of {self.world_size} (node {self.node_rank}, "
                         f"local rank {self.local_rank}, pid {os.getpid()}); the other ranks were stopped.")
            if positions is not None:
                exc.add_note(_launcher.describe_timeout_positions(positions))
            raise
        finally:
            watchdog.end_stage()

    def stop_coordinator(self, batch_source: Callable[[], int]) -> Optional["_launcher.Watchdog"]:
        """The watchdog agrees with the other ranks on the batch after which a signalled run stops."""
        if self.world_size == 1 or self._watchdog is None:
            return None
        self._watchdog.batch_source = batch_source
        return self._watchdog

    def _get_watchdog(self) -> "_launcher.Watchdog":
        self._watchdog = _launcher.process_watchdog(self.rank_info())
        return self._watchdog

    def _init_process_group(self) -> None:
        env = self.cluster_environment
        if self.root_device.type == "cuda":
            torch.cuda.set_device(self.root_device)
        if dist.is_initialized():
            return
        os.environ["MASTER_ADDR"] = env.main_address
        os.environ["MASTER_PORT"] = str(env.main_port)
        # on a GPU, the process group is bound to this rank's device (as in Lightning): NCCL connects at once,
        # instead of at the first collective, on a device it would otherwise guess
        device = {"device_id": self.root_device} if self.root_device.type == "cuda" else {}
        dist.init_process_group(self.process_group_backend, rank=self.global_rank, world_size=self.world_size,
                                timeout=self.timeout, store=_attempt_store(self.timeout), **device)
        atexit.register(self._destroy_process_group)

    def _destroy_process_group(self) -> None:
        """At interpreter exit, while Python is still whole. A collective's caller sees it done a moment before
        gloo's worker thread drops the tensors it held; dropping one that Python also knew takes the GIL, and a
        thread that gets the GIL while Python finalizes aborts the process ("terminate called without an active
        exception") after a run that succeeded. destroy_process_group joins a group's threads only if nothing else
        holds the group; an FSDP2 model's DTensor parameters hold their DeviceMesh and so the default group, and the
        model lives until Python finalizes. So the GIL is handed over here, once, for the threads that live on."""
        if not dist.is_initialized():
            return
        self._background_group = None
        if self._watchdog is None or self._watchdog.failure is None:
            dist.destroy_process_group()
        time.sleep(0.05)

    def _launch_spawn(self, function: Callable, args: tuple) -> Any:
        fresh_port = self.num_nodes == 1 and "MASTER_PORT" not in os.environ  # the last launch's may linger
        if fresh_port:
            os.environ["MASTER_PORT"] = str(find_free_port())
        try:
            return _launcher.SpawnLauncher(self.start_method, self.num_processes).launch(self, function, args)
        finally:
            if fresh_port:
                os.environ.pop("MASTER_PORT", None)

    # ------------------------------------------------------------------ collectives
    def _check_peers(self) -> None:
        """Fail fast instead of waiting in a collective for a rank that is known to have failed."""
        failure = self._watchdog.failure if self._watchdog is not None else None
        if failure is not None and failure.get("rank") != self.global_rank:
            raise _launcher.RankFailedError(failure, full=self.is_global_zero)

    def _distributed(self) -> bool:
        return dist.is_available() and dist.is_initialized()

    def barrier(self, name: Optional[str] = None) -> None:
        if not self._distributed():
            return
        self._check_peers()
        if self.process_group_backend == "nccl":
            dist.barrier(device_ids=[self.root_device.index])
        else:
            dist.barrier()

    def background_process_group(self) -> Any:
        """A gloo group of all ranks for the collectives of background checkpoint writes, so that they never
        interleave with the training's on the default group. Made at first use (every rank asks at the same save)."""
        if self._background_group is None and self._distributed():
            self._background_group = dist.new_group(backend="gloo", timeout=self.timeout)
        return self._background_group

    def broadcast(self, obj: Any, src: int = 0) -> Any:
        if not self._distributed():
            return obj
        self._check_peers()
        holder = [obj]
        dist.broadcast_object_list(holder, src=src)
        return holder[0]

    def reduce(self, tensor: Any, group: Any = None, reduce_op: Optional[Union[str, Any]] = "mean") -> Any:
        """Reduce a tensor over ranks ("mean", "sum", "max", "min" or a ReduceOp); the input is not modified."""
        if not isinstance(tensor, torch.Tensor) or not self._distributed():
            return tensor
        self._check_peers()
        op_name = "mean" if reduce_op is None else reduce_op
        mean = isinstance(op_name, str) and op_name.lower() in ("mean", "avg")
        if isinstance(op_name, str):
            if op_name.lower() not in _REDUCE_OPS:
                raise ValueError(f"reduce_op={reduce_op!r} is not supported; use 'mean', 'sum', 'max' or 'min'.")
            op = getattr(dist.ReduceOp, _REDUCE_OPS[op_name.lower()].upper())
        else:
            op = op_name
        result = tensor.detach().clone()
        if mean and not result.is_floating_point():
            result = result.to(torch.get_default_dtype())
        device = result.device
        if self.process_group_backend == "nccl" and device.type != "cuda":
            result = result.to(self.root_device)
        dist.all_reduce(result, op=op, group=group)
        if mean:
            result = result / dist.get_world_size(group)
        return result.to(device)

    def all_gather(self, data: Any, group: Any = None, sync_grads: bool = False) -> Any:
        """Gather every tensor in `data` from all ranks: a new leading dimension of size world size. Shapes must
        match across ranks. With `sync_grads=True` gradients flow back to each rank's input."""
        if not self._distributed():
            return data
        self._check_peers()
        size = dist.get_world_size(group)

        def gather(tensor: torch.Tensor) -> torch.Tensor:
            tensor = tensor.contiguous()
            if sync_grads:
                import torch.distributed.nn.functional as dist_fn

                parts = dist_fn.all_gather(tensor, group=group or dist.group.WORLD)
            else:
                parts = [torch.empty_like(tensor) for _ in range(size)]
                dist.all_gather(parts, tensor, group=group)
            return torch.stack(parts)

        return apply_to_collection(data, torch.Tensor, gather)

    def gather_object(self, obj: Any, dst: int = 0) -> Optional[List[Any]]:
        if not self._distributed():
            return [obj]
        self._check_peers()
        buffer = io.BytesIO()
        torch.save(obj, buffer)  # torch's format: plain pickling fails on some tensor dtypes (uint32)
        gathered = [None] * dist.get_world_size() if self.global_rank == dst else None
        dist.gather_object(buffer.getvalue(), gathered, dst=dst)  # under nccl, via the current CUDA device
        if gathered is None:
            return None
        return [obj if rank == dst else torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
                for rank, data in enumerate(gathered)]

    def reduce_boolean_decision(self, decision: bool, all: bool = True) -> bool:
        if not self._distributed():
            return decision
        self._check_peers()
        votes = torch.tensor(int(bool(decision)), device=self.root_device)
        dist.all_reduce(votes, op=dist.ReduceOp.SUM)
        count = int(votes.item())
        return count == self.world_size if all else count > 0

    # ------------------------------------------------------------------ data
    def train_sampler_fn(self) -> Callable:
        """loader -> this rank's training sampler (the user's shuffle and generator kept, same length everywhere)."""
        return lambda loader: self._sampler_for(loader, DistributedTrainSampler, always_seed=True)

    def eval_sampler_fn(self) -> Callable:
        """loader -> this rank's evaluation sampler (no padding: no sample is evaluated twice)."""
        return lambda loader: self._sampler_for(loader, DistributedEvalSampler, always_seed=False)

    def _sampler_for(self, loader, sampler_type, always_seed: bool):
        sampler = loader.sampler
        if isinstance(sampler, torch.utils.data.DistributedSampler):
            return sampler  # the user sharded the data already
        shuffle, generator, inner = describe_sampler(sampler)
        seed = 0
        if always_seed or shuffle or inner is not None:
            # The order is a function of (seed, epoch), so a resumed run that seeds the same way continues it
            # exactly; the seed is the user's generator's, else seed_everything's. Rank 0's decides.
            seed = generator.initial_seed() if generator is not None else int(os.environ.get("PL_GLOBAL_SEED", 0))
            seed = self.broadcast(seed)
        return sampler_type(loader.dataset, self.world_size, self.global_rank, shuffle=shuffle, seed=seed,
                            inner=inner)

    # ------------------------------------------------------------------ checkpoints
    def save_checkpoint(self, checkpoint: Dict[str, Any], filepath, storage_options: Optional[Any] = None) -> Any:
        if storage_options is not None and self.state_dict_type == "sharded":
            raise TypeError(sharded_storage_options_error(self))
        return super().save_checkpoint(checkpoint, filepath, storage_options)

    def teardown(self) -> None:
        if self.model is not self.lightning_module:
            self.model = self.lightning_module
        super().teardown()


def sharded_storage_options_error(strategy: Strategy) -> str:
    return (f"`{type(strategy).__name__}.save_checkpoint(..., storage_options=...)` is not supported with "
            "state_dict_type='sharded': torch.distributed.checkpoint writes the checkpoint folder, not the CheckpointIO "
            "plugin that storage_options are for. Drop storage_options, or use state_dict_type='full' to write one "
            "file through the plugin.")


def collective_timeout(timeout: Optional[timedelta]) -> timedelta:
    """The process group's timeout: the argument, else VOLT_COLLECTIVE_TIMEOUT (seconds), else 30 minutes."""
    if timeout is None:
        seconds = _seconds_from_env(TIMEOUT_ENV, False, "1800 (30 minutes)")
        return DEFAULT_TIMEOUT if seconds is None else timedelta(seconds=seconds)
    if not isinstance(timeout, timedelta) or timeout <= timedelta(0):
        raise MisconfigurationException(
            f"timeout={timeout!r} must be a datetime.timedelta above zero, e.g. timeout=timedelta(minutes=30)."
        )
    return timeout


def stall_warning_seconds(stall_warning: Optional[float], timeout: timedelta) -> float:
    """The argument, else VOLT_STALL_WARNING, else 300 s or half the timeout if shorter (so that the report comes
    before the timeout ends the job)."""
    if stall_warning is None:
        seconds = _seconds_from_env(STALL_WARNING_ENV, True, "300 (0 turns the stall warning off)")
        return min(DEFAULT_STALL_WARNING, timeout.total_seconds() / 2) if seconds is None else seconds
    if isinstance(stall_warning, bool) or not isinstance(stall_warning, (int, float)) or not stall_warning >= 0:
        raise MisconfigurationException(
            f"stall_warning={stall_warning!r} must be a number of seconds >= 0, e.g. stall_warning=300 "
            "(0 turns the stall warning off)."
        )
    return float(stall_warning)


def max_restarts_setting(max_restarts: Optional[int]) -> int:
    """The argument, else VOLT_MAX_RESTARTS, else 0 (a failed rank ends the job)."""
    if max_restarts is None:
        raw = os.environ.get(MAX_RESTARTS_ENV)
        if raw is None:
            return 0
        if not raw.strip().isdigit():
            raise MisconfigurationException(
                f"{MAX_RESTARTS_ENV}={raw!r} must be a whole number >= 0: how often the ranks are restarted after "
                f"one fails (e.g. {MAX_RESTARTS_ENV}=3); or unset it."
            )
        return int(raw)
    if isinstance(max_restarts, bool) or not isinstance(max_restarts, int) or max_restarts < 0:
        raise MisconfigurationException(
            f"max_restarts={max_restarts!r} must be an int >= 0: how often the ranks are restarted after one fails "
            "(0: a failed rank ends the job)."
        )
    return max_restarts


def _attempt_store(timeout: timedelta) -> Optional["dist.Store"]:
    """Under torch's elastic agent the rendezvous store outlives a restart of the group, and what the process group
    writes there while it forms (each rank's address) must be per attempt: a restarted rank would otherwise read
    the address of a dead rank of the previous attempt and fail to connect. None elsewhere: torch makes the store."""
    if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True":
        return None
    store = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), is_master=False, timeout=timeout)
    return dist.PrefixStore(f"volt/attempt/{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}", store)


def _seconds_from_env(name: str, zero_allowed: bool, example: str) -> Optional[float]:
    """Seconds from environment variable `name`; None when it is unset."""
    raw = os.environ.get(name)
    if raw is None:
        return None
    try:
        seconds = float(raw)
    except ValueError:
        seconds = math.nan
    if not (math.isfinite(seconds) and (seconds >= 0 if zero_allowed else seconds > 0)):
        raise MisconfigurationException(
            f"{name}={raw!r} must be a number of seconds {'>= 0' if zero_allowed else 'above 0'}, e.g. "
            f"{name}={example}; or unset it."
        )
    return seconds


def _device(device_type: str, index: int) -> torch.device:
    return torch.device(device_type, index) if device_type == "cuda" else torch.device(device_type)


def _record_for_torchelastic(exc: BaseException) -> None:
    """Under torchrun, write the error file its failure summary reads (rank, exception, traceback)."""
    if "TORCHELASTIC_ERROR_FILE" not in os.environ:
        return
    try:
        from torch.distributed.elastic.multiprocessing.errors import get_error_handler

        get_error_handler().record_exception(exc)
    except Exception:  # the summary is a nicety; the traceback is printed anyway
        pass
