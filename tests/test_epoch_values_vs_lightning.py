"""Epoch values of `self.log(..., on_epoch=True)` equal Lightning's to the last bit: Lightning adds each batch's
value (times its batch size, for a mean) to a running float32 total, so volt sums in the same order and precision.
Found running Lightning's examples, whose epoch means differed from Lightning's in the 7th digit."""
import pytest
import torch
from torch.utils.data import DataLoader

import volt
import volt.trainer.results

# 50 batch values over six orders of magnitude, and uneven batch sizes: summed pairwise (torch.sum) or in float64,
# the total differs from a running float32 sum in its last bits
_ORDER = torch.randperm(50, generator=torch.Generator().manual_seed(0))
VALUES = (torch.logspace(-3, 3, 50) * torch.linspace(1, 1.7, 50))[_ORDER]
SIZES = [1 + (i * 7) % 5 for i in range(50)]


def logging_module(base):
    class Logs(base):
        def __init__(self):
            super().__init__()
            self.layer = torch.nn.Linear(1, 1)

        def validation_step(self, batch, batch_idx):
            value = VALUES[batch_idx]
            self.log("mean", value, batch_size=SIZES[batch_idx])
            self.log("sum", value, reduce_fx="sum", batch_size=SIZES[batch_idx])
            self.log("bf16_mean", value.to(torch.bfloat16), batch_size=SIZES[batch_idx])

    return Logs()


def validate(pl, tmp_path):
    trainer = pl.Trainer(default_root_dir=tmp_path, logger=False, enable_progress_bar=False,
                         enable_model_summary=False)
    trainer.validate(logging_module(pl.LightningModule), DataLoader(range(50), batch_size=None))
    return trainer.callback_metrics


@pytest.mark.parametrize("compact_every", [1024, 7])
def test_epoch_values_equal_lightnings_to_the_last_bit(quiet_lightning, tmp_path, monkeypatch, compact_every):
    sizes = torch.tensor(SIZES, dtype=torch.float32)
    running = torch.tensor(0.0)
    for value, size in zip(VALUES, SIZES):
        running = running + value * size
    assert (VALUES * sizes).sum() != running  # the data tell the two ways of summing apart

    monkeypatch.setattr(volt.trainer.results, "_COMPACT_EVERY", compact_every)  # fold every 7 batches, as at 1024
    ours, theirs = validate(volt, tmp_path / "volt"), validate(quiet_lightning, tmp_path / "lightning")
    assert ours.keys() == theirs.keys() == {"mean", "sum", "bf16_mean"}
    for key in theirs:
        assert ours[key].dtype == theirs[key].dtype and torch.equal(ours[key], theirs[key]), key
