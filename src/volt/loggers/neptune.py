"""NeptuneLogger: importable, as in Lightning 2.6, so that programs which import it still load; building one fails.

Neptune's service has been shut down ("sunset"), and Lightning 2.6 replaced its NeptuneLogger with one that raises.
"""
from typing import Any


class NeptuneLogger:
    """No longer supported (Neptune has been sunset): constructing it raises, naming the loggers to use instead."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise RuntimeError(
            "NeptuneLogger is no longer supported: Neptune has been sunset, and Lightning 2.6 dropped it too. Log "
            "with another tracker: MLFlowLogger, WandbLogger or CometLogger (or CSVLogger / TensorBoardLogger)."
        )
