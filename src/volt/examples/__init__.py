"""Built-in examples. `volt fit` trains the digits example; its code is a template for your own."""
from volt.examples.digits import DigitsClassifier, DigitsDataModule

__all__ = ["DigitsClassifier", "DigitsDataModule"]
