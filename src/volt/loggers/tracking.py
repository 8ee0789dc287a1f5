"""What the experiment-tracker loggers (MLflow, Weights & Biases) share: a lazy import with an install hint, the
choice of checkpoint files to upload, and the metric rows a resumed run logs again."""
import importlib.util
import os
from typing import Any, Dict, List, Mapping, Optional, Tuple

import torch

from volt.checkpoint import checkpoint_exists


def require(module: str, package: str, extra: str, logger: str) -> None:
    """Fail at construction, not at the first write, when a tracker's client library is missing (found without
    importing it: these libraries take seconds to import)."""
    if importlib.util.find_spec(module) is None:
        raise ModuleNotFoundError(
            f"{logger} needs the `{module}` package, which is not installed. Run `pip install {package}` "
            f"(or `pip install volt[{extra}]`)."
        )


def to_number(value: Any) -> Any:
    """A one-element tensor as a Python number; anything else as given."""
    return value.item() if isinstance(value, torch.Tensor) and value.numel() == 1 else value


def checkpoints_to_upload(callback, uploaded: Dict[str, float]) -> List[Tuple[float, str, Any]]:
    """(modification time, path, score) of the checkpoint callback's files (or sharded checkpoint folders) not
    uploaded since they last changed, oldest first: its last, best and top-k files, as Lightning's loggers pick them."""
    scores: Dict[str, Any] = {}
    if callback.last_model_path:
        scores[callback.last_model_path] = callback.current_score
    if callback.best_model_path:
        scores[callback.best_model_path] = callback.best_model_score
    scores.update(callback.best_k_models)
    found = sorted((os.path.getmtime(path), path, score) for path, score in scores.items() if checkpoint_exists(path))
    return [entry for entry in found if uploaded.get(entry[1], float("-inf")) < entry[0]]


def checkpoint_metadata(callback, path: str, score: Any) -> Dict[str, Any]:
    """What a tracker stores beside an uploaded checkpoint: its score, file name and the callback's settings."""
    return {
        "score": to_number(score),
        "original_filename": os.path.basename(path),
        type(callback).__name__: {
            "monitor": callback.monitor,
            "mode": callback.mode,
            "save_last": callback.save_last,
            "save_top_k": callback.save_top_k,
            "save_weights_only": callback.save_weights_only,
        },
    }


class LatestRows:
    """The metric rows logged at the latest step, as plain numbers.

    A run resumed from a checkpoint taken at step S deletes its tracker's points from step S on (the interrupted
    run may have logged more at S, and after it) and logs these rows again, so each step shows once.
    """

    def __init__(self) -> None:
        self.step: Optional[int] = None
        self.rows: List[Dict[str, float]] = []

    def add(self, metrics: Mapping[str, Any], step: Optional[int]) -> None:
        if step is None:
            return
        if step != self.step:
            self.step, self.rows = step, []
        self.rows.append({key: float(to_number(value)) for key, value in metrics.items()
                          if isinstance(to_number(value), (int, float))})
