"""Fully sharded data parallel training with torch's FSDP2 (`torch.distributed.fsdp.fully_shard`).

Parameters, gradients and optimizer state are split across ranks; each wrapped submodule gathers its parameters
for its forward and backward. The LightningModule's steps run through a small root module (`StepForward`) that is
sharded last, so parameters that belong to no wrapped submodule are gathered too.

Checkpoints are sharded by default (`state_dict_type="sharded"`): a folder that every rank writes its own shards
into, in parallel (torch.distributed.checkpoint, volt/sharded_checkpoint.py). Lightning's default is "full", one file
gathered to rank 0; volt's is sharded because FSDP is the strategy for models that do not fit one device: a full
checkpoint gathers the whole model and optimizer state into rank 0's memory (about 16 bytes a parameter with Adam)
and writes it through one process, a stall that grows with the model and not with the ranks, while a sharded one
writes 1/world of it per rank. The folder loads anywhere a file does (another number of ranks, DDP, one device,
`load_from_checkpoint`, `ckpt_path="last"`), and `volt checkpoint consolidate` turns it into one file;
`state_dict_type="full"` writes the file directly.

Inside a gradient-accumulation window each rank sums full, unsharded gradients, which FSDP2 keeps in its private
per-parameter records rather than in `.grad`; checkpoints read them from there (averaged over the ranks, see
parallel.py) and resume puts them back, so resume is as exact as under DDP.
"""
import contextlib
import functools
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Set, Tuple, Type, Union

import torch

from volt.distributed.environments import ClusterEnvironment
from volt.distributed.parallel import ParallelStrategy, StepForward
from volt.utilities.exceptions import MisconfigurationException
from volt.utilities.rank_zero import rank_zero_deprecation

if TYPE_CHECKING:
    from torch.distributed.device_mesh import DeviceMesh

# torch's ShardingStrategy names (FSDP1's, which Lightning takes) -> FSDP2: (free the gathered parameters after
# forward, the mesh replicates over its first dimension)
_SHARDING = {"FULL_SHARD": (True, False), "SHARD_GRAD_OP": (False, False), "NO_SHARD": (False, True),
             "HYBRID_SHARD": (True, True), "_HYBRID_SHARD_ZERO2": (False, True)}
_MESH_DIMS = ("replicate", "shard")  # FSDP2 replicates over the first dimension of a 2-D mesh, shards over the second
Policy = Union[Set[Type[torch.nn.Module]], List[Type[torch.nn.Module]], Callable[[torch.nn.Module], bool]]


def _fully_shard():
    try:
        from torch.distributed.fsdp import fully_shard
    except ImportError:
        raise MisconfigurationException(
            f"strategy='fsdp' uses FSDP2 (`torch.distributed.fsdp.fully_shard`), which this torch "
            f"({torch.__version__}) does not provide. Install torch >= 2.6, or use strategy='ddp'."
        ) from None
    return fully_shard


def _module_filter(policy: Policy, argument: str) -> Callable[[torch.nn.Module], bool]:
    """Which submodules a policy picks: a set (or list) of module classes, or a function module -> bool."""
    if isinstance(policy, (set, list, tuple, frozenset)):
        classes = tuple(policy)
        return lambda m: isinstance(m, classes)
    if callable(policy):
        return policy
    raise MisconfigurationException(f"{argument}={policy!r} must be a set of module classes or a function module -> "
                                    "bool.")


def _recompute_in_backward(module: torch.nn.Module) -> None:
    """Activation checkpointing: `module`'s forward keeps only its inputs, and backward runs it again for the rest
    (less memory, about one more forward of compute), through torch.utils.checkpoint."""
    from torch.utils.checkpoint import checkpoint

    module.forward = functools.partial(checkpoint, module.forward, use_reentrant=False)


