"""DistributedDataParallel: each rank holds the whole model; gradients are averaged in backward.

The process group, launching, failure handling, collectives and data sharding are `ParallelStrategy`'s
(parallel.py), which also says what a multi-process checkpoint holds and what a resume keeps exactly.
"""
import contextlib
import inspect
from datetime import timedelta
from typing import Any, List, Optional

import torch
from torch.nn.parallel import DistributedDataParallel

from volt.distributed.environments import ClusterEnvironment
from volt.distributed.parallel import ParallelStrategy, StepForward
from volt.utilities.exceptions import MisconfigurationException
from volt.utilities.rank_zero import rank_zero_deprecation


class DDPStrategy(ParallelStrategy):
    """DistributedDataParallel: each rank holds the whole model; gradients are averaged in backward.

    Args:
        timeout: how long a collective waits for the other ranks before failing the job. Default: the
            VOLT_COLLECTIVE_TIMEOUT environment variable (seconds), else 30 minutes (a slow checkpoint write on
            rank 0 must not fail the job).
        stall_warning: seconds a rank may stay at the same place (batch, epoch end, collective) before rank 0 logs
            where every rank is and whether the ranks are out of step (0: never). Default: the VOLT_STALL_WARNING
            environment variable, else 300, or half the timeout when that is shorter.
        max_restarts: how often the ranks are restarted after one fails (default: the VOLT_MAX_RESTARTS environment
            variable, else 0: a failed rank ends the job). Above 0, the process that calls `fit` supervises, as
            `torchrun --max-restarts` does: torch's elastic agent runs your script in every rank and restarts the
            whole group after a failure, and `fit` resumes from the newest checkpoint by itself (keep
            `ModelCheckpoint(save_last=True)` so that there is one). The code after `fit` runs in the ranks too;
            the supervising process exits when they end. One node; under torchrun or SLURM their own restarts apply.
        state_dict_type: "full" (default, as Lightning): a checkpoint is one file, written by rank 0. "sharded": a
            checkpoint folder that every rank writes its part of in parallel (torch.distributed.checkpoint; each
            rank's own loop state by that rank, the model's tensors spread over the ranks), see parallel.py.
        checkpoint_io, precision_plugin: the plugins (volt.plugins) for checkpoint files and precision, as
            `Trainer(plugins=[...])` gives them (one place or the other).

    Extra keyword arguments go to `torch.nn.parallel.DistributedDataParallel` (find_unused_parameters,
    static_graph, gradient_as_bucket_view, bucket_cap_mb, ...).
    """

    strategy_name = "ddp"

    def __init__(self, accelerator: Optional[str] = None, parallel_devices: Optional[List[torch.device]] = None,
                 cluster_environment: Optional[ClusterEnvironment] = None,
                 process_group_backend: Optional[str] = None, timeout: Optional[timedelta] = None,
                 start_method: str = "popen", stall_warning: Optional[float] = None,
                 max_restarts: Optional[int] = None, state_dict_type: str = "full", checkpoint_io: Optional[Any] = None,
                 precision_plugin: Optional[Any] = None, **kwargs: Any) -> None:
        super().__init__(accelerator, parallel_devices, cluster_environment, process_group_backend, timeout,
                         start_method, stall_warning, max_restarts, state_dict_type=state_dict_type,
                         checkpoint_io=checkpoint_io, precision_plugin=precision_plugin)
        allowed = set(inspect.signature(DistributedDataParallel.__init__).parameters) - {
            "self", "module", "device_ids", "output_device", "process_group"}
        unknown = sorted(set(kwargs) - allowed)
        if unknown:
            raise TypeError(
                f"DDPStrategy got unexpected keyword arguments {unknown}. Extra arguments go to "
                f"DistributedDataParallel, which accepts: {', '.join(sorted(allowed))}."
            )
        self._ddp_kwargs = kwargs

    @property
    def is_distributed(self) -> bool:
        """Deprecated in Lightning (always True); kept so that old programs run."""
        rank_zero_deprecation(f"`{type(self).__name__}.is_distributed` is deprecated: it is always True. Check "
                              "`trainer.world_size > 1` instead.")
        return True

    def on_exception(self, exception: BaseException) -> None:
        """DDP's error for parameters that took no part in the loss gets the fix added to its message."""
        if isinstance(exception, RuntimeError) and "Expected to have finished reduction in the prior iteration" in str(
                exception) and not self._ddp_kwargs.get("find_unused_parameters"):
            exception.args = (f"{exception.args[0] if exception.args else ''}\nSome parameters of your LightningModule "
                              "took no part in the loss that training_step returned. If that is intended, let DDP find "
                              "them: strategy='ddp_find_unused_parameters_true' or "
                              "DDPStrategy(find_unused_parameters=True).", *exception.args[1:])

    def setup_module(self, module: torch.nn.Module) -> torch.nn.Module:
        module.to(self.root_device)
        trainer = module.trainer
        if trainer.sync_batchnorm:
            if self.root_device.type == "cpu":
                raise MisconfigurationException(
                    "sync_batchnorm=True needs CUDA devices: torch's SyncBatchNorm does not run on CPU. Remove it, "
                    "or train with accelerator='gpu'."
                )
            torch.nn.SyncBatchNorm.convert_sync_batchnorm(module)
        if trainer.state.fn == "fit" and any(p.requires_grad for p in module.parameters()):
            device_ids = [self.root_device.index] if self.root_device.type == "cuda" else None
            self.model = DistributedDataParallel(StepForward(module), device_ids=device_ids, **self._ddp_kwargs)
        else:
            self.model = module
        return module

    def training_step(self, *args: Any, **kwargs: Any) -> Any:
        if isinstance(self.model, DistributedDataParallel):
            return self.model("training_step", *args, **kwargs)
        return self.lightning_module.training_step(*args, **kwargs)

    def no_backward_sync(self, enabled: bool):
        """Skip the gradient all-reduce for the forward+backward of an accumulating batch."""
        if enabled and isinstance(self.model, DistributedDataParallel):
            return self.model.no_sync()
        return contextlib.nullcontext()
