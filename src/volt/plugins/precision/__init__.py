"""Precision plugins for `Trainer(plugins=[...])` (the same objects `Trainer(precision=...)` builds).

    Trainer(plugins=[MixedPrecision("16-mixed", "cuda", scaler=torch.amp.GradScaler("cuda", init_scale=1024))])
"""
from volt.trainer.precision import (DoublePrecision, DoublePrecisionPlugin, HalfPrecision, HalfPrecisionPlugin,
                                   MixedPrecision, MixedPrecisionPlugin, Precision, PrecisionPlugin)

__all__ = ["DoublePrecision", "HalfPrecision", "MixedPrecision", "Precision",
           # Lightning's deprecated old names (they warn)
           "DoublePrecisionPlugin", "HalfPrecisionPlugin", "MixedPrecisionPlugin", "PrecisionPlugin"]
