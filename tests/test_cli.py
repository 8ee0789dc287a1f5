"""LightningCLI and the `volt` command, driven in-process through `args=` as a script's command line would be."""
import importlib
import pickle
import re
import subprocess
import sys
import textwrap

import pytest
import torch
import yaml

from volt import Callback, LightningDataModule, LightningModule, Trainer
from volt.callbacks import ModelCheckpoint
from volt.cli import LightningCLI, OptimizerCallable, SaveConfigCallback, main
from volt.examples import DigitsClassifier, DigitsDataModule

QUIET = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]

USER_CODE = '''
import torch
from torch.utils.data import DataLoader
from volt import LightningModule


class UserModel(LightningModule):
    """A model a user wrote in their own package; it brings its own data."""

    def __init__(self, width: int = 4, note: str = "none"):
        super().__init__()
        self.save_hyperparameters()
        self.layer = torch.nn.Linear(width, 1)

    def training_step(self, batch, batch_idx):
        return self.layer(batch).pow(2).mean()

    def validation_step(self, batch, batch_idx):
        self.log("val_loss", self.layer(batch).pow(2).mean())

    def train_dataloader(self):
        return DataLoader(torch.randn(8, self.hparams.width), batch_size=4)

    def val_dataloader(self):
        return DataLoader(torch.randn(4, self.hparams.width), batch_size=4)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)
'''


@pytest.fixture(autouse=True)
def _restore_seed_env(monkeypatch):
    """The CLI seeds everything, which sets PL_GLOBAL_SEED; keep that from leaking into other tests."""
    monkeypatch.delenv("PL_GLOBAL_SEED", raising=False)
    monkeypatch.delenv("PL_SEED_WORKERS", raising=False)


@pytest.fixture(scope="module")
def user_package(tmp_path_factory):
    """`user_pkg.models.UserModel`, importable the way a user's installed package is (and the same code on
    Lightning as `user_pkg_lightning.models.UserModel`)."""
    root = tmp_path_factory.mktemp("user_code")
    for package, framework in (("user_pkg", "volt"), ("user_pkg_lightning", "pytorch_lightning")):
        (root / package).mkdir()
        (root / package / "__init__.py").write_text("")
        code = textwrap.dedent(USER_CODE).replace("from volt ", f"from {framework} ")
        (root / package / "models.py").write_text(code)
    sys.path.insert(0, str(root))
    yield "user_pkg.models.UserModel"
    sys.path.remove(str(root))
    for name in ("user_pkg.models", "user_pkg", "user_pkg_lightning.models", "user_pkg_lightning"):
        sys.modules.pop(name, None)


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    """A short `volt fit` of the digits example: (its log dir, best checkpoint path, best val_acc)."""
    root = tmp_path_factory.mktemp("digits")
    cli = _digits_cli(["fit", "--trainer.max_epochs", "3", "--model.hidden_size", "32",
                       "--trainer.default_root_dir", str(root), *QUIET])
    checkpoint = cli.trainer.checkpoint_callback
    return cli.trainer.log_dir, checkpoint.best_model_path, float(checkpoint.best_model_score)


def _digits_cli(args, **kwargs):
    """The CLI as `volt` builds it: the best checkpoint is the one with the highest val_acc."""
    callbacks = [ModelCheckpoint(monitor="val_acc", mode="max"), *kwargs.pop("callbacks", [])]
    return LightningCLI(DigitsClassifier, DigitsDataModule, trainer_defaults={"callbacks": callbacks}, args=args,
                        **kwargs)


def _printed_config(capsys, args, **kwargs):
    with pytest.raises(SystemExit) as exit_info:
        LightningCLI(DigitsClassifier, DigitsDataModule, args=args, **kwargs)
    assert exit_info.value.code == 0
    return yaml.safe_load(capsys.readouterr().out)


def test_print_config_shows_every_default(capsys):
    config = _printed_config(capsys, ["fit", "--print_config"], trainer_defaults={"max_epochs": 7})
    assert config["model"] == {"hidden_size": 256, "lr": 3e-3, "dropout": 0.1}
    assert config["data"]["batch_size"] == 64 and config["data"]["val_fraction"] == 0.2
    assert config["trainer"]["max_epochs"] == 7
    assert config["trainer"]["accumulate_grad_batches"] == 1
    assert config["ckpt_path"] is None and config["seed_everything"] is True


