"""Where the loops are: the cursor that goes into every checkpoint (plain data), and the same in words for the
stall reports of multi-process runs."""
import os
from dataclasses import asdict, dataclass
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
    val_done_at_batch: int = -1  # the batch_idx whose in-epoch validation already ran
    epoch_rng: Optional[Dict[str, Any]] = None  # global RNG at the start of this epoch's data iteration
    sampler_rng: Optional[Dict[str, Any]] = None  # global RNG when the sampler drew this epoch's order

    def state_dict(self) -> Dict[str, Any]:
        return asdict(self)

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        for key, value in state.items():
            if hasattr(self, key):
                setattr(self, key, value)



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