class FSDPStrategy(ParallelStrategy):
    """Shard the model across ranks with FSDP2.

    Args:
        auto_wrap_policy: which submodules get their own shard group: a set of module classes, or a function
            module -> bool. Default: every direct child of the LightningModule that has parameters.
        sharding_strategy: torch's `ShardingStrategy` or its name (any case): "FULL_SHARD" (free gathered
            parameters after forward), "SHARD_GRAD_OP" (keep them until backward: more memory, less communication),
            "NO_SHARD" (every rank holds everything, as DDP), "HYBRID_SHARD" (shard within a group of ranks, replicate
            across the groups: by default the groups are the nodes) or "_HYBRID_SHARD_ZERO2" (hybrid, parameters
            kept until backward).
        device_mesh: for the hybrid strategies, `(replicas, shards)` with replicas x shards = world size (e.g. (2, 4):
            each 4 ranks hold one copy of the model, sharded), or a 2-D torch `DeviceMesh` with dimension names.
        cpu_offload: keep sharded parameters, gradients and optimizer state in CPU memory: True, or torch's
            `CPUOffload(offload_params=True)`; `strategy.cpu_offload` is the `CPUOffload`, as in Lightning.
        mixed_precision: a `torch.distributed.fsdp.MixedPrecisionPolicy`, or FSDP1's `MixedPrecision` as Lightning
            programs pass it (read as FSDP2 reads a policy; its `buffer_dtype` casts the floating-point buffers). Or
            use the Trainer's `precision`.
        state_dict_type: "sharded" (default): a checkpoint is a folder every rank writes its shards into; "full": one
            file with whole tensors, gathered to and written by rank 0 (the module docstring says why sharded).
        timeout, stall_warning, max_restarts: as for `DDPStrategy` (with `max_restarts` > 0 a failed rank restarts
            the group and `fit` resumes from the newest checkpoint, a sharded folder by default).
        activation_checkpointing_policy: which submodules recompute their activations in backward instead of
            keeping them (less memory, about one more forward of compute): a set of module classes, or a function
            module -> bool. Default: none.
        checkpoint_io, precision_plugin: as for `DDPStrategy`.
    """

    strategy_name = "fsdp"

    def __init__(self, accelerator: Optional[str] = None, parallel_devices: Optional[List[torch.device]] = None,
                 cluster_environment: Optional[ClusterEnvironment] = None,
                 process_group_backend: Optional[str] = None, timeout: Optional[timedelta] = None,
                 auto_wrap_policy: Optional[Policy] = None, sharding_strategy: str = "FULL_SHARD",
                 cpu_offload: Any = None, mixed_precision: Any = None, state_dict_type: str = "sharded",
                 start_method: str = "popen", stall_warning: Optional[float] = None,
                 max_restarts: Optional[int] = None, checkpoint_io: Optional[Any] = None,
                 precision_plugin: Optional[Any] = None, activation_checkpointing_policy: Optional[Policy] = None,
                 activation_checkpointing: Optional[Any] = None,
                 device_mesh: Optional[Union[Tuple[int, int], "DeviceMesh"]] = None) -> None:
        super().__init__(accelerator, parallel_devices, cluster_environment, process_group_backend, timeout,
                         start_method, stall_warning, max_restarts, state_dict_type=state_dict_type,
                         checkpoint_io=checkpoint_io, precision_plugin=precision_plugin)
        _fully_shard()
        from torch.distributed.fsdp import CPUOffload

        self.sharding_strategy = _sharding_strategy(sharding_strategy)
        self.reshard_after_forward, self._replicates = _SHARDING[self.sharding_strategy.name]
        self.device_mesh = _device_mesh(device_mesh, self.sharding_strategy)
        self.auto_wrap_policy = auto_wrap_policy
        self.cpu_offload = cpu_offload if isinstance(cpu_offload, CPUOffload) else CPUOffload(bool(cpu_offload))
        self.mixed_precision = mixed_precision
        if activation_checkpointing is not None:  # Lightning's deprecated name: module classes
            if activation_checkpointing_policy is not None:
                raise ValueError("You cannot set both `activation_checkpointing` and "
                                 "`activation_checkpointing_policy`: pass `activation_checkpointing_policy` only.")
            rank_zero_deprecation("`FSDPStrategy(activation_checkpointing=...)` is deprecated: pass the module classes "
                                  "as `activation_checkpointing_policy={...}`.")
            classes = activation_checkpointing
            activation_checkpointing_policy = set(classes if isinstance(classes, (list, tuple, set)) else [classes])
        self.activation_checkpointing_policy = activation_checkpointing_policy
        self._sharded: Optional[torch.nn.Module] = None  # the module sharded by this strategy, and its root
        self._root: Optional[torch.nn.Module] = None

    # ------------------------------------------------------------------ sharding
    def setup_module(self, module: torch.nn.Module) -> torch.nn.Module:
        if module.trainer.sync_batchnorm:
            raise MisconfigurationException("sync_batchnorm=True is not supported with strategy='fsdp'.")
        if self._sharded is module:  # a later stage (test after fit): already sharded
            self.model = self._root
            return module
        fully_shard = _fully_shard()
        module.to(self.root_device)
        self._broadcast_from_rank0(module)
        options: Dict[str, Any] = {"mesh": self._mesh(), "reshard_after_forward": self.reshard_after_forward}
        if self.cpu_offload.offload_params:
            from torch.distributed.fsdp import CPUOffloadPolicy

            options["offload_policy"] = CPUOffloadPolicy()
        if self.mixed_precision is not None:
            options["mp_policy"] = _mixed_precision_policy(self.mixed_precision, module)
        if self.activation_checkpointing_policy is not None:  # inside the shard groups: FSDP gathers first
            checkpointed = _module_filter(self.activation_checkpointing_policy, "activation_checkpointing_policy")
            for submodule in module.modules():
                if submodule is not module and checkpointed(submodule):
                    _recompute_in_backward(submodule)
        wrap = self._policy(module)
        for submodule in reversed(list(module.modules())):  # innermost first, as FSDP2 requires
            if submodule is not module and wrap(submodule):
                fully_shard(submodule, **options)
        root = StepForward(module)
        fully_shard(root, **options)
        self._sharded, self._root, self.model = module, root, root
        return module

    @property
    def mixed_precision_config(self) -> Any:
        """The `mixed_precision` given (Lightning's name for it); None: the Trainer's `precision` decides."""
        return self.mixed_precision

    def configure(self, device_type: str, device_ids: List[int], num_nodes: int) -> None:
        super().configure(device_type, device_ids, num_nodes)
        if isinstance(self.device_mesh, tuple) and self.device_mesh[0] * self.device_mesh[1] != self.world_size:
            replicas, shards = self.device_mesh
            raise MisconfigurationException(
                f"device_mesh={self.device_mesh} makes {replicas} x {shards} = {replicas * shards} ranks, but this run "
                f"has {self.world_size} (devices x num_nodes): choose (replicas, shards) whose product is "
                f"{self.world_size}."
            )

    def _mesh(self) -> "DeviceMesh":
        """The ranks FSDP2 shards over: 1-D for FULL_SHARD and SHARD_GRAD_OP; 2-D (replicate, shard) otherwise,
        `device_mesh` or, by default, NO_SHARD (world size, 1) and the hybrid strategies (nodes, ranks per node)."""
        from torch.distributed.device_mesh import DeviceMesh, init_device_mesh

        if isinstance(self.device_mesh, DeviceMesh):
            return self.device_mesh
        if not self._replicates:
            return init_device_mesh(self.root_device.type, (self.world_size,))
        if self.device_mesh is not None:
            shape = self.device_mesh
        elif self.sharding_strategy.name == "NO_SHARD":
            shape = (self.world_size, 1)
        else:
            shape = (self.num_nodes, self.world_size // self.num_nodes)
        return init_device_mesh(self.root_device.type, shape, mesh_dim_names=_MESH_DIMS)

    def _policy(self, module: torch.nn.Module) -> Callable[[torch.nn.Module], bool]:
        policy = self.auto_wrap_policy
        if policy is None:
            children = {id(child) for child in module.children() if any(True for _ in child.parameters())}
            return lambda m: id(m) in children
        return _module_filter(policy, "auto_wrap_policy")

    def _broadcast_from_rank0(self, module: torch.nn.Module) -> None:
        """Start every rank from rank 0's initial weights, as DDP does (skipped for meta-device weights)."""
        if not self._distributed():
            return
        for tensor in list(module.parameters()) + list(module.buffers()):
            if tensor.device.type != "meta":
                torch.distributed.broadcast(tensor.data, src=0)

    # ------------------------------------------------------------------ steps go through the sharded root
    def training_step(self, *args: Any, **kwargs: Any) -> Any:
        return self.model("training_step", *args, **kwargs)

    def validation_step(self, *args: Any, **kwargs: Any) -> Any:
        return self.model("validation_step", *args, **kwargs)

    def test_step(self, *args: Any, **kwargs: Any) -> Any:
        return self.model("test_step", *args, **kwargs)

    def predict_step(self, *args: Any, **kwargs: Any) -> Any:
        return self.model("predict_step", *args, **kwargs)

    @contextlib.contextmanager
    def no_backward_sync(self, enabled: bool):
        """Accumulate unsharded gradients locally; the next synced backward reduce-scatters their sum."""
        if not enabled or self._root is None:
            yield
            return
        self._root.set_requires_gradient_sync(False)
        try:
            yield
        finally:
            self._root.set_requires_gradient_sync(True)

    def teardown(self) -> None:
        self.model = self.lightning_module  # the module stays sharded; a later stage reuses the shards
        super().teardown()

    # ------------------------------------------------------------------ full checkpoints: whole tensors, usual layout
    # (sharded ones use the Strategy's `sharded_*` methods: torch.distributed.checkpoint's API handles FSDP2)
    def _options(self, **kwargs: Any):
        from torch.distributed.checkpoint.state_dict import StateDictOptions

        return StateDictOptions(full_state_dict=True, **kwargs)

    def lightning_module_state_dict(self) -> Dict[str, Any]:
        from torch.distributed.checkpoint.state_dict import get_model_state_dict

        if self._sharded is None:
            return self.lightning_module.state_dict()
        return get_model_state_dict(self.lightning_module, options=self._options(cpu_offload=True))

    def load_model_state_dict(self, checkpoint: Dict[str, Any], strict: bool = True) -> None:
        from torch.distributed.checkpoint.state_dict import set_model_state_dict

        state_dict = checkpoint["state_dict"]
        if self._sharded is None:
            self.lightning_module.load_state_dict(state_dict, strict=strict)
            return
        set_model_state_dict(self.lightning_module, state_dict, options=self._options(strict=strict))

    def optimizer_state(self, optimizer) -> Dict[str, Any]:
        from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

        if self._sharded is None:
            return optimizer.state_dict()
        from volt.sharded_checkpoint import optimizer_state_by_index

        optimizer = getattr(optimizer, "optimizer", optimizer)
        if not optimizer.state:  # not stepped yet: torch's API would step it to create the state
            return optimizer.state_dict() if self.is_global_zero else {}
        state = get_optimizer_state_dict(self.lightning_module, optimizer, options=self._options(cpu_offload=True))
        return optimizer_state_by_index(state) if state else state  # ranks other than 0 get nothing

    def load_optimizer_state(self, optimizer, state: Dict[str, Any]) -> None:
        from torch.distributed.checkpoint.state_dict import set_optimizer_state_dict

        if self._sharded is None:
            optimizer.load_state_dict(state)
            return
        optimizer = getattr(optimizer, "optimizer", optimizer)
        names = self._param_names(optimizer)
        by_name = {
            "state": {names[int(i)]: value for i, value in state["state"].items()},
            "param_groups": [{**group, "params": [names[int(i)] for i in group["params"]]}
                             for group in state["param_groups"]],
        }
        set_optimizer_state_dict(self.lightning_module, optimizer, by_name, options=self._options())

    def accumulated_grads(self) -> Dict[str, torch.Tensor]:
        """While gradient sync is off, FSDP2 sums each parameter's full (unsharded) gradient on this rank in its own
        parameter record, not in `.grad`, until the window's last backward reduce-scatters it."""
        if self._sharded is None:
            return super().accumulated_grads()
        grads = {}
        try:
            for name, record in self._param_records():
                grad = record.unsharded_accumulated_grad  # set when gradients are reduced in another dtype
                if grad is None and hasattr(record, "_unsharded_param"):  # created at the first forward
                    grad = record._unsharded_param.grad
                if grad is not None:
                    grads[name] = grad
        except AttributeError as error:  # the torch-private records changed: save what is sure, say what is not
            _warn_private_api(error, "are not in this checkpoint; a run resumed from it restarts the window's sums")
            return {}
        return grads

    def load_accumulated_grads(self, grads: Dict[str, torch.Tensor]) -> None:
        """The next backward adds its gradients to these, as to the sums of an uninterrupted window."""
        if self._sharded is None:
            super().load_accumulated_grads(grads)
            return
        try:
            for name, record in self._param_records():
                if name in grads:
                    record.unsharded_accumulated_grad = grads[name].to(self.root_device)
        except AttributeError as error:
            _warn_private_api(error, "could not be restored; the resumed window restarts its sums")

    def _param_records(self):
        """(name, FSDP2's record of the parameter) for every sharded parameter. The records (`FSDPParam`) and the
        attributes read here are torch-private, as of torch 2.13."""
        from torch.distributed.fsdp import FSDPModule

        names = {id(param): name for name, param in self.lightning_module.named_parameters()}
        for module in self._root.modules():
            if isinstance(module, FSDPModule):
                state = module._get_fsdp_state()
                groups = getattr(state, "_fsdp_param_groups", None)  # torch < 2.13: one group, or None
                if groups is None:
                    groups = [state._fsdp_param_group] if state._fsdp_param_group is not None else []
                for group in groups:
                    for record in group.fsdp_params:
                        info = record._module_info
                        yield names[id(getattr(info.module, info.param_name))], record

    def _param_names(self, optimizer) -> List[str]:
        """The parameter names in the optimizer's order: position i is parameter id i of torch's layout."""
        names = {id(p): name for name, p in self.lightning_module.named_parameters()}
        return [names[id(p)] for group in optimizer.param_groups for p in group["params"]]


def _sharding_strategy(value: Any):
    """torch's `ShardingStrategy` from the enum or its name, in any case (as Lightning takes it)."""
    from torch.distributed.fsdp import ShardingStrategy

    if isinstance(value, ShardingStrategy):
        return value
    if isinstance(value, str) and value.upper() in ShardingStrategy.__members__:
        return ShardingStrategy[value.upper()]
    raise MisconfigurationException(f"sharding_strategy={value!r} is not one of torch's ShardingStrategy names: use "
                                    f"{', '.join(repr(name) for name in _SHARDING)}.")


def _device_mesh(value: Any, sharding_strategy) -> Any:
    """`(replicas, shards)` as a tuple of two ints above 0 (a list, as a config file gives it, too), or a DeviceMesh."""
    from torch.distributed.device_mesh import DeviceMesh

    if value is None or isinstance(value, DeviceMesh):
        return value
    if not isinstance(value, (tuple, list)) or len(value) != 2 or not all(isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in value):
        raise MisconfigurationException(f"device_mesh={value!r} must be (replicas, shards): two whole numbers above "
                                        "0, e.g. (2, 4) for 2 copies of the model, each sharded over 4 ranks; or "
                                        "a torch DeviceMesh.")
    if "HYBRID" not in sharding_strategy.name:
        raise MisconfigurationException(
            f"device_mesh={tuple(value)} (replicas, shards) is for sharding_strategy='HYBRID_SHARD' or "
            f"'_HYBRID_SHARD_ZERO2', not {sharding_strategy.name!r}: pass one of those, or leave device_mesh out."
        )
    return tuple(value)


def _mixed_precision_policy(config: Any, module: torch.nn.Module) -> Any:
    """FSDP2's policy for `config`. FSDP1's `MixedPrecision` becomes the policy with its dtypes; inputs are cast as
    FSDP1 casts the root's (FSDP2 has no buffer dtype: the module's floating-point buffers are cast to it here)."""
    from torch.distributed.fsdp import MixedPrecision, MixedPrecisionPolicy

    if not isinstance(config, MixedPrecision):
        return config
    if config.buffer_dtype is not None:
        for buffer in module.buffers():
            if buffer.is_floating_point():
                buffer.data = buffer.data.to(config.buffer_dtype)
    return MixedPrecisionPolicy(param_dtype=config.param_dtype, reduce_dtype=config.reduce_dtype,
                                cast_forward_inputs=config.cast_forward_inputs or config.cast_root_forward_inputs)


def _warn_private_api(error: AttributeError, consequence: str) -> None:
    from volt.utilities.rank_zero import rank_zero_warn

    rank_zero_warn(f"This torch's FSDP keeps its accumulation-window gradients differently ({error}): "
                   f"they {consequence}.")
