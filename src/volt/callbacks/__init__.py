"""Built-in callbacks. Each loads on first use, so `import volt` stays cheap."""
import importlib

from volt.callbacks.callback import Callback

_LAZY = {
    "ModelCheckpoint": "volt.callbacks.model_checkpoint",
    "EarlyStopping": "volt.callbacks.early_stopping",
    "ProgressBar": "volt.callbacks.progress",
    "TQDMProgressBar": "volt.callbacks.progress",
    "RichProgressBar": "volt.callbacks.progress",
    "ModelSummary": "volt.callbacks.model_summary",
    "RichModelSummary": "volt.callbacks.model_summary",
    "LearningRateMonitor": "volt.callbacks.lr_monitor",
    "Timer": "volt.callbacks.timer",
    "StochasticWeightAveraging": "volt.callbacks.stochastic_weight_avg",
    "WeightAveraging": "volt.callbacks.weight_averaging",
    "EMAWeightAveraging": "volt.callbacks.weight_averaging",
    "BasePredictionWriter": "volt.callbacks.prediction_writer",
    "DeviceStatsMonitor": "volt.callbacks.device_stats_monitor",
    "BaseFinetuning": "volt.callbacks.finetuning",
    "BackboneFinetuning": "volt.callbacks.finetuning",
    "GradientAccumulationScheduler": "volt.callbacks.gradient_accumulation_scheduler",
    "OnExceptionCheckpoint": "volt.callbacks.on_exception_checkpoint",
    "LambdaCallback": "volt.callbacks.lambda_function",
    "ThroughputMonitor": "volt.callbacks.throughput_monitor",
    "ModelPruning": "volt.callbacks.pruning",
    "SpikeDetection": "volt.callbacks.spike",
    "LearningRateFinder": "volt.callbacks.lr_finder",
    "BatchSizeFinder": "volt.callbacks.batch_size_finder",
}

__all__ = ["Callback", *_LAZY]


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'volt.callbacks' has no attribute {name!r}")
