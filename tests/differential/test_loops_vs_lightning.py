"""Loop, data and progress-bar behaviour that Lightning's own test suite showed volt doing differently, run by
pytorch-lightning 2.6.6 and by volt with the same module code: batch counts of a CombinedLoader in evaluation, the
validation loaders the batch-size search leaves behind, the counts the TQDM bar shows."""
import importlib

import pytest
import torch
from torch.utils.data import DataLoader

import volt

pytestmark = [pytest.mark.lightning, pytest.mark.filterwarnings("ignore::UserWarning")]


def frameworks(request):
    return {"volt": volt, "lightning": request.getfixturevalue("quiet_lightning")}


def part(pl, name: str):
    return importlib.import_module(f"{pl.__name__}.{name}")


def run_each(request, program):
    """`program(pl)` for volt and for Lightning; both results."""
    results = {name: program(pl) for name, pl in frameworks(request).items()}
    return results["volt"], results["lightning"]


def test_combined_loader_counts_in_evaluation(request, tmp_path):
    """Non-sequential CombinedLoader modes in validate/test: `num_*_batches` counts each loader apart."""

    def program(pl):
        found = {}
        for mode in ("max_size_cycle", "min_size", "max_size"):
            seen = []

            class Model(part(pl, "demos.boring_classes").BoringModel):
                def validation_step(self, batch, batch_idx):
                    seen.append(batch)

                test_step = validation_step

            run = pl.Trainer(default_root_dir=tmp_path, barebones=True)
            run.validate(Model(), part(pl, "utilities").CombinedLoader({"a": [0, 1, 2], "b": [3, 4]}, mode))
            found[mode] = [run.num_val_batches, run.num_sanity_val_batches]
            run.test(Model(), part(pl, "utilities").CombinedLoader({"a": [0, 1, 2], "b": [3, 4]}, mode))
            found[mode] += [run.num_test_batches, seen]
        return found

    ours, theirs = run_each(request, program)
    assert ours == theirs
    assert ours["min_size"][0] == [3, 2] and len(ours["min_size"][-1]) == 4  # two batches each in validate and test


def test_batch_size_search_leaves_validation_loaders_at_the_size_found(request, tmp_path):
    def program(pl):
        class Model(part(pl, "demos.boring_classes").BoringModel):
            def __init__(self):
                super().__init__()
                self.batch_size = 2

            def train_dataloader(self):
                return DataLoader(part(pl, "demos.boring_classes").RandomDataset(32, 64), batch_size=self.batch_size)

            def val_dataloader(self):
                return DataLoader(part(pl, "demos.boring_classes").RandomDataset(32, 64), batch_size=self.batch_size)

        run = pl.Trainer(default_root_dir=tmp_path, max_epochs=1, logger=False, enable_progress_bar=False,
                         enable_model_summary=False)
        size = part(pl, "tuner").Tuner(run).scale_batch_size(Model(), init_val=4, max_trials=3, steps_per_trial=1)
        return size, run.train_dataloader.batch_size, run.val_dataloaders.batch_size

    ours, theirs = run_each(request, program)
    assert ours == theirs == (16, 16, 16)


def test_tqdm_bar_counts(request, tmp_path):
    """The bars' `n` at each batch end: every `refresh_rate` batches and the last, whatever the redraw time limit."""

    def program(pl):
        counts = {"train": [], "val": [], "test": []}

        class Reader(pl.Callback):  # after the bar in the callback list: reads what the bar just set
            def on_train_batch_end(self, trainer, *args):
                counts["train"].append(trainer.progress_bar_callback.train_progress_bar.n)

            def on_validation_batch_end(self, trainer, *args):
                counts["val"].append(trainer.progress_bar_callback.val_progress_bar.n)

            def on_test_batch_end(self, trainer, *args):
                counts["test"].append(trainer.progress_bar_callback.test_progress_bar.n)

        run = pl.Trainer(default_root_dir=tmp_path, max_epochs=1, limit_train_batches=7, limit_val_batches=5,
                         limit_test_batches=4, val_check_interval=4, num_sanity_val_steps=0, logger=False,
                         enable_checkpointing=False, enable_model_summary=False,
                         callbacks=[pl.callbacks.TQDMProgressBar(refresh_rate=3), Reader()])
        model = part(pl, "demos.boring_classes").BoringModel()
        run.fit(model)
        run.test(model, verbose=False)

        class Hide(pl.Callback):  # hidden after the second batch, shown again after the fourth
            def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
                bar = trainer.progress_bar_callback
                bar.disable() if batch_idx == 1 else bar.enable() if batch_idx == 3 else None
                counts["hidden"].append(bar.train_progress_bar.n)

        counts["hidden"] = []
        pl.Trainer(default_root_dir=tmp_path, max_epochs=1, limit_train_batches=6, limit_val_batches=0, logger=False,
                   enable_checkpointing=False, enable_model_summary=False,
                   callbacks=[pl.callbacks.TQDMProgressBar(), Hide()]).fit(model)

        class Leaving(pl.callbacks.TQDMProgressBar):  # with `leave`: counts the bars made
            def init_train_tqdm(self):
                counts["leave"] = counts.get("leave", 0) + 1
                return super().init_train_tqdm()

        pl.Trainer(default_root_dir=tmp_path, max_epochs=2, limit_train_batches=1, limit_val_batches=0, logger=False,
                   enable_checkpointing=False, enable_model_summary=False, callbacks=[Leaving(leave=True)]).fit(model)
        return counts

    ours, theirs = run_each(request, program)
    assert ours == theirs
    assert ours["train"] == [0, 0, 3, 3, 3, 6, 7] and ours["hidden"] == [1, 2, 2, 2, 5, 6]
    assert ours["leave"] == 3  # one at the start of training, one per epoch


