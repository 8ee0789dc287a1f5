"""Strategies: where the model lives and how processes talk. The single-device strategy is the base;
multi-process ones (parallel.py: DDP, FSDP) override the collective operations."""
import contextlib
from typing import Any, Callable, Dict, List, Optional

import torch

from volt.utilities.apply_func import move_data_to_device
from volt.utilities.compile import plain_name, plain_state_dict, state_dict_for


class Strategy:
    """One process, one device. Collectives are identities."""

    strategy_name = "single_device"

    def __init__(self, device: Optional[torch.device] = None, accelerator: Optional[str] = None,
                 checkpoint_io: Optional[Any] = None, precision_plugin: Optional[Any] = None) -> None:
        self._set_root_device(torch.device(device) if device is not None else torch.device("cpu"))
        self.accelerator = accelerator
        self.model: Optional[torch.nn.Module] = None  # what forward passes go through (a DDP wrapper, say)
        self.lightning_module = None
        self.optimizers: List[torch.optim.Optimizer] = []  # the Trainer's, once `configure_optimizers` ran
        self._lightning_optimizers: List[Any] = []
        # The precision plugin (volt.plugins): the one given here, else the Trainer sets its own.
        self.precision_plugin = precision_plugin
        # Set by the Trainer: where its loops are, in words (distributed/stall.py's PositionSource), for the stall
        # reports of multi-process runs.
        self.position_source = None
        self._checkpoint_io = checkpoint_io

    def _set_root_device(self, device: torch.device) -> None:
        """Make `device` this process's `root_device`. A subclass may define `root_device` as a read-only property
        (as Lightning allows): then it decides the device, and this does nothing. (A plain attribute otherwise: the
        loops read it for every batch.)"""
        own = getattr(type(self), "root_device", None)
        if not (isinstance(own, property) and own.fset is None):
            self.root_device = device

    @property
    def checkpoint_io(self):
        """The CheckpointIO plugin that writes, reads and removes checkpoint files (TorchCheckpointIO by default)."""
        if self._checkpoint_io is None:
            from volt.plugins.io import TorchCheckpointIO

            self._checkpoint_io = TorchCheckpointIO()
        return self._checkpoint_io

    @checkpoint_io.setter
    def checkpoint_io(self, checkpoint_io) -> None:
        self._checkpoint_io = checkpoint_io

    # ------------------------------------------------------------------ topology
    world_size = 1
    global_rank = 0
    local_rank = 0
    node_rank = 0
    num_nodes = 1

    @property
    def is_global_zero(self) -> bool:
        return self.global_rank == 0

    @property
    def num_processes(self) -> int:
        return self.world_size

    # ------------------------------------------------------------------ life cycle
    launches_in_child_processes = False  # spawn-style strategies: only rank 0's result comes back to the caller

    def launch(self, function, *args: Any, **kwargs: Any) -> Any:
        """Run `function` in this process (multi-process strategies start the other ranks here)."""
        return function(*args, **kwargs)

    def setup_environment(self) -> None:
        """The first step of every stage, in each process, before any hook runs (CUDA: select this rank's GPU)."""
        if self.root_device.type == "cuda":
            torch.cuda.set_device(self.root_device)

    # Whether the Trainer reads the `ckpt_path` checkpoint after `setup` instead of at the start of the stage (a
    # strategy that must shape or shard the model before it can load into it; Lightning's property).
    restore_checkpoint_after_setup = False

    def setup(self, trainer) -> None:
        """Prepare the model for this stage, after `configure_model` and before the optimizers exist: the precision
        plugin converts it, then `setup_module` moves (and wraps) it. Called once per stage by the Trainer; a custom
        strategy overrides it and calls `super().setup(trainer)`."""
        self.setup_module(self.precision_plugin.convert_module(self.lightning_module))

    def connect(self, module) -> None:
        self.lightning_module = module
        self.model = module

    def setup_module(self, module) -> torch.nn.Module:
        """Move the module to the device; wrappers (DDP, FSDP) are applied by subclasses."""
        module.to(self.root_device)
        self.model = module
        return module

    @contextlib.contextmanager
    def tensor_init_context(self, empty_init: Optional[bool] = None):
        """Tensors created in the block go to `root_device`, in the precision plugin's dtype for the true precisions;
        with `empty_init=True` they also skip torch's initialisation functions (`Trainer.init_module`)."""
        precision = self.precision_plugin
        dtype = precision.tensor_init_context() if precision is not None else contextlib.nullcontext()
        with self.root_device, _SkipInit(enabled=bool(empty_init)), dtype:
            yield

    def on_exception(self, exception: BaseException) -> None:
        """Called when a run fails, after the callbacks' and datamodule's `on_exception` (as in Lightning): a
        strategy may clean up or explain the error here."""

    def teardown(self) -> None:
        """The end of a stage: the checkpoint I/O plugin finishes its work (AsyncCheckpointIO: the write in flight)."""
        if self._checkpoint_io is not None:
            self._checkpoint_io.teardown()

    # ------------------------------------------------------------------ checkpoint files (through `checkpoint_io`)
    def save_checkpoint(self, checkpoint: Dict[str, Any], filepath, storage_options: Optional[Any] = None) -> Any:
        """Write a checkpoint file through `checkpoint_io` (rank 0 writes). Returns what the plugin's save returns:
        from an AsyncCheckpointIO, the write in flight (a volt.checkpoint.PendingWrite)."""
        if self.is_global_zero:
            return self.checkpoint_io.save_checkpoint(checkpoint, filepath, storage_options=storage_options)
        return None

    def load_checkpoint(self, checkpoint_path, weights_only: Optional[bool] = None) -> Dict[str, Any]:
        """Read a checkpoint file through `checkpoint_io`, its tensors onto this process's device. The plugin is
        called as Lightning calls it, without `map_location` (a user's CheckpointIO need not take one)."""
        checkpoint = self.checkpoint_io.load_checkpoint(checkpoint_path, weights_only=weights_only)
        return move_data_to_device(checkpoint, self.root_device) if self.root_device.type != "cpu" else checkpoint

    def remove_checkpoint(self, filepath) -> None:
        """Delete a checkpoint (rank 0 does): a file through `checkpoint_io`; a sharded checkpoint folder, which
        torch.distributed.checkpoint wrote, as volt/checkpoint.py removes one."""
        if not self.is_global_zero:
            return
        from volt.checkpoint import is_sharded_checkpoint, remove_checkpoint

        if is_sharded_checkpoint(filepath):
            remove_checkpoint(filepath)
        else:
            self.checkpoint_io.remove_checkpoint(filepath)

    # ------------------------------------------------------------------ steps (go through `self.model` so wrappers see them)
    def training_step(self, *args: Any, **kwargs: Any) -> Any:
        return self.lightning_module.training_step(*args, **kwargs)

    def validation_step(self, *args: Any, **kwargs: Any) -> Any:
        return self.lightning_module.validation_step(*args, **kwargs)

    def test_step(self, *args: Any, **kwargs: Any) -> Any:
        return self.lightning_module.test_step(*args, **kwargs)

    def predict_step(self, *args: Any, **kwargs: Any) -> Any:
        return self.lightning_module.predict_step(*args, **kwargs)

    def step_function(self, name: str) -> Callable[..., Any]:
        """What the loops call for step `name` ("training_step", ...): this strategy's method, or the module's own
        when the method is this base class's pass-through (one call and its argument packing less per batch)."""
        if name not in vars(self) and getattr(type(self), name) is getattr(Strategy, name):
            return getattr(self.lightning_module, name)
        return getattr(self, name)

    def stop_coordinator(self, batch_source):
        """What agrees across processes on when a signalled run stops (None: one process, stop at once)."""
        return None

    def no_backward_sync(self, enabled: bool):
        return contextlib.nullcontext()

    # ------------------------------------------------------------------ checkpoint contents (sharded strategies gather)
    # How checkpoints are stored: "full" (one file, rank 0 writes) or "sharded" (a folder every rank writes its part
    # of; parallel.py, volt/sharded_checkpoint.py).
    state_dict_type = "full"

    def lightning_module_state_dict(self) -> Dict[str, Any]:
        """The full model state dict, as a checkpoint stores it (every rank calls this; rank 0's is saved); keys
        name compiled submodules as uncompiled ones (volt/utilities/compile.py)."""
        return plain_state_dict(self.lightning_module.state_dict())

    def load_model_state_dict(self, checkpoint: Dict[str, Any], strict: bool = True) -> None:
        """The model's weights from `checkpoint["state_dict"]` (Lightning's signature: the whole checkpoint)."""
        module = self.lightning_module
        module.load_state_dict(state_dict_for(module, checkpoint["state_dict"]), strict=strict)

    # Whether the Trainer restores the optimizers and schedulers from a checkpoint (through
    # `load_optimizer_state_dict`); False: the strategy does it itself (Lightning's property).
    lightning_restore_optimizer = True

    def load_optimizer_state_dict(self, checkpoint: Dict[str, Any]) -> None:
        """Every optimizer's state from `checkpoint["optimizer_states"]`, in the order of `self.optimizers`
        (Lightning's signature: the whole checkpoint)."""
        from volt.sharded_checkpoint import optimizer_state_by_name

        for optimizer, state in zip(self.optimizers, checkpoint.get("optimizer_states", [])):
            if optimizer_state_by_name(state):  # a checkpoint folder's
                self.load_sharded_optimizer_state(optimizer, state)
            else:
                self.load_optimizer_state(optimizer, state)

    def optimizer_state(self, optimizer) -> Dict[str, Any]:
        """The optimizer's full state dict, in torch's usual layout (parameters numbered in order)."""
        return optimizer.state_dict()

    def load_optimizer_state(self, optimizer, state: Dict[str, Any]) -> None:
        """One optimizer's state, as `optimizer_state` gave it."""
        optimizer.load_state_dict(state)

    # The state as this rank holds it, through torch.distributed.checkpoint's state-dict API (FSDP: DTensors, this
    # rank's shards; otherwise the full tensors): what a sharded checkpoint stores, and the shapes it is read into.
    def sharded_model_state(self) -> Dict[str, Any]:
        from torch.distributed.checkpoint.state_dict import get_model_state_dict

        return get_model_state_dict(self.lightning_module)

    def sharded_optimizer_state(self, optimizer, initialize: bool = False) -> Dict[str, Any]:
        """By parameter name. torch's API creates the state of an optimizer that has not stepped yet by stepping it
        with zero gradients: done only with `initialize=True` (shapes to read a checkpoint into); a save must not
        change training, so otherwise such an optimizer's state is taken as it is (empty)."""
        from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

        optimizer = getattr(optimizer, "optimizer", optimizer)  # a LightningOptimizer
        if optimizer.state or initialize:
            return get_optimizer_state_dict(self.lightning_module, optimizer)
        names = {id(p): name for name, p in self.lightning_module.named_parameters()}
        return {"state": {}, "param_groups": [
            {**{k: v for k, v in group.items() if k != "params"}, "params": [names[id(p)] for p in group["params"]]}
            for group in optimizer.param_groups]}

    def load_sharded_model_state(self, state_dict: Dict[str, Any], strict: bool = True) -> None:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

        set_model_state_dict(self.lightning_module, state_dict, options=StateDictOptions(strict=strict))

    def load_sharded_optimizer_state(self, optimizer, state: Dict[str, Any]) -> None:
        from torch.distributed.checkpoint.state_dict import set_optimizer_state_dict

        set_optimizer_state_dict(self.lightning_module, getattr(optimizer, "optimizer", optimizer), state)

    def accumulated_grads(self) -> Dict[str, torch.Tensor]:
        """This rank's gradients summed so far in an unfinished accumulation window, by parameter name."""
        return {plain_name(name): p.grad for name, p in self.lightning_module.named_parameters() if p.grad is not None}

    def load_accumulated_grads(self, grads: Dict[str, torch.Tensor]) -> None:
        """Put back what `accumulated_grads` returned: the window's next backward adds to it."""
        for name, param in self.lightning_module.named_parameters():
            name = plain_name(name)
            if name in grads:
                param.grad = grads[name].to(param.device)

    # ------------------------------------------------------------------ collectives
    def barrier(self, name: Optional[str] = None) -> None:
        pass

    def background_process_group(self) -> Any:
        """The process group for collectives run from a background thread (sharded checkpoint writes); None here."""
        return None

    def broadcast(self, obj: Any, src: int = 0) -> Any:
        return obj

    def reduce(self, tensor, group: Any = None, reduce_op: Optional[str] = "mean"):
        return tensor

    def all_gather(self, data: Any, group: Any = None, sync_grads: bool = False) -> Any:
        return data

    def gather_object(self, obj: Any, dst: int = 0) -> Optional[List[Any]]:
        """Every rank's `obj`, in rank order, on rank `dst` (None on the others). `obj` holds tensors and plain data:
        it is read back with weights_only=True, as checkpoints are. `dst`'s own entry is `obj` itself; the others'
        tensors arrive on the CPU. Not for the training path: the objects are serialized."""
        return [obj]

    def reduce_boolean_decision(self, decision: bool, all: bool = True) -> bool:
        return decision


class SingleDeviceStrategy(Strategy):
    """One device in this process: what `strategy="auto"` gives without several devices. The base strategy under
    Lightning's name, which profiler reports show (`[Strategy]SingleDeviceStrategy.training_step`)."""


class _SkipInit(torch.overrides.TorchFunctionMode):
    """Leaves tensors as torch.empty made them: `torch.nn.init` functions return their tensor untouched."""

    def __init__(self, enabled: bool = True) -> None:
        super().__init__()
        self.enabled = enabled

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if self.enabled and getattr(func, "__module__", None) == "torch.nn.init":
            return kwargs["tensor"] if "tensor" in kwargs else args[0]
        return func(*args, **kwargs)