def test_config_file_round_trip_and_command_line_overrides(capsys, tmp_path):
    config = _printed_config(capsys, ["fit", "--print_config", "--model.hidden_size", "24",
                                      "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2",
                                      "--trainer.limit_val_batches", "1", "--seed_everything", "7"])
    config["trainer"]["default_root_dir"] = str(tmp_path)
    config_file = tmp_path / "config.yaml"
    config_file.write_text(yaml.safe_dump(config))

    cli = _digits_cli(["fit", "--config", str(config_file), "--trainer.max_epochs", "2", *QUIET])

    assert cli.model.hparams.hidden_size == 24
    assert cli.trainer.max_epochs == 2 and cli.trainer.current_epoch == 2  # the later argument wins
    saved = yaml.safe_load((tmp_path / "lightning_logs" / "version_0" / "config.yaml").read_text())
    assert saved["model"]["hidden_size"] == 24
    assert saved["trainer"]["max_epochs"] == 2
    assert saved["seed_everything"] == 7


def test_run_false_only_builds_the_objects():
    cli = LightningCLI(DigitsClassifier, DigitsDataModule, run=False,
                       args=["--trainer.max_epochs", "4", "--data.batch_size", "16", "--seed_everything", "false",
                             "--trainer.callbacks+=EarlyStopping", "--trainer.callbacks.monitor", "val_acc"])
    assert cli.subcommand is None and cli.trainer.current_epoch == 0
    assert cli.trainer.max_epochs == 4 and cli.datamodule.hparams.batch_size == 16
    assert cli.config["seed_everything"] is False
    assert cli.trainer.early_stopping_callback.monitor == "val_acc"  # a built-in callback, by its short name


def test_user_model_by_class_path(user_package, tmp_path):
    cli = LightningCLI(args=["fit", "--model", user_package, "--model.width", "3", "--model.note", "mine",
                             "--trainer.max_epochs", "1", "--trainer.default_root_dir", str(tmp_path), *QUIET])
    assert type(cli.model).__module__ == "user_pkg.models" and cli.datamodule is None
    # as Lightning's CLI: the config that built the model, with the class it chose and how to build it again
    assert dict(cli.model.hparams) == {"width": 3, "note": "mine", "_class_path": user_package,
                                       "_instantiator": "volt.cli.instantiate_module"}
    assert cli.trainer.global_step == 2
    saved = yaml.safe_load((tmp_path / "lightning_logs" / "version_0" / "config.yaml").read_text())
    assert saved["model"] == {"class_path": user_package, "init_args": {"width": 3, "note": "mine"}}


def test_optimizer_and_scheduler_from_the_command_line(user_package, tmp_path):
    with pytest.warns(UserWarning, match="UserModel.configure_optimizers` will be overridden by "
                                         "`LightningCLI.configure_optimizers`"):
        cli = LightningCLI(args=["fit", "--model", user_package, "--optimizer", "Adam", "--optimizer.lr", "0.5",
                                 "--lr_scheduler", "StepLR", "--lr_scheduler.step_size", "1",
                                 "--trainer.max_epochs", "1", "--trainer.default_root_dir", str(tmp_path), *QUIET])
    (optimizer,) = cli.trainer.optimizers
    assert isinstance(optimizer, torch.optim.Adam) and optimizer.defaults["lr"] == 0.5
    (scheduler_config,) = cli.trainer.lr_scheduler_configs
    assert isinstance(scheduler_config.scheduler, torch.optim.lr_scheduler.StepLR)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.05)  # stepped once, at the end of the epoch


def test_plateau_scheduler_from_the_command_line_names_its_metric(user_package, tmp_path):
    with pytest.warns(UserWarning, match="configure_optimizers` will be overridden"):
        cli = LightningCLI(args=["fit", "--model", user_package, "--optimizer", "SGD", "--optimizer.lr", "0.1",
                                 "--lr_scheduler", "volt.cli.ReduceLROnPlateau", "--lr_scheduler.monitor",
                                 "val_loss", "--trainer.max_epochs", "1", "--trainer.default_root_dir", str(tmp_path),
                                 *QUIET])
    (scheduler_config,) = cli.trainer.lr_scheduler_configs
    assert isinstance(scheduler_config.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)
    assert scheduler_config.monitor == "val_loss"