class CountingStream:
    """An iterable training stream with Lightning's state pair: it continues from the position its state says."""

    def __init__(self):
        self.index = 0

    def __iter__(self):
        while self.index < len(self):
            self.index += 1
            yield torch.full((2, 32), float(self.index - 1))

    def __len__(self):
        return 4

    def state_dict(self):
        return {"index": self.index}

    def load_state_dict(self, state):
        self.index = state["index"]


def test_lightning_resumes_a_volt_checkpoint_inside_a_stateful_stream(request, tmp_path):
    """The stream's position goes where Lightning reads it (`loops.fit_loop.state_dict.combined_loader`)."""

    def stream_model(pl):
        class Model(part(pl, "demos.boring_classes").BoringModel):
            def __init__(self):
                super().__init__()
                self.seen = []

            def training_step(self, batch, batch_idx):
                self.seen.append(int(batch[0, 0]))
                return super().training_step(batch, batch_idx)

            def train_dataloader(self):
                return CountingStream()

        return Model()

    quiet = dict(default_root_dir=tmp_path, logger=False, enable_progress_bar=False, enable_model_summary=False,
                 num_sanity_val_steps=0, limit_val_batches=0)
    every_two = volt.callbacks.ModelCheckpoint(dirpath=tmp_path, filename="step2", every_n_train_steps=2)
    volt.Trainer(max_steps=3, callbacks=[every_two], **quiet).fit(stream_model(volt))
    checkpoint = torch.load(tmp_path / "step2.ckpt", weights_only=True)
    assert checkpoint["loops"]["fit_loop"]["state_dict"]["combined_loader"] == [{"index": 2}]

    pl = request.getfixturevalue("quiet_lightning")
    model = stream_model(pl)
    pl.Trainer(max_steps=4, enable_checkpointing=False, **quiet).fit(model, ckpt_path=tmp_path / "step2.ckpt")
    assert model.seen == [2, 3]


def test_prediction_writer_batch_indices(request, tmp_path):
    """A batch-interval writer gets each batch's sample indices; the loop keeps the epoch's only for an
    epoch-interval writer."""

    def program(pl):
        written, at_epoch_end = [], []

        class Writer(pl.callbacks.BasePredictionWriter):
            def write_on_batch_end(self, trainer, module, prediction, batch_indices, batch, batch_idx, dl_idx):
                written.append(list(batch_indices))

            def write_on_epoch_end(self, trainer, module, predictions, batch_indices):
                written.append(batch_indices)

            def on_predict_epoch_end(self, trainer, module):
                at_epoch_end.append(trainer.predict_loop.epoch_batch_indices)
                super().on_predict_epoch_end(trainer, module)

        boring = part(pl, "demos.boring_classes")
        data = DataLoader(boring.RandomDataset(32, 12), batch_size=4)
        for interval in ("batch", "epoch"):
            run = pl.Trainer(default_root_dir=tmp_path, logger=False, enable_progress_bar=False,
                             limit_predict_batches=2, callbacks=Writer(interval))
            run.predict(boring.BoringModel(), dataloaders=data, return_predictions=False)
        return written, at_epoch_end

    ours, theirs = run_each(request, program)
    assert ours == theirs
    assert ours[1][0] == [[]] and ours[1][1] == [[[0, 1, 2, 3], [4, 5, 6, 7]]]


def test_data_argument_errors_match_lightnings_wording(request, tmp_path):
    """Lightning's tests (and users') match these messages."""

    def program(pl):
        errors = part(pl, "utilities.exceptions")
        for bad in (-1, "test"):
            with pytest.raises(errors.MisconfigurationException, match="should be an int >= 0"):
                pl.Trainer(default_root_dir=tmp_path, reload_dataloaders_every_n_epochs=bad)

        class TwoValidationLoaders(part(pl, "demos.boring_classes").BoringModel):  # and no `batch_size` field
            def val_dataloader(self):
                return [super().val_dataloader(), super().val_dataloader()]

        run = pl.Trainer(default_root_dir=tmp_path, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False)
        with pytest.raises(errors.MisconfigurationException,
                           match="Batch size finder cannot be used with multiple val dataloaders"):
            part(pl, "tuner").Tuner(run).scale_batch_size(TwoValidationLoaders(), method="validate")

    run_each(request, program)
