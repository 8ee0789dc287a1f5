"""Lightning's import paths in volt hold the real volt objects, behaving as Lightning's do: trainer states,
accelerators, utilities, core, demos, DummyLogger. Compared with pytorch-lightning 2.6.6 where it is installed."""
import importlib
import copy
import pickle
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader

import volt
from helpers import BoringModel, loader
from volt.accelerators import (Accelerator, AcceleratorRegistry, CPUAccelerator, CUDAAccelerator,
                               find_usable_cuda_devices)
from volt.trainer.states import RunningStage, TrainerFn, TrainerState, TrainerStatus

SRC = Path(__file__).resolve().parents[1] / "src"


def make_trainer(**kwargs):
    defaults = dict(max_epochs=1, limit_val_batches=1, logger=False, enable_checkpointing=False,
                    enable_progress_bar=False, enable_model_summary=False)
    return volt.Trainer(**{**defaults, **kwargs})


# ----------------------------------------------------------------------------------------------- the same objects
def test_lightning_paths_hold_volts_own_objects():
    import volt.core
    import volt.trainer
    import volt.utilities
    from volt.utilities.combined_loader import CombinedLoader
    from volt.utilities.parsing import AttributeDict

    assert volt.trainer.Trainer is volt.Trainer and volt.trainer.seed_everything is volt.seed_everything
    assert volt.core.LightningModule is volt.LightningModule
    assert volt.core.LightningDataModule is volt.LightningDataModule
    assert volt.utilities.CombinedLoader is CombinedLoader
    assert isinstance(volt.LightningModule().hparams, AttributeDict)


# ----------------------------------------------------------------------------------------------- trainer.states
class StateSpy(volt.Callback):
    def __init__(self):
        self.seen = []

    def _record(self, trainer):
        state = trainer.state
        self.seen.append((state.fn, state.stage, state.status))

    def on_train_start(self, trainer, pl_module):
        self._record(trainer)

    def on_validation_start(self, trainer, pl_module):
        self._record(trainer)

    def on_test_start(self, trainer, pl_module):
        self._record(trainer)


def test_trainer_state_holds_lightnings_enums_equal_to_their_strings():
    spy = StateSpy()
    trainer = make_trainer(callbacks=[spy], num_sanity_val_steps=0)
    assert trainer.state == TrainerState() and trainer.state.status == "initializing"
    model = BoringModel()
    trainer.fit(model, loader(), loader())
    trainer.test(model, loader(), verbose=False)
    assert spy.seen == [("fit", "train", "running"), ("fit", "validate", "running"), ("test", "test", "running")]
    fn, stage, status = spy.seen[0]
    assert fn is TrainerFn.FITTING and stage is RunningStage.TRAINING and status is TrainerStatus.RUNNING
    assert {"fit": 1}[fn] == 1 and {TrainerFn.FITTING: 1}["fit"] == 1 and f"{fn}" == str(fn) == "fit"
    assert trainer.state.finished and trainer.state.stopped and trainer.state.fn == TrainerFn.TESTING
    assert RunningStage.SANITY_CHECKING.evaluating and RunningStage.SANITY_CHECKING.dataloader_prefix == "val"
    assert TrainerFn.from_str("fitting") is TrainerFn.FITTING and TrainerFn.from_str("FIT", "value") == "fit"
    with pytest.raises(ValueError, match="'fitt' is not a TrainerFn"):
        TrainerFn.from_str("fitt")


def test_state_enums_match_lightnings(quiet_lightning):
    from pytorch_lightning.trainer import states

    for ours, theirs in ((TrainerFn, states.TrainerFn), (RunningStage, states.RunningStage),
                         (TrainerStatus, states.TrainerStatus)):
        assert {m.name: m.value for m in ours} == {m.name: m.value for m in theirs}
        for member in theirs:
            assert ours[member.name] == member and member == ours[member.name]
    assert TrainerState().status == states.TrainerState().status


