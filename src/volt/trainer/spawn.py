"""What comes back from spawned ranks (`ddp_spawn`, `ddp_fork`, `ddp_notebook`): the calling process starts the
ranks and trains nothing itself, so after the stage rank 0 sends its results, and they are copied onto the user's
Trainer, module and callbacks there."""
from typing import Any, Dict, Optional

import torch

from volt.utilities.apply_func import apply_to_collection


def _to_cpu(data: Any) -> Any:
    return apply_to_collection(data, torch.Tensor, lambda t: t.detach().cpu())


def collect_results(trainer, output: Any) -> Optional[Dict[str, Any]]:
    """In a spawned rank after the stage: what the calling process needs (rank 0's; None elsewhere). Every rank
    takes part, since gathering sharded weights is a collective."""
    weights = trainer.strategy.lightning_module_state_dict() if trainer.state.fn == "fit" else None
    if not trainer.is_global_zero:
        return None
    callbacks = {cb.state_key: state for cb in trainer.callbacks if (state := cb.state_dict())}
    return {
        "output": _to_cpu(output),
        "weights": _to_cpu(weights),
        "callback_metrics": _to_cpu(dict(trainer.callback_metrics)),
        "logged_metrics": _to_cpu(dict(trainer.logged_metrics)),
        "progress_bar_metrics": _to_cpu(dict(trainer.progress_bar_tensors)),
        "loop_state": trainer.fit_loop.state.state_dict(),
        "callbacks": _to_cpu(callbacks),
        "status": trainer.state.status,
        "should_stop": trainer.should_stop,
        "predictions": trainer.predict_loop.predictions_per_dataloader if trainer.state.fn == "predict" else None,
    }


def apply_results(trainer, payload: Dict[str, Any]) -> Any:
    """In the calling process: copy rank 0's results onto the user's objects; returns the stage's output. Callback
    states are matched by `state_key`, so callbacks that the ranks reordered (`configure_callbacks`, checkpoint
    callbacks last) still get their own."""
    if payload["weights"] is not None:
        trainer.lightning_module.load_state_dict(payload["weights"])
    results = trainer._results
    results.callback_metrics.update(payload["callback_metrics"])
    results.logged_metrics.update(payload["logged_metrics"])
    results.progress_bar_metrics.update(payload["progress_bar_metrics"])
    trainer.fit_loop.state.load_state_dict(payload["loop_state"])
    states = payload["callbacks"]
    for callback in trainer.callbacks:
        if callback.state_key in states:
            callback.load_state_dict(states[callback.state_key])
    if payload["predictions"] is not None:
        trainer.predict_loop.predictions_per_dataloader = payload["predictions"]
    trainer.state.status, trainer.state.stage = payload["status"], None
    trainer.should_stop = payload["should_stop"]
    return payload["output"]
