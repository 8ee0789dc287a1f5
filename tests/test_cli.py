"""LightningCLI and the `volt` command, driven in-process through `args=` as a script's command line would be."""
import re
import subprocess
import sys
import textwrap

import pytest
import torch
import yaml

from volt import Callback
from volt.callbacks import ModelCheckpoint
from volt.cli import LightningCLI, main
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
    """`user_pkg.models.UserModel`, importable the way a user's installed package is."""
    root = tmp_path_factory.mktemp("user_code")
    (root / "user_pkg").mkdir()
    (root / "user_pkg" / "__init__.py").write_text("")
    (root / "user_pkg" / "models.py").write_text(textwrap.dedent(USER_CODE))
    sys.path.insert(0, str(root))
    yield "user_pkg.models.UserModel"
    sys.path.remove(str(root))
    for name in ("user_pkg.models", "user_pkg"):
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
    assert dict(cli.model.hparams) == {"width": 3, "note": "mine"}
    assert cli.trainer.global_step == 2
    saved = yaml.safe_load((tmp_path / "lightning_logs" / "version_0" / "config.yaml").read_text())
    assert saved["model"] == {"class_path": user_package, "init_args": {"width": 3, "note": "mine"}}


def test_optimizer_and_scheduler_from_the_command_line(user_package, tmp_path):
    with pytest.warns(UserWarning, match="UserModel.configure_optimizers` is replaced by the CLI's `--optimizer`"):
        cli = LightningCLI(args=["fit", "--model", user_package, "--optimizer", "Adam", "--optimizer.lr", "0.5",
                                 "--lr_scheduler", "StepLR", "--lr_scheduler.step_size", "1",
                                 "--trainer.max_epochs", "1", "--trainer.default_root_dir", str(tmp_path), *QUIET])
    (optimizer,) = cli.trainer.optimizers
    assert isinstance(optimizer, torch.optim.Adam) and optimizer.defaults["lr"] == 0.5
    (scheduler_config,) = cli.trainer.lr_scheduler_configs
    assert isinstance(scheduler_config.scheduler, torch.optim.lr_scheduler.StepLR)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.05)  # stepped once, at the end of the epoch


def test_plateau_scheduler_from_the_command_line_names_its_metric(user_package, tmp_path):
    with pytest.warns(UserWarning, match="configure_optimizers` is replaced"):
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
    with pytest.raises(RuntimeError, match=r"will not overwrite .*config.yaml.*save_config_kwargs"):
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


def test_volt_without_arguments_shows_help(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([])
    assert exit_info.value.code == 0
    usage = capsys.readouterr().out
    assert "usage: volt" in usage
    assert all(name in usage for name in ("fit", "validate", "test", "predict"))


def test_importing_volt_and_its_cli_does_not_load_jsonargparse():
    code = "import sys, volt, volt.cli; assert 'jsonargparse' not in sys.modules, 'jsonargparse was imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
