"""Small models and datasets for trying things out and for tests, at Lightning's `demos` import path.

Everything runs offline: random tensors, the bundled handwritten digits (upscaled to MNIST's 28x28) and a generated
text corpus stand in for downloads (see each module).
"""
from volt.demos.boring_classes import BoringDataModule, BoringModel, DemoModel
from volt.demos.lstm import LightningLSTM, SequenceSampler, SimpleLSTM
from volt.demos.transformer import LightningTransformer, Transformer, WikiText2

__all__ = [
    "BoringDataModule",
    "BoringModel",
    "DemoModel",
    "LightningLSTM",
    "LightningTransformer",
    "SequenceSampler",
    "SimpleLSTM",
    "Transformer",
    "WikiText2",
]