# ----------------------------------------------------------------------------------------------- accelerators
def test_an_accelerator_instance_selects_the_device_and_is_trainer_accelerator():
    accelerator = CPUAccelerator()
    trainer = make_trainer(accelerator=accelerator)
    trainer.fit(BoringModel(), loader())
    assert trainer.accelerator is accelerator and trainer.strategy.root_device == torch.device("cpu")
    assert isinstance(make_trainer().accelerator, CPUAccelerator)
    assert AcceleratorRegistry.available_accelerators() == ["cpu", "cuda", "mps"]
    assert isinstance(AcceleratorRegistry.get("cpu"), CPUAccelerator)
    assert CPUAccelerator.parse_devices(2) == 2 and CPUAccelerator.get_parallel_devices(2) == [torch.device("cpu")] * 2
    assert CUDAAccelerator.is_available() == torch.cuda.is_available()

    class TPUish(Accelerator):
        pass

    with pytest.raises(ValueError, match=r"accelerator=TPUish\(\) is not supported: volt trains on 'cpu', 'cuda'"):
        make_trainer(accelerator=TPUish())


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the messages on a machine without CUDA")
def test_find_usable_cuda_devices_without_cuda():
    assert find_usable_cuda_devices(0) == []
    with pytest.raises(ValueError, match="this machine has no visible CUDA device"):
        find_usable_cuda_devices(1)
    with pytest.raises(RuntimeError, match="asks for a CUDA GPU, but none is available"):
        make_trainer(accelerator=CUDAAccelerator())


# ----------------------------------------------------------------------------------------------- utilities
def test_grad_norm_matches_lightnings(quiet_lightning):
    from pytorch_lightning.utilities import grad_norm as lightning_grad_norm

    from volt.utilities import grad_norm

    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 1))
    model(torch.randn(5, 3)).sum().backward()
    for norm_type in (1, 2.0, "inf"):
        ours, theirs = grad_norm(model, norm_type), lightning_grad_norm(model, norm_type)
        assert ours.keys() == theirs.keys()
        assert all(torch.allclose(ours[k], theirs[k]) for k in ours)
    with pytest.raises(ValueError, match="`norm_type` must be a positive number or 'inf'"):
        grad_norm(model, 0)


def test_isolate_rng_and_seed_helpers():
    from volt.utilities.seed import isolate_rng, reset_seed

    torch.manual_seed(1)
    with isolate_rng():
        inside = torch.rand(2)
    assert torch.equal(torch.rand(2), inside)
    volt.seed_everything(5, verbose=False)
    first = torch.rand(1)
    reset_seed()
    assert torch.equal(torch.rand(1), first)


def test_attribute_lookup_across_model_hparams_and_datamodule():
    from volt.utilities.parsing import is_picklable, lightning_getattr, lightning_hasattr, lightning_setattr

    class Data(volt.LightningDataModule):
        def __init__(self, batch_size=4):
            super().__init__()
            self.save_hyperparameters()

    class Model(BoringModel):
        def __init__(self, lr=0.1):
            super().__init__(lr=lr)
            self.save_hyperparameters()

    model = Model()
    trainer = make_trainer()
    trainer.fit(model, datamodule=_with_loaders(Data()))
    assert lightning_getattr(model, "lr") == 0.1 and lightning_getattr(model, "batch_size") == 4
    lightning_setattr(model, "batch_size", 8)
    assert trainer.datamodule.hparams.batch_size == 8 and not lightning_hasattr(model, "nothing")
    with pytest.raises(AttributeError, match="nothing is neither stored in the model namespace"):
        lightning_getattr(model, "nothing")
    assert is_picklable({"a": 1}) and not is_picklable(lambda: 0)


def _with_loaders(datamodule):
    datamodule.train_dataloader = lambda: loader()
    datamodule.val_dataloader = lambda: loader()
    return datamodule


