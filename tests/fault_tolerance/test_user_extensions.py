"""A user's own stateful callback and own logger resume exactly through the public protocols alone: Lightning's
`Callback.state_dict` / `load_state_dict`, and volt's `Logger.state_dict` / `load_state_dict`. Nothing here names a
private attribute of volt."""
import json
import os

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import volt
from volt.callbacks import ModelCheckpoint
from volt.loggers import Logger

from .harness import assert_same


class LossTally(volt.Callback):
    """Counts the batches it has seen and sums their losses; the sum depends on every batch, so a batch counted
    twice or missed after a resume shows."""

    def __init__(self):
        self.batches, self.loss_sum = 0, 0.0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.batches += 1
        self.loss_sum += float(outputs["loss"])

    def state_dict(self):
        return {"batches": self.batches, "loss_sum": self.loss_sum}

    def load_state_dict(self, state_dict):
        self.batches, self.loss_sum = state_dict["batches"], state_dict["loss_sum"]


class JsonLinesLogger(Logger):
    """Appends one JSON line per `log_metrics` call. Its resume state is the number of lines written: a resumed run
    cuts the file back to it, dropping what the interrupted run logged after the checkpoint."""

    def __init__(self, path):
        self.path = path
        self.lines = []
        if os.path.exists(path):
            with open(path) as f:
                self.lines = f.read().splitlines()

    @property
    def name(self):
        return "jsonl"

    @property
    def version(self):
        return 0

    def log_metrics(self, metrics, step=None):
        self.lines.append(json.dumps({"step": step, **metrics}, sort_keys=True))

    def log_hyperparams(self, params, *args, **kwargs):
        pass

    def save(self):
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        with open(self.path, "w") as f:
            f.write("".join(line + "\n" for line in self.lines))

    def state_dict(self):
        return {"lines": len(self.lines)}

    def load_state_dict(self, state):
        self.lines = self.lines[: state["lines"]]
        self.save()


class Net(volt.LightningModule):
    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Dropout(0.2), torch.nn.Linear(8, 1))

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.layer(x), y)
        self.log("loss", loss)
        if self.global_step == getattr(self, "crash_at", None):
            raise RuntimeError("crash")
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.05)


def _fit(root, ckpt_path=None, crash_at=None):
    volt.seed_everything(3, verbose=False)
    generator = torch.Generator().manual_seed(0)
    data = TensorDataset(torch.randn(40, 4, generator=generator), torch.randn(40, 1, generator=generator))
    model, tally = Net(), LossTally()
    model.crash_at = crash_at
    trainer = volt.Trainer(
        default_root_dir=root, max_epochs=3, log_every_n_steps=1, enable_progress_bar=False,
        enable_model_summary=False, logger=JsonLinesLogger(os.path.join(root, "metrics.jsonl")),
        callbacks=[tally, ModelCheckpoint(dirpath=os.path.join(root, "ckpt"), every_n_train_steps=4,
                                          save_top_k=-1, filename="{step}")],
    )
    trainer.fit(model, DataLoader(data, batch_size=4, shuffle=True), ckpt_path=ckpt_path)
    return model, tally


def test_own_callback_and_logger_resume_exactly(tmp_path):
    reference, tally = _fit(str(tmp_path / "reference"))
    run = str(tmp_path / "run")
    with pytest.raises(RuntimeError, match="crash"):
        _fit(run, crash_at=22)  # the last checkpoint is from step 20; steps 21-22 were logged past it
    logged_past_checkpoint = open(os.path.join(run, "metrics.jsonl")).read().splitlines()
    assert json.loads(logged_past_checkpoint[-1])["step"] == 21  # x axis: optimizer steps - 1

    resumed, resumed_tally = _fit(run, ckpt_path=os.path.join(run, "ckpt", "step=20.ckpt"))

    assert_same(resumed.state_dict(), reference.state_dict(), "weights")
    assert resumed_tally.state_dict() == tally.state_dict()
    assert tally.batches == 30
    assert (open(os.path.join(run, "metrics.jsonl")).read()
            == open(tmp_path / "reference" / "metrics.jsonl").read())
