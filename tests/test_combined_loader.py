"""`volt.utilities.CombinedLoader` iterated directly and given to the Trainer, compared with pytorch-lightning 2.6.6
(the test oracle): the same (batch, batch_idx, dataloader_idx) triples in every mode, the same lengths and errors,
and the same logged metrics when a fit trains on a CombinedLoader or a validate runs a sequential one."""
import pytest
import torch
from torch.utils.data import DataLoader, IterableDataset

import volt
from helpers import loader, memory_logger_class
from volt.utilities import CombinedLoader

pytestmark = [pytest.mark.filterwarnings("ignore::UserWarning"), pytest.mark.filterwarnings("ignore::DeprecationWarning")]

QUIET = dict(enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
MODES = ["min_size", "max_size_cycle", "max_size", "sequential"]


def oracle_class(quiet_lightning):
    from pytorch_lightning.utilities import CombinedLoader as LightningCombinedLoader

    return LightningCombinedLoader


def plain(value):
    """Tensors as lists, so that two runs' outputs compare with ==."""
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if isinstance(value, dict):
        return {key: plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(plain(item) for item in value)
    return value


def iterables():
    """Loaders of 2, 3 and 5 batches (`range` datasets, so the batches say where they come from)."""
    return {"a": DataLoader(range(4), batch_size=2), "b": DataLoader(range(10, 15), batch_size=2),
            "c": DataLoader(range(20, 30), batch_size=2)}


def run(cls, structure, mode):
    combined = cls(structure, mode)
    with pytest.raises(RuntimeError, match="Please call `iter"):
        len(combined)
    iter(combined)
    length = len(combined)
    triples = [plain(item) for item in combined]
    again = [plain(item) for item in combined]  # a second iteration starts over
    return length, triples, again, len(combined.flattened)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("shape", ["dict", "list", "nested", "single"])
def test_iteration_as_lightning(quiet_lightning, mode, shape):
    def structure():
        loaders = iterables()
        return {"dict": loaders, "list": list(loaders.values()), "single": loaders["b"],
                "nested": {"x": [loaders["a"], loaders["b"]], "y": (loaders["c"],)}}[shape]

    ours = run(CombinedLoader, structure(), mode)
    theirs = run(oracle_class(quiet_lightning), structure(), mode)
    assert ours == theirs
    assert ours[1]  # the runs compared do yield batches


def test_default_mode_flattened_iterables_and_samplers(quiet_lightning):
    for cls in (CombinedLoader, oracle_class(quiet_lightning)):
        loaders = iterables()
        combined = cls(loaders)
        assert combined.iterables is loaders and combined.flattened == list(loaders.values())
        assert len(iter(combined)) == 2  # min_size is the default
        assert combined.sampler == {key: dl.sampler for key, dl in loaders.items()}
        assert combined.batch_sampler == {key: dl.batch_sampler for key, dl in loaders.items()}
        replacement = [DataLoader(range(100, 106), batch_size=3) for _ in range(3)]
        combined.flattened = replacement
        assert combined.iterables == dict(zip(loaders, replacement))
        assert plain(next(iter(combined))) == ({key: [100, 101, 102] for key in "abc"}, 0, 0)
        with pytest.raises(ValueError, match=r"Mismatch in flattened length \(1\) and existing length \(3\)"):
            combined.flattened = replacement[:1]


def test_unknown_mode_and_length_without_len(quiet_lightning):
    class Stream(IterableDataset):
        def __iter__(self):
            return iter(range(3))

    for cls in (CombinedLoader, oracle_class(quiet_lightning)):
        with pytest.raises(ValueError, match=r"Unsupported mode 'longest', please select one of: \['min_size'"):
            cls([loader()], "longest")
        combined = iter(cls([DataLoader(Stream()), DataLoader(range(4))], "max_size_cycle"))
        with pytest.raises(TypeError):  # inf batches: len() cannot say it
            len(combined)
        assert len(iter(cls([DataLoader(Stream()), DataLoader(range(4))], "min_size"))) == 4


def test_limits_cap_each_loader(quiet_lightning):
    """`limits` (one for all, or one per loader of `flattened`) caps each loader's batches: `len()` counts them as
    Lightning's does, and iteration stops there too (Lightning's non-sequential iterators ignore the limits and
    leave stopping to its loops, which go by `len()`)."""
    lengths = {"min_size": 3, "max_size_cycle": 3, "max_size": 3, "sequential": 5}
    for mode, expected in lengths.items():
        for cls in (CombinedLoader, oracle_class(quiet_lightning)):
            combined = cls({"a": list(range(5)), "b": list(range(10, 13))}, mode)
            assert combined.limits is None
            combined.limits = 4 if mode == "min_size" else [2, float("inf")]
            assert combined.limits == ([4, 4] if mode == "min_size" else [2, float("inf")])
            iterated = [batch for batch, _, _ in iter(combined)]
            if cls is CombinedLoader:
                batches = iterated
            assert len(combined) == expected
            with pytest.raises(ValueError, match=r"Mismatch in number of limits \(1\) and number of iterables \(2\)"):
                combined.limits = [1]
            combined.limits = None
            assert combined.limits is None
        if mode == "sequential":
            assert batches == [0, 1, 10, 11, 12]
        else:
            last_a = {"min_size": 2, "max_size_cycle": 0, "max_size": None}[mode]  # "a" cut to 2 batches but in min_size
            assert len(batches) == expected and batches[-1] == {"a": last_a, "b": 12}


def test_reset_starts_over(quiet_lightning):
    for cls in (CombinedLoader, oracle_class(quiet_lightning)):
        combined = iter(cls(iterables(), "sequential"))
        next(combined)
        combined.reset()
        with pytest.raises(RuntimeError, match="Please call `iter"):
            len(combined)
        assert plain(next(iter(combined))) == ([0, 1], 0, 0)


def test_pickles_while_iterating_and_starts_over(quiet_lightning):
    """As Lightning's, a CombinedLoader pickles mid-iteration (e.g. held by a module sent to ddp_spawn processes);
    the copy has the same structure and starts from the beginning."""
    import pickle

    for cls in (CombinedLoader, oracle_class(quiet_lightning)):
        combined = iter(cls({"a": loader(n=4), "b": [5, 6, 7]}, "max_size_cycle"))
        next(combined)
        copy = pickle.loads(pickle.dumps(combined))
        assert [plain(step) for step in iter(copy)] == [plain(step) for step in iter(combined)]
        assert list(copy.sampler) == ["a", "b"] and copy.sampler["b"] is None

# ----------------------------------------------------------------------------------------------- with the Trainer
def two_loader_module(pl):
    class TwoLoaders(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.layer = torch.nn.Linear(4, 1)

        def training_step(self, batch, batch_idx):
            loss = sum(torch.nn.functional.mse_loss(self.layer(x), y) for x, y in batch.values())
            self.log("train_loss", loss, on_step=True, on_epoch=True)
            self.log("batch_idx", float(batch_idx), on_step=True)
            return loss

        def validation_step(self, batch, batch_idx, dataloader_idx=0):
            loss = torch.nn.functional.mse_loss(self.layer(batch[0]), batch[1])
            self.log("val_loss", loss)
            self.log("seen", float(batch_idx + 10 * dataloader_idx), reduce_fx=max)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    return TwoLoaders


def fit_and_validate(pl, root, mode):
    pl.seed_everything(0, verbose=False)
    logger = memory_logger_class(pl.loggers.Logger)()
    trainer = pl.Trainer(max_epochs=2, logger=logger, log_every_n_steps=1, num_sanity_val_steps=0,
                         default_root_dir=root, **QUIET)
    model = two_loader_module(pl)()
    given = {"short": loader(n=4, seed=1, shuffle=True), "long": loader(n=10, seed=2, shuffle=True)}
    train = pl.utilities.CombinedLoader(given, mode) if mode else given  # a plain dict trains as max_size_cycle
    trainer.fit(model, train)
    shown = trainer.train_dataloader  # the loaders in the structure given (the Trainer's copies of them)
    assert {key: len(dl) for key, dl in shown.items()} == {"short": 2, "long": 5}
    fitted = [(step, {key: round(value, 5) for key, value in sorted(metrics.items())})
              for step, metrics in logger.metrics]
    logger.metrics.clear()
    val = pl.utilities.CombinedLoader([loader(n=4, seed=3), loader(n=6, seed=4)], "sequential")
    results = trainer.validate(model, val, verbose=False)
    validated = [(step, {key: round(value, 5) for key, value in sorted(metrics.items())})
                 for step, metrics in logger.metrics]
    return fitted, validated, [{key: round(value, 5) for key, value in r.items()} for r in results]


@pytest.mark.parametrize("mode", ["max_size_cycle", "min_size", None])
def test_fit_on_a_combined_loader_and_sequential_validate_as_lightning(tmp_path, quiet_lightning, mode):
    theirs = fit_and_validate(quiet_lightning, tmp_path / "pl", mode)
    ours = fit_and_validate(volt, tmp_path / "volt", mode)
    assert ours == theirs
    steps_per_epoch = 2 if mode == "min_size" else 5
    assert len(ours[0]) > 2 * steps_per_epoch  # the fit did train on the combined batches, every epoch
    assert {"val_loss/dataloader_idx_1", "seen/dataloader_idx_1"} <= set(ours[2][1])


def test_fit_refuses_a_sequential_combined_loader(tmp_path, quiet_lightning):
    messages, sizes = [], []
    for pl in (quiet_lightning, volt):
        trainer = pl.Trainer(max_epochs=1, logger=False, default_root_dir=tmp_path, **QUIET)
        train = pl.utilities.CombinedLoader({"short": loader(n=4), "long": loader(n=10)}, "sequential")
        with pytest.raises(ValueError, match=r'does not support the `CombinedLoader\(mode="sequential"\)` mode') as err:
            trainer.fit(two_loader_module(pl)(), train)
        messages.append(str(err.value).split("mode. ", 1)[1])
        sizes.append(trainer.num_training_batches)
    assert messages[0] == messages[1]  # the same list of the modes that work
    assert sizes == [7, 7]  # sized before it was refused


def test_validate_with_a_max_size_combined_loader_as_lightning(tmp_path, quiet_lightning):
    """A non-sequential CombinedLoader evaluates as one dataloader whose batches hold one batch of each loader."""
    def validate(pl):
        class Pairs(two_loader_module(pl)):
            def validation_step(self, batch, batch_idx):
                total = sum(float(part[1].sum()) for part in batch if part is not None)
                self.log("total", total, reduce_fx=sum)
                self.log("parts", float(sum(part is not None for part in batch)), reduce_fx=sum)

        trainer = pl.Trainer(logger=False, default_root_dir=tmp_path, **QUIET)
        val = pl.utilities.CombinedLoader([loader(n=4, seed=3), loader(n=10, seed=4)], "max_size")
        results = trainer.validate(Pairs(), val, verbose=False)
        assert [len(dl) for dl in trainer.val_dataloaders] == [2, 5]  # the list given
        return [{key: round(value, 4) for key, value in r.items()} for r in results]

    ours, theirs = validate(volt), validate(quiet_lightning)
    assert ours == theirs and ours[0]["parts"] == 7.0



def test_fit_on_several_loaders_resumes_mid_epoch_exactly(tmp_path):
    """A checkpoint taken inside an epoch of combined, shuffled loaders resumes to the weights of a run never
    interrupted (the consumed combined batches are replayed from the epoch's saved RNG state)."""
    def fit(root, ckpt_path=None, save=False):
        volt.seed_everything(0, verbose=False)
        model = two_loader_module(volt)()
        every_step = volt.callbacks.ModelCheckpoint(dirpath=root, every_n_train_steps=1, save_top_k=-1,
                                                    filename="{step}")
        trainer = volt.Trainer(max_epochs=2, logger=False, default_root_dir=root,
                               callbacks=[every_step] if save else [], **{**QUIET, "enable_checkpointing": save})
        train = {"short": loader(n=4, seed=1, shuffle=True), "long": loader(n=10, seed=2, shuffle=True)}
        trainer.fit(model, CombinedLoader(train, "max_size_cycle"), ckpt_path=ckpt_path)
        return model.layer.weight

    whole = fit(tmp_path / "whole", save=True)
    for step in (2, 7):  # inside the first and the second epoch (5 batches each)
        resumed = fit(tmp_path / f"from-{step}", ckpt_path=tmp_path / "whole" / f"step={step}.ckpt")
        assert torch.equal(resumed, whole), f"resumed from step {step}"


class CountedStarts:
    """Three numbers; counts how often an iteration over them starts."""

    def __init__(self):
        self.starts = 0

    def __iter__(self):
        self.starts += 1
        return iter([torch.zeros(1, 4)] * 3)

    def __len__(self):
        return 3


@pytest.mark.parametrize("mode", ["min_size", "max_size_cycle", "max_size", "sequential"])
def test_iter_starts_the_loaders_and_a_fit_starts_them_once_an_epoch(tmp_path, mode):
    """As Lightning: `iter(combined)` starts every loader's iteration (their worker processes), in sequential mode
    the first one's only; a fit starts each once an epoch."""
    parts = [CountedStarts(), CountedStarts()]
    iter(CombinedLoader(parts, mode))
    assert [part.starts for part in parts] == ([1, 0] if mode == "sequential" else [1, 1])
    if mode == "sequential":
        return

    class Model(volt.LightningModule):
        def __init__(self):
            super().__init__()
            self.layer = torch.nn.Linear(4, 1)

        def training_step(self, batch, batch_idx):
            return sum(self.layer(x).sum() for x in batch)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    parts = [CountedStarts(), CountedStarts()]
    volt.Trainer(max_epochs=2, logger=False, default_root_dir=tmp_path, **QUIET).fit(
        Model(), CombinedLoader(parts, mode))
    assert [part.starts for part in parts] == [2, 2]