def test_small_utilities_behave_as_lightnings(quiet_lightning):
    import pytorch_lightning.utilities as theirs

    from volt import utilities as ours
    from volt.utilities.data import extract_batch_size
    from volt.utilities.model_helpers import is_overridden

    class Tied(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
            self.b.weight = self.a.weight

    assert ours.find_shared_parameters(Tied()) == theirs.find_shared_parameters(Tied()) == [["a.weight", "b.weight"]]
    untied = Tied()
    untied.b.weight = torch.nn.Parameter(untied.b.weight.detach().clone())
    assert ours.set_shared_parameters(untied, [["a.weight", "b.weight"]]).b.weight is untied.a.weight
    assert ours.suggested_max_num_workers(1) == theirs.suggested_max_num_workers(1)
    model = torch.nn.Linear(8, 4)
    count = ours.measure_flops(model, lambda: model(torch.randn(2, 8)))
    assert count == theirs.measure_flops(model, lambda: model(torch.randn(2, 8))) == 2 * 2 * 8 * 4
    assert extract_batch_size({"x": torch.zeros(5, 2), "y": [1]}) == 5
    assert is_overridden("training_step", BoringModel()) and not is_overridden("on_fit_start", BoringModel())
    no_step = BoringModel()
    no_step.training_step = None
    assert not is_overridden("training_step", no_step)
    assert ours.GradClipAlgorithmType.supported_types() == theirs.GradClipAlgorithmType.supported_types()


def test_rank_zero_helpers_and_warning_categories(monkeypatch):
    from volt.utilities.rank_zero import LightningDeprecationWarning, WarningCache, rank_prefixed_message
    from volt.utilities.warnings import PossibleUserWarning, disable_possible_user_warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cache = WarningCache()
        cache.warn("once")
        cache.warn("once")
        volt.utilities.rank_zero_deprecation("old")
    assert [str(w.message) for w in caught] == ["once", "old"] and caught[1].category is LightningDeprecationWarning
    assert rank_prefixed_message("hello", 1) == "[rank: 1] hello" and rank_prefixed_message("hello", None) == "hello"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        disable_possible_user_warnings()
        warnings.warn("maybe", PossibleUserWarning)
    assert not caught
    with warnings.catch_warnings(record=True) as caught:  # Lightning's environment switch, read on import
        warnings.simplefilter("always")
        monkeypatch.setenv("POSSIBLE_USER_WARNINGS", "off")
        importlib.reload(volt)
        warnings.warn("maybe", PossibleUserWarning)
    assert not caught


def test_importing_volt_shares_its_rank_with_lightning_utilities():
    code = ("import volt, lightning_utilities.core.rank_zero as utilities, volt.utilities.rank_zero as ours; "
            "print(utilities.rank_zero_only.rank); ours.set_rank(5); print(utilities.rank_zero_only.rank)")
    env = {"PYTHONPATH": str(SRC), "RANK": "3", "PATH": "/usr/bin:/bin"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert result.stdout.split() == ["3", "5"], result.stderr


def test_requirement_cache_and_flags():
    from volt.utilities.imports import _OMEGACONF_AVAILABLE, RequirementCache, compare_version

    assert bool(RequirementCache("torch>=2.6")) and not RequirementCache("torch<1.0")
    assert "not met" in str(RequirementCache("no_such_package_volt"))
    assert compare_version("torch", __import__("operator").ge, "2.0") and not compare_version("nope", max, "1")
    assert bool(_OMEGACONF_AVAILABLE) == (__import__("importlib").util.find_spec("omegaconf") is not None)


def test_hparams_yaml_round_trip(tmp_path):
    from volt.core.saving import load_hparams_from_yaml, save_hparams_to_yaml

    save_hparams_to_yaml(tmp_path / "hparams.yaml", {"lr": 0.1, "layers": [1, 2]})
    assert dict(load_hparams_from_yaml(tmp_path / "hparams.yaml", use_omegaconf=False)) == {"lr": 0.1,
                                                                                           "layers": [1, 2]}
    with pytest.warns(UserWarning, match="Missing hyperparameters file"):
        assert load_hparams_from_yaml(tmp_path / "missing.yaml") == {}


@pytest.mark.parametrize("use_omegaconf", [True, False])
def test_hparams_yaml_is_written_as_lightning_writes_it(tmp_path, quiet_lightning, use_omegaconf):
    from pytorch_lightning.core.saving import save_hparams_to_yaml as lightning_save

    from volt.core.saving import save_hparams_to_yaml

    hparams = {"lr": 0.1, "net": {"width": 8, "act": "relu"}, "layers": [1, 2], "name": "b"}
    save_hparams_to_yaml(tmp_path / "volt.yaml", hparams, use_omegaconf=use_omegaconf)
    lightning_save(tmp_path / "lightning.yaml", hparams, use_omegaconf=use_omegaconf)
    assert (tmp_path / "volt.yaml").read_text() == (tmp_path / "lightning.yaml").read_text()


def test_dummy_logger_accepts_anything_and_copies():
    from volt.loggers.logger import DummyLogger

    logger = DummyLogger()
    logger.experiment.add_image("x", 1)
    logger.log_table(key="t")
    logger[0].experiment.anything()
    logger.experiment["run/param"] = 1  # item assignment is accepted and forgotten
    assert logger.experiment["run/param"] is logger.experiment
    assert (logger.name, logger.version) == ("", "")
    assert isinstance(copy.deepcopy(logger), DummyLogger) and isinstance(pickle.loads(pickle.dumps(logger)), DummyLogger)


def test_cli_logo_prints(capsys):
    from volt.cli import cli_lightning_logo

    cli_lightning_logo()
    assert "volt" in capsys.readouterr().out


def test_instantiate_module_builds_from_a_config():
    from volt.cli import instantiate_module
    from volt.demos.boring_classes import DemoModel

    model = instantiate_module(DemoModel, {"out_dim": 3})
    assert isinstance(model, DemoModel) and model.l1.out_features == 3


# ----------------------------------------------------------------------------------------------- demos
def test_boring_demos_draw_and_train_as_lightnings(quiet_lightning):
    from pytorch_lightning.demos import boring_classes as theirs

    from volt.demos import boring_classes as ours

    for name in ("BoringModel", "DemoModel", "ManualOptimBoringModel"):
        torch.manual_seed(3)
        a = getattr(ours, name)()
        torch.manual_seed(3)
        b = getattr(theirs, name)()
        assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    torch.manual_seed(3)
    data = ours.BoringDataModule()
    torch.manual_seed(3)
    assert torch.equal(data.random_full.data, theirs.BoringDataModule().random_full.data)
    torch.manual_seed(0)
    model = ours.BoringModel()
    make_trainer(max_epochs=2, limit_train_batches=4, num_sanity_val_steps=0).fit(model)
    torch.manual_seed(0)
    reference = theirs.BoringModel()
    quiet_lightning.Trainer(max_epochs=2, limit_train_batches=4, limit_val_batches=1, num_sanity_val_steps=0,
                            logger=False, enable_checkpointing=False, enable_progress_bar=False,
                            enable_model_summary=False).fit(reference)
    assert torch.equal(model.layer.weight, reference.layer.weight)


def test_language_demos_match_lightnings_on_the_same_text(tmp_path, quiet_lightning):
    from pytorch_lightning.demos import lstm as their_lstm
    from pytorch_lightning.demos import transformer as theirs

    from volt.demos import lstm as our_lstm
    from volt.demos import transformer as ours

    (tmp_path / "wikitext-2.txt").write_text("the cat sat on the mat\n the dog sat\n" * 30)
    data = ours.WikiText2(tmp_path, block_size=5, download=False)
    reference = theirs.WikiText2(tmp_path, block_size=5, download=False)
    assert data.vocab_size == reference.vocab_size == 7 and len(data) == len(reference)
    assert all(torch.equal(x, y) for x, y in zip(data[3], reference[3]))
    sampler, their_sampler = our_lstm.SequenceSampler(data, 4), their_lstm.SequenceSampler(reference, 4)
    assert list(sampler) == list(their_sampler) and len(sampler) == len(their_sampler)
    inputs, target = next(iter(DataLoader(data, batch_size=4)))
    for ours_cls, theirs_cls, kwargs in ((ours.Transformer, theirs.Transformer, {}),
                                         (our_lstm.SimpleLSTM, their_lstm.SimpleLSTM, {"nlayers": 2})):
        torch.manual_seed(11)
        a = ours_cls(vocab_size=data.vocab_size, **kwargs).eval()
        torch.manual_seed(11)
        b = theirs_cls(vocab_size=data.vocab_size, **kwargs).eval()
        assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
        if ours_cls is ours.Transformer:
            assert torch.allclose(a(inputs, target), b(inputs, target))
        else:
            assert torch.allclose(a(inputs, a.init_hidden(4))[0], b(inputs, b.init_hidden(4))[0])


def test_wikitext2_without_the_file_generates_a_corpus_once_and_the_same_everywhere(tmp_path):
    from volt.demos.transformer import GENERATED_FILE, WikiText2, generate_corpus

    state = torch.get_rng_state()
    data = WikiText2(tmp_path)
    assert torch.equal(torch.get_rng_state(), state)  # the global RNG is untouched
    assert data.path == tmp_path / GENERATED_FILE and data.vocab_size > 900 and len(data) > 6000
    assert (tmp_path / GENERATED_FILE).read_text() == generate_corpus()
    with pytest.raises(FileNotFoundError, match="does not exist"):
        WikiText2(tmp_path / "empty", download=False)


def test_mnist_stand_in_has_mnists_layout_and_needs_no_download(tmp_path):
    from volt.demos.mnist_datamodule import MNIST, MNISTDataModule

    train, test = MNIST(str(tmp_path), train=True), MNIST(str(tmp_path), train=False, normalize=None)
    assert (len(train), len(test)) == (60000, 10000)
    image, label = train[12345]
    assert image.shape == (1, 28, 28) and image.dtype == torch.float32 and 0 <= label <= 9
    plain, _ = test[0]
    assert 0.0 <= plain.min() and plain.max() <= 1.0 and plain[0, :4].sum() == 0  # a centred digit, empty border
    assert not torch.equal(train[5][0], train[5 + 1497][0])  # copies are shifted
    assert not any(tmp_path.iterdir())  # nothing downloaded or written
    received = []
    MNIST(train=False, transform=lambda picture: received.append(picture.size) or 0)[7]
    assert received == [(28, 28)]  # a transform gets a PIL image, as with torchvision
    datamodule = MNISTDataModule(num_workers=0, batch_size=100)
    datamodule.setup("fit")
    assert len(datamodule.train_dataloader()) == 550 and len(datamodule.val_dataloader()) == 50