def test_evaluate_and_predict_from_a_checkpoint(digits_run, tmp_path):
    """validate/test/predict rebuild the model from the checkpoint's hyperparameters (hidden_size 32, not the
    default 256) and load its weights: validation reproduces the score the checkpoint was chosen for."""
    _, best_path, best_score = digits_run
    common = ["--ckpt_path", best_path, "--trainer.default_root_dir", str(tmp_path), *QUIET]

    validate = _digits_cli(["validate", *common])
    assert validate.model.hparams.hidden_size == 32
    assert float(validate.trainer.callback_metrics["val_acc"]) == pytest.approx(best_score, abs=1e-6)

    test = _digits_cli(["test", *common])
    assert float(test.trainer.callback_metrics["test_acc"]) > 0.5

    class CollectPredictions(Callback):
        def __init__(self):
            self.predictions = []

        def on_predict_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
            self.predictions.append(outputs)

    collector = CollectPredictions()
    predict = _digits_cli(["predict", *common], callbacks=[collector])
    predicted = torch.cat(collector.predictions)
    labels = predict.datamodule.test_set.tensors[1]
    assert predicted.shape == labels.shape
    assert float((predicted == labels).float().mean()) == pytest.approx(
        float(test.trainer.callback_metrics["test_acc"]), abs=1e-6)


def test_existing_config_file_is_not_overwritten(user_package, tmp_path):
    args = ["fit", "--model", user_package, "--trainer.max_epochs", "1", "--trainer.logger", "false",
            "--trainer.enable_checkpointing", "false", "--trainer.default_root_dir", str(tmp_path), *QUIET]
    LightningCLI(args=args)
    assert (tmp_path / "config.yaml").is_file()  # no logger: the log dir is default_root_dir
    with pytest.raises(RuntimeError, match=r"found .*config.yaml, which a previous run wrote. Aborting to avoid overwriting.*save_config_kwargs"):
        LightningCLI(args=args)
    LightningCLI(args=args, save_config_kwargs={"overwrite": True})


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["fit", "--trainer.max_epochs", "many"], r'Parser key "trainer.max_epochs"(.|\n)*Given value: many'),
        (["fit", "--model.hiden_size", "8"], "unrecognized arguments: --model.hiden_size 8"),
        (["train"], "invalid choice: 'train'"),
        (["fit", "--model", "user_pkg.models.NoSuchModel"], "NoSuchModel"),
    ],
)
def test_bad_arguments_exit_with_a_clear_error(capsys, args, message, user_package):
    model_class = None if "--model" in args else DigitsClassifier
    with pytest.raises(SystemExit) as exit_info:
        LightningCLI(model_class, DigitsDataModule, args=args)
    assert exit_info.value.code == 2
    assert re.search(message, capsys.readouterr().err)


