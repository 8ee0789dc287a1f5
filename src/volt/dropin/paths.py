"""Where each Lightning module lives in volt, and what volt does not provide (with why, and what to use instead).

A Lightning module `lightning.pytorch.X` (also spelled `pytorch_lightning.X`) is `volt.X`, except where volt keeps
the code in another file (`PYTORCH_MOVED`). Of Fabric (`lightning.fabric.X`, `lightning_fabric.X`) volt provides
the helpers Trainer programs import (`FABRIC_PROVIDED`); Fabric itself is not part of volt.
`tests/test_lightning_names.py` checks these tables against the installed pytorch-lightning: every public Lightning
name volt lacks must be listed below, and nothing volt has may be.
"""
from typing import Dict, List, Optional

# Lightning module (relative to lightning.pytorch) -> the volt module that holds its code, where the paths differ.
PYTORCH_MOVED: Dict[str, str] = {
    "accelerators.accelerator": "volt.accelerators",
    "accelerators.cpu": "volt.accelerators",
    "accelerators.cuda": "volt.accelerators",
    "accelerators.mps": "volt.accelerators",
    "core.datamodule": "volt.datamodule",
    "core.mixins.hparams_mixin": "volt.core.mixins",
    "core.module": "volt.module",
    "core.optimizer": "volt.trainer.optim",
    "plugins.io.async_plugin": "volt.plugins.io",
    "plugins.io.checkpoint_plugin": "volt.plugins.io",
    "plugins.io.torch_plugin": "volt.plugins.io",
    "plugins.precision.amp": "volt.trainer.precision",
    "plugins.precision.double": "volt.trainer.precision",
    "plugins.precision.half": "volt.trainer.precision",
    "plugins.precision.precision": "volt.trainer.precision",
    "profilers.base": "volt.profilers.profiler",
    "strategies.ddp": "volt.distributed.ddp",
    "strategies.fsdp": "volt.distributed.fsdp",
    "strategies.parallel": "volt.distributed.ddp",
    "strategies.single_device": "volt.distributed.strategy",
    "strategies.strategy": "volt.distributed.strategy",
    "utilities.model_summary.model_summary": "volt.utilities.model_summary",
}

# Fabric modules (relative to lightning.fabric) that Trainer programs import helpers from -> their volt module.
FABRIC_PROVIDED: Dict[str, str] = {
    "accelerators": "volt.accelerators",
    "accelerators.accelerator": "volt.accelerators",
    "accelerators.cpu": "volt.accelerators",
    "accelerators.cuda": "volt.accelerators",
    "accelerators.mps": "volt.accelerators",
    "accelerators.registry": "volt.accelerators",
    "plugins": "volt.plugins",
    "plugins.environments": "volt.plugins.environments",
    "plugins.environments.cluster_environment": "volt.distributed.environments",
    "plugins.environments.lightning": "volt.distributed.environments",
    "plugins.environments.slurm": "volt.distributed.environments",
    "plugins.environments.torchelastic": "volt.distributed.environments",
    "plugins.io": "volt.plugins.io",
    "plugins.io.checkpoint_io": "volt.plugins.io",
    "plugins.io.torch_io": "volt.plugins.io",
    "utilities": "volt.utilities",
    "utilities.apply_func": "volt.utilities.apply_func",
    "utilities.cloud_io": "volt.utilities.cloud_io",
    "utilities.enums": "volt.utilities.enums",
    "utilities.exceptions": "volt.utilities.exceptions",
    "utilities.imports": "volt.utilities.imports",
    "utilities.rank_zero": "volt.utilities.rank_zero",
    "utilities.registry": "volt.utilities.registry",
    "utilities.seed": "volt.utilities.seed",
    "utilities.spike": "volt.callbacks.spike",
    "utilities.throughput": "volt.utilities.throughput",
    "utilities.warnings": "volt.utilities.warnings",
}

# ---- deliberate omissions, grouped by reason (the reason ends the error message a program gets)
_TPU = "volt trains on CPU, CUDA and MPS devices; TPU/XLA is not supported"
_DEEPSPEED = "volt does not integrate DeepSpeed; use strategy='fsdp' for sharded training"
_INTERNAL = "Lightning's internal machinery, which volt's own loop replaces (see volt/trainer/fit_loop.py)"
_HELPER = "an internal helper of Lightning's own code, not meant for programs"
_CLUSTERS = ("volt detects torchrun, SLURM and plain environment variables (MASTER_ADDR, ...); for another cluster "
             "manager, subclass ClusterEnvironment and pass it in Trainer(plugins=[...])")
_HOSTED = "Lightning AI's hosted services are not part of volt; use CSVLogger/TensorBoardLogger and local files"
_LEGACY = "volt reads Lightning 2.x checkpoints as they are and migrates none from 1.x"
_TENSOR_PARALLEL = "volt has no tensor-parallel strategy; shard the model with strategy='fsdp'"
_NO_INTEGRATION = "volt has no bitsandbytes or Transformer Engine (fp8) integration"
# Lightning's toolbox (tuner, experiment trackers, more callbacks, the PyTorch profiler) is being built for volt.
_PLANNED = "planned for volt, not built yet"

