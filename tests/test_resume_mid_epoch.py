"""A run resumed inside an epoch gets no `on_train_epoch_start` for that epoch (as in Lightning; the hook order is
in test_hook_order.py): the built-in callbacks that set per-epoch state there still have it right."""
import pytest
import torch

import volt
from helpers import BoringModel, trainer


class Seen(volt.Callback):
    """What the Trainer and the progress bar show at each training batch."""

    def __init__(self):
        self.factors, self.bars = [], []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.factors.append((trainer.current_epoch, batch_idx, trainer.accumulate_grad_batches))
        bar = trainer.progress_bar_callback
        if bar is not None:
            self.bars.append(_bar_state(bar))


def _bar_state(bar):
    if isinstance(bar, volt.callbacks.RichProgressBar):
        task = bar.train_progress_bar
        return task.description, task.total
    tqdm = bar.train_progress_bar
    return tqdm.desc, tqdm.total


def _fit(tmp_path, ckpt_path=None, bar=None, **kwargs):
    torch.manual_seed(0)
    model, seen = BoringModel(), Seen()
    callbacks = [volt.callbacks.GradientAccumulationScheduler({1: 2}), seen]
    # a checkpoint after each optimizer step: "step=5.ckpt" is after batches 0-1 of epoch 1 (4 batches an epoch)
    callbacks.append(volt.callbacks.ModelCheckpoint(tmp_path / "ckpts", filename="{step}", every_n_train_steps=1,
                                                    save_top_k=-1))
    if bar is not None:
        callbacks.append(bar)
    run = trainer(tmp_path, max_epochs=2, enable_checkpointing=True, enable_progress_bar=bar is not None,
                  callbacks=callbacks, **kwargs)
    run.fit(model, ckpt_path=ckpt_path)
    return model, seen


@pytest.mark.parametrize("bar", ["tqdm", "rich"])
def test_mid_epoch_resume_keeps_the_accumulation_factor_and_the_epoch_bar(tmp_path, bar):
    """The factor of the epoch resumed in (2) holds from its first resumed batch, so the weights equal an
    uninterrupted run's. (Lightning's own scheduler sets it only at epoch starts: its resumed run accumulates 1
    batch until the next epoch.) The progress bar shows the resumed epoch and its size."""
    if bar == "rich":
        pytest.importorskip("rich")
    make_bar = volt.callbacks.RichProgressBar if bar == "rich" else volt.callbacks.TQDMProgressBar
    whole, _ = _fit(tmp_path / "whole", bar=make_bar())
    resumed, seen = _fit(tmp_path / "resumed", ckpt_path=tmp_path / "whole" / "ckpts" / "step=5.ckpt",
                         bar=make_bar())
    assert seen.factors == [(1, 2, 2), (1, 3, 2)]
    assert seen.bars[0][1] == 4 and "1" in seen.bars[0][0]  # "Epoch 1", 4 batches
    for name, value in whole.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[name], value, rtol=0, atol=0)
