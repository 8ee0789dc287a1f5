"""Precision plugins for `Trainer(plugins=[...])` (the same objects `Trainer(precision=...)` builds).

    Trainer(plugins=[MixedPrecision("16-mixed", "cuda", scaler=torch.amp.GradScaler("cuda", init_scale=1024))])
"""
from volt.trainer.precision import DoublePrecision, HalfPrecision, MixedPrecision, Precision

__all__ = ["DoublePrecision", "HalfPrecision", "MixedPrecision", "Precision"]
