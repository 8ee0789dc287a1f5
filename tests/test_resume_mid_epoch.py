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


class Recorder(BoringModel):
    """Records (epoch, batch_idx, first value of x, fit_loop.restarting) per training batch; shuffled data."""

    def __init__(self, stop_at=None):
        super().__init__()
        self.seen, self.stop_at = [], stop_at

    def training_step(self, batch, batch_idx):
        self.seen.append((self.current_epoch, batch_idx, round(batch[0][0, 0].item(), 4),
                          self.trainer.fit_loop.restarting))
        if batch_idx == self.stop_at:
            self.trainer.should_stop = True
        return super().training_step(batch, batch_idx)

    def train_dataloader(self):
        from helpers import loader

        return loader(shuffle=True)


def _stepping(tmp_path, max_steps):
    return trainer(tmp_path, max_steps=max_steps, max_epochs=None, limit_val_batches=0)


def test_a_fit_stopped_inside_an_epoch_goes_on_with_that_epoch(tmp_path):
    """A fit stopped by `max_steps` (or `should_stop`) inside an epoch and continued with a larger limit, from its
    checkpoint or on the same Trainer, continues that epoch at its next batch, in its shuffled order, and ends
    with the weights of a run that never stopped. (Lightning goes on in the next epoch, from the loader's first
    batch.) A stop already acted on is not carried into the continued fit."""
    torch.manual_seed(0)
    whole = Recorder()
    _stepping(tmp_path, 7).fit(whole)

    torch.manual_seed(0)
    first = Recorder()
    stopped = _stepping(tmp_path, 2)
    stopped.fit(first)
    assert stopped.current_epoch == 1 and not stopped.fit_loop.restarting  # as Lightning: the epoch ended
    stopped.save_checkpoint(tmp_path / "stopped.ckpt")
    resumed = Recorder()
    _stepping(tmp_path, 7).fit(resumed, ckpt_path=tmp_path / "stopped.ckpt")
    assert [s[:3] for s in first.seen + resumed.seen] == [s[:3] for s in whole.seen]
    assert [s[3] for s in resumed.seen] == [True, True, False, False, False]  # until the resumed epoch's end
    for name, value in whole.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[name], value, rtol=0, atol=0)

    # the same Trainer, fit again with a larger limit
    torch.manual_seed(0)
    again = Recorder()
    run = _stepping(tmp_path, 2)
    run.fit(again)
    run.fit_loop.max_steps = 7
    run.fit(again)
    assert [s[:3] for s in again.seen] == [s[:3] for s in whole.seen]
    for name, value in whole.state_dict().items():
        torch.testing.assert_close(again.state_dict()[name], value, rtol=0, atol=0)

    # `should_stop` cut the epoch short: the continued fit does not stop at once, it goes on with that epoch
    torch.manual_seed(0)
    early = Recorder(stop_at=1)
    run = _stepping(tmp_path, 7)
    run.fit(early)
    run.save_checkpoint(tmp_path / "early.ckpt")
    resumed = Recorder()
    _stepping(tmp_path, 7).fit(resumed, ckpt_path=tmp_path / "early.ckpt")
    assert [s[:3] for s in resumed.seen[:2]] == [s[:3] for s in whole.seen[2:4]]


class Numbers:
    """An iterable of 10 numbers from `start` that says where it stands (state_dict/load_state_dict)."""

    def __init__(self, start):
        self.next = start

    def __iter__(self):
        while self.next < 10:
            self.next += 1
            yield torch.tensor([float(self.next - 1)])

    def __len__(self):
        return 10

    def state_dict(self):
        return {"next": self.next}

    def load_state_dict(self, state):
        self.next = state["next"]


def test_a_combined_loader_of_stateful_loaders_resumes_from_their_states(tmp_path):
    """Each loader's state goes where Lightning keeps it (`loops.fit_loop.state_dict.combined_loader`, one entry
    per loader) and a resumed fit continues every loader from it."""

    class Model(BoringModel):
        def __init__(self):
            super().__init__()
            self.seen = []

        def training_step(self, batch, batch_idx):
            self.seen.append([int(part.item()) for part in batch])
            return self.layer(torch.zeros(1, 4)).sum() * 0

        def train_dataloader(self):
            return volt.utilities.CombinedLoader([Numbers(3), Numbers(1)])

    first = Model()
    run = _stepping(tmp_path, 2)
    run.fit(first)
    run.save_checkpoint(tmp_path / "c.ckpt")
    saved = torch.load(tmp_path / "c.ckpt", weights_only=True)
    assert saved["loops"]["fit_loop"]["state_dict"]["combined_loader"] == [{"next": 5}, {"next": 3}]
    resumed = Model()
    trainer(tmp_path, max_steps=4, max_epochs=None).fit(resumed, ckpt_path=tmp_path / "c.ckpt")
    assert first.seen + resumed.seen == [[3, 1], [4, 2], [5, 3], [6, 4]]


def test_step_based_resume_continues_the_epoch_max_steps_cut_short(tmp_path, quiet_lightning):
    """A run stopped by max_steps inside an epoch saves its checkpoint at that epoch's (early) end; a run resumed
    from it with a larger max_steps continues the same epoch with the next batch, without a new epoch start, as in
    Lightning, and ends with the weights of a run never stopped."""
    from helpers import boring_model_class, loader

    seen = {}
    for pl in (volt, quiet_lightning):
        calls = []

        class Calls(pl.Callback):
            def on_train_epoch_start(self, trainer, pl_module):
                calls.append(("epoch_start", trainer.current_epoch))

            def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
                calls.append(("batch", trainer.current_epoch, batch_idx))

        options = dict(limit_val_batches=0, logger=False, enable_progress_bar=False, enable_model_summary=False)
        model_class = BoringModel if pl is volt else boring_model_class(pl)
        torch.manual_seed(0)
        first = pl.Trainer(default_root_dir=tmp_path / pl.__name__, max_steps=1, **options)
        first.fit(model_class(), loader())
        torch.manual_seed(0)
        resumed_model = model_class()
        resumed = pl.Trainer(default_root_dir=tmp_path / pl.__name__, max_steps=3, callbacks=[Calls()], **options)
        resumed.fit(resumed_model, loader(), ckpt_path=first.checkpoint_callback.best_model_path)
        seen[pl.__name__] = calls
        if pl is volt:
            torch.manual_seed(0)
            straight = model_class()
            pl.Trainer(default_root_dir=tmp_path / "straight", max_steps=3, enable_checkpointing=False,
                       **options).fit(straight, loader())
            assert all(torch.equal(a, b) for a, b in zip(straight.parameters(), resumed_model.parameters()))
    assert seen["volt"] == seen["pytorch_lightning"] == [("batch", 0, 1), ("batch", 0, 2)]
