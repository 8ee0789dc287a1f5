"""Where the loops are: the cursor that goes into every checkpoint (plain data), and the same in words for the
stall reports of multi-process runs."""
import os
from dataclasses import asdict, dataclass, fields
from typing import Any, Dict, Optional


@dataclass
class LoopState:
    """Everything the fit loop needs to continue exactly where it stopped.

    `batch_idx` counts the batches of the current epoch already consumed; `epoch_done` is set while the epoch end
    runs, so a checkpoint taken there resumes at the next epoch. ModelCheckpoint and a graceful stop write only once
    a batch or an epoch end is complete, so their checkpoints resume with the next batch (or epoch) and nothing to
    redo. A checkpoint that `trainer.save_checkpoint` writes from inside a batch hook resumes the same way: the rest
    of that batch (its step logging, a validation after it) is not run again.
    """

    epoch: int = 0
    global_step: int = 0  # optimizer steps, summed over optimizers (Lightning's global_step)
    batches_stepped: int = 0  # training batches that ended with an optimizer step: the loggers' x axis
    batch_idx: int = 0
    total_batch_idx: int = 0  # batches consumed over the whole run
    epoch_done: bool = False
    epoch_cut_short: bool = False  # with `epoch_done`: max_steps or a stop ended the epoch before its data ran out
    val_done_at_batch: int = -1  # the batch_idx whose in-epoch validation already ran
    epoch_rng: Optional[Dict[str, Any]] = None  # global RNG at the start of this epoch's data iteration
    sampler_rng: Optional[Dict[str, Any]] = None  # global RNG when the sampler drew this epoch's order

    def state_dict(self) -> Dict[str, Any]:
        return asdict(self)

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        """Take the cursor's fields from `state`; other entries (Lightning's progress counters) are not ours."""
        for field in fields(self):
            if field.name in state:
                setattr(self, field.name, state[field.name])



def lightning_loops(state: LoopState, last_batch: bool, manual: bool, val_batches: int) -> Dict[str, Any]:
    """The cursor in Lightning 2.x's `loops` layout (progress counters), written beside volt's own so that
    Lightning resumes a volt checkpoint at the same epoch, batch and step (volt reads its own entries). The counters
    are those Lightning writes at the same point: after a batch (its `completed` lags by one, as Lightning's does in
    `on_train_batch_end`), or at an epoch end. The per-epoch optimizer step count is an estimate (Lightning's
    resume reads only the totals)."""
    epoch_end, n, total = state.epoch_done, state.batch_idx, state.total_batch_idx
    lag = 0 if epoch_end else 1
    steps = state.global_step
    epoch_steps = min(steps, n)

    def batches(current: int, overall: int, lags: int, is_last: bool) -> Dict[str, Any]:
        counts = [{"ready": c, "completed": max(c - lags, 0), "started": c, "processed": c} for c in (overall, current)]
        return {"total": counts[0], "current": counts[1], "is_last_batch": is_last}

    def steps_progress(overall: int, current: int, started: bool = False) -> Dict[str, Any]:
        extra = (lambda c: {"started": c}) if started else (lambda c: {})
        return {"total": {"ready": overall, "completed": overall, **extra(overall)},
                "current": {"ready": current, "completed": current, **extra(current)}}

    automatic, manual_steps = (0, steps) if manual else (steps, 0)
    epochs = {"ready": state.epoch + 1, "completed": state.epoch, "started": state.epoch + 1,
              "processed": state.epoch + (1 if epoch_end else 0)}
    fit_loop = {
        "state_dict": {},
        "epoch_loop.state_dict": {"_batches_that_stepped": max(state.batches_stepped - lag, 0)},
        "epoch_loop.batch_progress": batches(n, total, lag, last_batch or epoch_end),
        "epoch_loop.scheduler_progress": steps_progress(0, 0),
        "epoch_loop.automatic_optimization.state_dict": {},
        "epoch_loop.automatic_optimization.optim_progress": {"optimizer": {
            "step": steps_progress(automatic, 0 if manual else epoch_steps),
            "zero_grad": steps_progress(automatic, 0 if manual else epoch_steps, started=True)}},
        "epoch_loop.manual_optimization.state_dict": {},
        "epoch_loop.manual_optimization.optim_step_progress": steps_progress(manual_steps, epoch_steps if manual else 0),
        "epoch_loop.val_loop.state_dict": {},
        "epoch_loop.val_loop.batch_progress": batches(val_batches, val_batches, 0, val_batches > 0),
        "epoch_progress": {"total": dict(epochs), "current": dict(epochs)},
    }
    idle = {"state_dict": {}, "batch_progress": batches(0, 0, 0, False)}
    return {"fit_loop": fit_loop, "validate_loop": idle, "test_loop": dict(idle), "predict_loop": dict(idle)}


class LoopPosition:
    """Where the running Trainer call is, in words: what a rank's watchdog publishes for stall reports
    (volt/distributed/stall.py reads it from another thread; plain attribute reads only)."""

    # The loops' own source files: a search for the code that called a collective stops at them (past them is the
    # Trainer itself, not the code that made the call).
    loop_files = frozenset(os.path.join(os.path.dirname(os.path.abspath(__file__)), name)
                           for name in ("trainer.py", "fit_loop.py", "eval_loop.py", "hooks.py", "checkpointing.py"))

    def __init__(self, trainer) -> None:
        self.trainer = trainer

    def place(self) -> str:
        """The Trainer call and its counters, e.g. 'fit: epoch 0, 12 train batches done'."""
        trainer = self.trainer
        fn, stage = trainer.state.fn, trainer.state.stage
        if fn != "fit":
            loop = {"validate": trainer.validate_loop, "test": trainer.test_loop, "predict": trainer.predict_loop}[fn]
            return f"{fn}: {_eval_batch(loop)}"
        fit = trainer.fit_loop
        if stage == "sanity_check":
            return f"fit: sanity check, {_eval_batch(fit.val_loop)}"
        state = fit.state
        if stage == "validate":
            return f"fit: epoch {state.epoch}, {_eval_batch(fit.val_loop)}"
        if stage == "train":
            if state.epoch_done:
                return f"fit: epoch {state.epoch}, end of epoch"
            done = state.batch_idx
            return f"fit: epoch {state.epoch}, {done} train batch{'' if done == 1 else 'es'} done"
        return f"fit: after the training loop (status {trainer.state.status})"

    def steps_done(self) -> Optional[int]:
        """The optimizer steps done so far in `fit` (None in the other stages)."""
        return self.trainer.fit_loop.state.global_step if self.trainer.state.fn == "fit" else None


def _eval_batch(loop) -> str:
    text = f"{'validation' if loop.stage == 'validate' else loop.stage} batch {loop.batch_idx}"
    return f"{text} of dataloader {loop.dataloader_idx}" if loop.dataloader_idx else text