def test_volt_without_a_subcommand_prints_its_usage_and_fails(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "usage: volt" in err and "{fit,validate,test,predict}" in err
    assert 'expected "subcommand" to be one of {fit,validate,test,predict}, but it was not provided' in err


@pytest.mark.parametrize("subcommand", ["validate", "test", "predict"])
def test_volt_evaluating_without_a_checkpoint_is_an_error(capsys, subcommand):
    with pytest.raises(SystemExit) as exit_info:
        main([subcommand, *QUIET])
    assert exit_info.value.code == 2
    assert (f"error: `volt {subcommand}` needs --ckpt_path: without a checkpoint it would evaluate an untrained model."
            " `volt fit` prints the path of its best checkpoint") in capsys.readouterr().err


def test_subcommands_gives_each_caller_its_own_dict():
    LightningCLI.subcommands()["fit"].discard("datamodule")
    del LightningCLI.subcommands()["predict"]
    assert LightningCLI.subcommands()["fit"] == {"model", "train_dataloaders", "val_dataloaders", "datamodule"}
    assert "predict" in LightningCLI.subcommands()


def test_plateau_scheduler_by_its_short_name_in_a_config_file(user_package, tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({
        "optimizer": {"class_path": "SGD", "init_args": {"lr": 0.1}},
        "lr_scheduler": {"class_path": "ReduceLROnPlateau", "init_args": {"monitor": "val_loss", "factor": 0.5}},
    }))
    with pytest.warns(UserWarning, match="configure_optimizers` will be overridden"):
        cli = LightningCLI(args=["fit", "--model", user_package, "--config", str(config), "--trainer.max_epochs", "1",
                                 "--trainer.default_root_dir", str(tmp_path), *QUIET])
    (scheduler_config,) = cli.trainer.lr_scheduler_configs
    assert type(scheduler_config.scheduler).__module__ == "volt.cli"  # volt.cli.ReduceLROnPlateau, not torch's
    assert scheduler_config.monitor == "val_loss" and scheduler_config.scheduler.factor == 0.5


def test_a_config_saved_by_lightnings_cli_runs_on_volt(quiet_lightning, user_package, tmp_path):
    """Lightning's config.yaml states every Lightning Trainer argument, `enable_autolog_hparams` and
    `model_registry` included, and `weights_only` for fit."""
    from pytorch_lightning.cli import LightningCLI as LightningsCLI

    from volt.loggers import CSVLogger

    lightning_root = tmp_path / "lightning"
    lightnings = LightningsCLI(args=["fit", "--model", user_package.replace("user_pkg", "user_pkg_lightning"),
                                     "--trainer.max_epochs", "1", "--trainer.default_root_dir", str(lightning_root),
                                     "--trainer.logger", "CSVLogger", "--trainer.logger.save_dir",
                                     str(lightning_root), "--trainer.enable_progress_bar", "false"])
    saved = (lightning_root / "lightning_logs" / "version_0" / "config.yaml").read_text()
    assert "enable_autolog_hparams: true" in saved and "model_registry: null" in saved
    config = tmp_path / "config.yaml"
    config.write_text(saved.replace("pytorch_lightning.", "volt.").replace("user_pkg_lightning", "user_pkg")
                      .replace(str(lightning_root), str(tmp_path / "volt")))

    cli = LightningCLI(args=["fit", "--config", str(config)])
    assert isinstance(cli.trainer.logger, CSVLogger) and cli.trainer.global_step == 2
    # the same hyperparameters as Lightning's: the config that built the model, its class, the function to rebuild it
    renamed = {"_class_path": user_package, "_instantiator": "volt.cli.instantiate_module"}
    assert dict(cli.model.hparams) == {**lightnings.model.hparams, **renamed} == {"width": 4, "note": "none", **renamed}
    assert (tmp_path / "volt" / "lightning_logs" / "version_0" / "config.yaml").is_file()


def test_a_config_saved_by_volts_cli_runs_on_lightning(quiet_lightning, user_package, tmp_path):
    """The other way round: volt's config.yaml states only arguments Lightning 2.6's Trainer has (no 1.x `gpus`)."""
    from pytorch_lightning.cli import LightningCLI as LightningsCLI

    LightningCLI(args=["fit", "--model", user_package, "--trainer.max_epochs", "1", "--trainer.default_root_dir",
                       str(tmp_path / "volt"), *QUIET])
    saved = (tmp_path / "volt" / "lightning_logs" / "version_0" / "config.yaml").read_text()
    assert "gpus" not in saved
    config = tmp_path / "config.yaml"
    config.write_text(saved.replace("volt.", "pytorch_lightning.").replace("user_pkg", "user_pkg_lightning")
                      .replace(str(tmp_path / "volt"), str(tmp_path / "lightning")))

    cli = LightningsCLI(args=["fit", "--config", str(config)])
    assert cli.trainer.global_step == 2 and (cli.model.hparams.width, cli.model.hparams.note) == (4, "none")


def test_save_config_as_several_files_like_its_input(user_package, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "model.yaml").write_text(yaml.safe_dump({"class_path": user_package, "init_args": {"width": 3}}))
    LightningCLI(args=["fit", "--model", "model.yaml", "--trainer.max_epochs", "1", "--trainer.logger", "false",
                       "--trainer.default_root_dir", "out", *QUIET], save_config_kwargs={"multifile": True})
    assert yaml.safe_load((tmp_path / "out" / "config.yaml").read_text())["model"] == "model.yaml"
    assert yaml.safe_load((tmp_path / "out" / "model.yaml").read_text())["init_args"]["width"] == 3


def test_save_config_elsewhere_only(user_package, tmp_path):
    class ToLogger(SaveConfigCallback):
        def save_config(self, trainer, pl_module, stage):
            trainer.logger.log_hyperparams({"config": self.parser.dump(self.config)})

    with pytest.raises(ValueError, match=r"`save_to_log_dir=False` only makes sense in a SaveConfigCallback subclass "
                                         "whose `save_config` saves the config elsewhere"):
        SaveConfigCallback(None, None, save_to_log_dir=False)
    args = ["fit", "--model", user_package, "--trainer.max_epochs", "1", "--trainer.default_root_dir", str(tmp_path),
            "--trainer.logger", "CSVLogger", "--trainer.logger.save_dir", str(tmp_path), *QUIET]
    cli = LightningCLI(args=args, save_config_callback=ToLogger, save_config_kwargs={"save_to_log_dir": False})
    log_dir = tmp_path / "lightning_logs" / "version_0"
    assert not (log_dir / "config.yaml").exists()
    assert "width: 4" in yaml.safe_load((log_dir / "hparams.yaml").read_text())["config"]
    assert cli.trainer.global_step == 2


def test_a_fresh_run_logging_to_csv_does_not_warn_about_its_log_directory(user_package, tmp_path, recwarn):
    LightningCLI(args=["fit", "--model", user_package, "--trainer.max_epochs", "1",
                       "--trainer.default_root_dir", str(tmp_path), "--trainer.logger", "CSVLogger",
                       "--trainer.logger.save_dir", str(tmp_path), *QUIET])
    assert (tmp_path / "lightning_logs" / "version_0" / "config.yaml").is_file()
    assert [str(w.message) for w in recwarn if "exists and is not empty" in str(w.message)] == []


class LinkedOptimizers(LightningCLI):
    """Two optimizers the model builds itself from the arguments the CLI links to its `__init__`."""

    def add_arguments_to_parser(self, parser):
        parser.add_optimizer_args(torch.optim.Adam, nested_key="first", link_to="model.first_init")
        parser.add_optimizer_args((torch.optim.Optimizer,), nested_key="second", link_to="model.second_init")


def test_optimizer_args_linked_to_model_arguments(tmp_path):
    from volt.cli import instantiate_class

    class TwoOptimizers(DigitsClassifier):
        def __init__(self, first_init: dict, second_init: dict, hidden_size: int = 16):
            super().__init__(hidden_size=hidden_size)
            self.first_init, self.second_init = first_init, second_init

        def configure_optimizers(self):
            return [instantiate_class(self.parameters(), self.first_init),
                    instantiate_class(self.parameters(), self.second_init)]

    cli = LinkedOptimizers(TwoOptimizers, DigitsDataModule, run=False, args=[
        "--first.lr", "0.5", "--second", "SGD", "--second.lr", "0.25", "--trainer.logger", "false"])
    assert cli.model.first_init == {"class_path": "torch.optim.adam.Adam", "init_args": {
        "lr": 0.5, **{k: v for k, v in cli.model.first_init["init_args"].items() if k != "lr"}}}
    first, second = cli.model.configure_optimizers()  # the model's own: nothing was configured automatically
    assert type(first) is torch.optim.Adam and first.defaults["lr"] == 0.5
    assert type(second) is torch.optim.SGD and second.defaults["lr"] == 0.25


def test_parser_model_and_config_callback_pickle_for_ddp_spawn(user_package, tmp_path):
    """ddp_spawn pickles the Trainer (with the config-saving callback and its parser) and the model (whose
    `configure_optimizers` the CLI replaced)."""
    cli = LightningCLI(run=False, args=["--model", user_package, "--optimizer", "Adam", "--trainer.logger", "false",
                                        "--trainer.default_root_dir", str(tmp_path)])
    trainer, model = pickle.loads(pickle.dumps((cli.trainer, cli.model)))
    (save_config,) = [callback for callback in trainer.callbacks if isinstance(callback, SaveConfigCallback)]
    assert type(save_config.parser) is type(cli.parser)
    assert type(model.configure_optimizers()) is torch.optim.Adam


def test_subcommand_kwargs_and_the_subcommand_itself_can_be_overridden(user_package, tmp_path):
    calls = []

    class Customised(LightningCLI):
        def _prepare_subcommand_kwargs(self, subcommand):
            kwargs = super()._prepare_subcommand_kwargs(subcommand)
            return {**kwargs, "ckpt_path": None}

        def validate(self, model, ckpt_path, **kwargs):
            calls.append(ckpt_path)
            return self.trainer.validate(model, ckpt_path=ckpt_path, **kwargs)

    args = ["--model", user_package, "--trainer.default_root_dir", str(tmp_path), *QUIET]
    cli = Customised(args=["validate", "--ckpt_path", "no/such.ckpt", *args])
    assert calls == [None] and "val_loss" in cli.trainer.callback_metrics


class InjectedModel(LightningModule):
    """Takes objects the CLI builds from class paths: an activation module and an optimizer factory."""

    def __init__(self, activation: torch.nn.Module, optimizer: OptimizerCallable = torch.optim.SGD, width: int = 4):
        super().__init__()
        self.save_hyperparameters()
        self.activation, self.optimizer = activation, optimizer
        self.layer = torch.nn.Linear(width, 1)

    def training_step(self, batch, batch_idx):
        return self.activation(self.layer(batch)).pow(2).mean()

    def configure_optimizers(self):
        return self.optimizer(self.parameters())


class WidthData(LightningDataModule):
    def __init__(self, width: int = 4):
        super().__init__()
        self.save_hyperparameters()
        self.width = width

    def train_dataloader(self):
        return torch.utils.data.DataLoader(torch.randn(8, self.width), batch_size=4)


class WidthLinkedCLI(LightningCLI):
    def add_arguments_to_parser(self, parser):
        parser.link_arguments("data.width", "model.init_args.width", apply_on="instantiate")


def test_checkpoints_hold_the_config_that_built_the_model_and_load_from_checkpoint_builds_it_again(tmp_path):
    """As Lightning's CLI: `save_hyperparameters()` records the config (class paths of injected objects, linked
    values, the chosen class) rather than the objects, and `load_from_checkpoint` rebuilds the model from it."""
    cli = WidthLinkedCLI(auto_configure_optimizers=False, args=[
        "fit", "--model", f"{__name__}.InjectedModel", "--model.activation=torch.nn.LeakyReLU",
        "--model.activation.negative_slope=0.05", "--model.optimizer=Adam", "--data", f"{__name__}.WidthData",
        "--data.width=3", "--trainer.max_epochs=1", "--trainer.default_root_dir", str(tmp_path), *QUIET])
    hparams = dict(cli.model.hparams)
    assert hparams["_class_path"] == f"{__name__}.InjectedModel" and hparams["width"] == 3  # the linked value
    assert hparams["_instantiator"] == "volt.cli.instantiate_module"
    assert hparams["activation"] == {"class_path": "torch.nn.LeakyReLU",
                                     "init_args": {"negative_slope": 0.05, "inplace": False}}
    assert hparams["optimizer"]["class_path"] == "torch.optim.Adam"
    assert dict(cli.datamodule.hparams) == {"width": 3, "_class_path": f"{__name__}.WidthData",
                                            "_instantiator": "volt.cli.instantiate_module"}
    logged = yaml.safe_load((tmp_path / "lightning_logs" / "version_0" / "hparams.yaml").read_text())
    assert "_class_path" not in logged and logged["_instantiator"] == "volt.cli.instantiate_module"

    path = cli.trainer.checkpoint_callback.best_model_path
    assert torch.load(path, weights_only=True)["hyper_parameters"] == hparams
    model = InjectedModel.load_from_checkpoint(path)
    assert type(model.activation) is torch.nn.LeakyReLU and model.activation.negative_slope == 0.05
    assert type(model.configure_optimizers()) is torch.optim.Adam and model.layer.in_features == 3
    torch.testing.assert_close(model.state_dict(), cli.model.state_dict())
    # through the base class, the chosen subclass is built with its own arguments
    data = LightningDataModule.load_from_checkpoint(path)
    assert type(data) is WidthData and data.width == 3

    # the checkpoint's model does not fit another model's arguments: one clear error
    with pytest.raises(SystemExit):
        LightningCLI(DigitsClassifier, DigitsDataModule, args=["test", "--ckpt_path", path])
    # a checkpoint naming code to run is refused
    checkpoint = torch.load(path, weights_only=True)
    checkpoint["hyper_parameters"]["_instantiator"] = "os.system"
    torch.save(checkpoint, tmp_path / "tampered.ckpt")
    with pytest.raises(ValueError, match="'os.system' to build InjectedModel, which is not one of the trusted"):
        InjectedModel.load_from_checkpoint(tmp_path / "tampered.ckpt")


def test_cli_arguments_lightning_accepts(monkeypatch, tmp_path, capsys):
    """Plugins and callbacks by class path, args as a Namespace, and the warnings Lightning gives."""
    from jsonargparse import Namespace

    from volt.plugins.environments import SLURMEnvironment

    cli = LightningCLI(UserModelForArgs, run=False, trainer_defaults={
        "callbacks": {"class_path": "volt.callbacks.ModelCheckpoint", "init_args": {"monitor": "val_loss"}}},
        args=Namespace(trainer=Namespace(plugins=[{"class_path": "SLURMEnvironment"}], logger=False),
                       model=Namespace(width=3)))
    assert isinstance(cli.config_init.trainer.plugins[0], SLURMEnvironment) and cli.model.hparams.width == 3
    assert [c.monitor for c in cli.trainer.callbacks if isinstance(c, ModelCheckpoint)] == ["val_loss"]

    monkeypatch.setattr(sys, "argv", ["train.py", "--model.width=4"])
    with pytest.warns(UserWarning, match=r"LightningCLI's args parameter is given .* sys.argv\[1:\]="):
        LightningCLI(UserModelForArgs, run=False, args=["--model.width=5"])

    class NoCallbacksTrainer(Trainer):
        def __init__(self, max_epochs: int = 1):
            super().__init__(max_epochs=max_epochs, logger=False)

    with pytest.warns(UserWarning, match="NoCallbacksTrainer` class does not expose the `callbacks` argument"):
        cli = LightningCLI(UserModelForArgs, run=False, trainer_class=NoCallbacksTrainer, args=[],
                           trainer_defaults={"callbacks": [Callback()]})
    assert not any(type(c) is Callback for c in cli.trainer.callbacks)

    # a checkpoint whose hyperparameters the model does not take
    path = tmp_path / "other.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {"depth": 2}}, path)
    with pytest.raises(SystemExit):
        LightningCLI(UserModelForArgs, args=["predict", f"--ckpt_path={path}"])
    assert "Parsing of ckpt_path hyperparameters failed" in capsys.readouterr().err


class UserModelForArgs(LightningModule):
    def __init__(self, width: int = 2):
        super().__init__()
        self.save_hyperparameters()


def test_importing_volt_and_its_cli_does_not_load_jsonargparse():
    code = "import sys, volt, volt.cli; assert 'jsonargparse' not in sys.modules, 'jsonargparse was imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_profiler_and_logger_arguments_from_kwargs_as_lightning(quiet_lightning, tmp_path, monkeypatch):
    """Arguments a class takes through **kwargs (PyTorchProfiler's `record_shapes`, the SummaryWriter arguments of
    TensorBoardLogger) are CLI arguments, as with Lightning's; the rest stays in `dict_kwargs`."""
    from volt.loggers import TensorBoardLogger
    from volt.profilers import PyTorchProfiler

    monkeypatch.chdir(tmp_path)
    args = ["--trainer.profiler=PyTorchProfiler", "--trainer.profiler.row_limit=10",
            "--trainer.profiler.dict_kwargs.record_shapes=true", "--trainer.profiler.dict_kwargs.profile_memory=true",
            "--trainer.logger=TensorBoardLogger", "--trainer.logger.save_dir=tb", "--trainer.logger.purge_step=3"]
    configs = {}
    for package in ("volt", quiet_lightning.__name__):
        model = importlib.import_module(f"{package}.demos.boring_classes").BoringModel
        cli = importlib.import_module(f"{package}.cli").LightningCLI(model, run=False, args=args)
        configs[package] = cli.config.trainer
    for config in configs.values():
        assert config.profiler.init_args.record_shapes is True and config.profiler.dict_kwargs == {
            "profile_memory": True}
        assert config.logger.init_args.purge_step == 3 and "dict_kwargs" not in config.logger
    cli = LightningCLI(DigitsClassifier, run=False, args=args)
    assert isinstance(cli.trainer.profiler, PyTorchProfiler) and isinstance(cli.trainer.logger, TensorBoardLogger)
    assert cli.trainer.logger.experiment.purge_step == 3  # reached tensorboardX's SummaryWriter