_OMITTED_MODULES: Dict[str, List[str]] = {
    _TPU: ["accelerators.xla", "plugins.io.xla_plugin", "plugins.precision.xla", "profilers.xla",
           "strategies.single_xla", "strategies.xla"],
    _DEEPSPEED: ["plugins.precision.deepspeed", "strategies.deepspeed", "utilities.deepspeed",
                 "utilities.model_summary.model_summary_deepspeed"],
    _INTERNAL: ["loggers.utilities", "loops", "overrides", "plugins.io.wrapper", "strategies.launchers",
                "trainer.call", "trainer.configuration_validator", "trainer.connectors", "trainer.setup",
                "utilities.argparse", "utilities.signature_utils"],
    _HOSTED: ["loggers.litlogger", "serve", "utilities.model_registry"],
    _LEGACY: ["utilities.migration", "utilities.upgrade_checkpoint"],
    _NO_INTEGRATION: ["plugins.precision.bitsandbytes", "plugins.precision.transformer_engine"],
    "Lightning's hook mixin classes; volt's LightningModule, LightningDataModule and Callback define the hooks "
    "themselves: subclass those": ["core.hooks"],
    "volt's FSDPStrategy applies the Trainer's `precision=` itself": ["plugins.precision.fsdp"],
    "consolidates DeepSpeed/FSDP shards; volt's checkpoints are full files": ["utilities.consolidate_checkpoint"],
    "Lightning's test-suite helpers": ["utilities.testing"],
    _TENSOR_PARALLEL: ["strategies.model_parallel"],
    _PLANNED: ["callbacks.checkpoint", "callbacks.rich_model_summary"],
}

_OMITTED_NAMES: Dict[str, List[str]] = {
    _TPU: ["XLAAccelerator", "XLACheckpointIO", "XLAEnvironment", "XLAPrecision", "XLAProfiler"],
    _DEEPSPEED: ["DeepSpeedPrecision", "DeepSpeedStrategy", "DeepSpeedSummary"],
    _CLUSTERS: ["KubeflowEnvironment", "LSFEnvironment", "MPIEnvironment"],
    _HOSTED: ["LitLogger"],
    _NO_INTEGRATION: ["BitsandbytesPrecision", "TransformerEnginePrecision"],
    _HELPER: ["BType", "CHECKPOINT_PAST_HPARAMS_KEYS", "CONVERSION_DTYPES", "LEFTOVER_PARAMS_NAME", "LayerSummary",
              "LightningDoublePrecisionModule", "MODULE_OPTIMIZERS", "NOT_APPLICABLE", "PARAMETER_NUM_UNITS",
              "UNKNOWN_SIZE", "RegisterRecordFunction", "ScheduleWrapper", "call_register_accelerators", "clean_namespace", "collect_init_args", "comet_experiment", "convert",
              "convert_inf", "do_nothing_closure", "get_init_args", "has_len_all_ranks", "is_cuda_out_of_memory", "is_cudnn_snafu", "is_out_of_cpu_memory",
              "merge_dicts",
              "parse_batch_shape", "parse_class_init_keys", "rank_zero_module", "recursive_detach", "save_hyperparameters",
              "update_hparams", "warning_cache"],
    "volt's CustomProgress takes an infinite total as rich's unknown one (None), so it needs no task class": [
        "CustomInfiniteTask"],
    "Lightning 1.x's tags.csv format; use load_hparams_from_yaml/save_hparams_to_yaml": [
        "load_hparams_from_tags_csv", "save_hparams_to_tags_csv"],
    "queries nvidia-smi; CUDAAccelerator().get_device_stats(device) gives torch's CUDA memory statistics": [
        "get_nvidia_gpu_stats"],
    "use MPSAccelerator().get_device_stats(device)": ["get_device_stats"],
    "on SIGTERM volt saves last.ckpt and raises TrainingStopped (a SystemExit with status 1) instead": [
        "SIGTERMException"],
    _TENSOR_PARALLEL: ["ModelParallelStrategy"],
    "volt's FSDPStrategy applies the Trainer's `precision=` itself": ["FSDPPrecision"],
    "volt has no Fabric; put the model in a LightningModule and use the Trainer, or plain PyTorch": [
        "Fabric", "is_wrapped"],
    "Fabric's monitor, which takes a Fabric; with the Trainer, use the ThroughputMonitor callback": [
        "ThroughputMonitor"],
    _PLANNED: ["Checkpoint"],
}

MISSING_MODULES: Dict[str, str] = {module: reason for reason, modules in _OMITTED_MODULES.items() for module in modules}
MISSING_NAMES: Dict[str, str] = {name: reason for reason, names in _OMITTED_NAMES.items() for name in names}


def missing_module_reason(relative: str) -> Optional[str]:
    """Why volt does not provide the Lightning module `lightning.pytorch.<relative>` (None if it is not listed)."""
    parts = relative.split(".")
    for end in range(len(parts), 0, -1):
        reason = MISSING_MODULES.get(".".join(parts[:end]))
        if reason is not None:
            return reason
    return None
