"""Lightning's import path for HyperparametersMixin: `save_hyperparameters` and `hparams` for any class."""
from volt.module import HyperparametersMixin

__all__ = ["HyperparametersMixin"]
