"""LightningCLI: a command line for your LightningModule and DataModule, built from their `__init__` signatures.

    cli = LightningCLI(MyModel, MyDataModule)       # in my_script.py
    $ python my_script.py fit --model.lr 0.01 --trainer.max_epochs 5
    $ python my_script.py fit --print_config > config.yaml
    $ python my_script.py fit --config config.yaml
    $ python my_script.py test --ckpt_path path/to/best.ckpt

Parsing is jsonargparse's, so every type hint in those signatures is checked and class paths work
(`--model my_pkg.MyModel`, `--trainer.callbacks+=EarlyStopping`). The `volt` command (`main` below) is this CLI for
the built-in digits example. jsonargparse is imported only when a CLI is built, never by `import volt`.
"""
import functools
import importlib
import inspect
import os
import sys
from argparse import Namespace
from typing import Any, Callable, Dict, Iterable, List, Optional, Type, Union

import torch
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from volt.callbacks.callback import Callback
from volt.datamodule import LightningDataModule
from volt.module import LightningModule, given_hyperparameters, instantiate_module
from volt.trainer.trainer import Trainer
from volt.utilities.exceptions import MisconfigurationException
from volt.utilities.rank_zero import rank_zero_warn
from volt.utilities.seed import seed_everything

__all__ = [
    "LightningArgumentParser",
    "LightningCLI",
    "LRSchedulerCallable",
    "OptimizerCallable",
    "ReduceLROnPlateau",
    "SaveConfigCallback",
    "cli_lightning_logo",
    "instantiate_class",
    "instantiate_module",
    "main",
]


class ReduceLROnPlateau(torch.optim.lr_scheduler.ReduceLROnPlateau):
    """torch's ReduceLROnPlateau that also names the metric it watches, so a config file can set it up fully:
    `--lr_scheduler volt.cli.ReduceLROnPlateau --lr_scheduler.monitor val_loss`."""

    def __init__(self, optimizer: Optimizer, monitor: str, *args: Any, **kwargs: Any) -> None:
        super().__init__(optimizer, *args, **kwargs)
        self.monitor = monitor


# Type hints for modules that take their optimizer or scheduler as an argument the CLI fills in, e.g.
# `def __init__(self, optimizer: OptimizerCallable = torch.optim.Adam)` then `optimizer(self.parameters())`.
OptimizerCallable = Callable[[Iterable], Optimizer]
LRSchedulerCallable = Callable[[Optimizer], Union[LRScheduler, ReduceLROnPlateau]]
ArgsType = Optional[Union[List[str], Dict[str, Any], Namespace]]  # what `LightningCLI(args=...)` takes
LRSchedulerTypeTuple = (LRScheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)
LRSchedulerTypeUnion = Union[LRScheduler, torch.optim.lr_scheduler.ReduceLROnPlateau]
LRSchedulerType = Union[Type[LRScheduler], Type[torch.optim.lr_scheduler.ReduceLROnPlateau]]


@functools.lru_cache(maxsize=None)
def _parser_class() -> type:
    """Define LightningArgumentParser on first use: it subclasses jsonargparse's parser, which loads slowly."""
    from jsonargparse import ArgumentParser, class_from_function

    import volt.callbacks
    import volt.loggers

    # volt loads its callbacks and loggers on first use; load them now so that short class names given on the
    # command line (`--trainer.callbacks+=EarlyStopping`) are found among the subclasses jsonargparse knows.
    for package in (volt.callbacks, volt.loggers):
        for name in package.__all__:
            getattr(package, name)

    class LightningArgumentParser(ArgumentParser):
        """jsonargparse's ArgumentParser plus helpers that add a Lightning class, an optimizer or an LR scheduler
        as a group of arguments. Environment variables (`PL_TRAINER__MAX_EPOCHS`) are read with `default_env=True`.
        """

        def __init__(self, *args: Any, description: str = "volt command line tool", env_prefix: str = "PL",
                     default_env: bool = False, **kwargs: Any) -> None:
            super().__init__(*args, description=description, env_prefix=env_prefix, default_env=default_env,
                             **kwargs)
            self.callback_keys: List[str] = []
            self._optimizers: Dict[str, Any] = {}
            self._lr_schedulers: Dict[str, Any] = {}

        def add_lightning_class_args(self, lightning_class, nested_key: str, subclass_mode: bool = False,
                                     required: bool = True) -> List[str]:
            """Add the `__init__` arguments of a Trainer, LightningModule, LightningDataModule or Callback (or of a
            function returning one) under `--<nested_key>.*`. A Callback added this way is always instantiated
            and appended to the Trainer's callbacks."""
            if callable(lightning_class) and not isinstance(lightning_class, type):
                lightning_class = class_from_function(lightning_class)
            allowed = (Trainer, LightningModule, LightningDataModule, Callback)
            if not (isinstance(lightning_class, type) and issubclass(lightning_class, allowed)):
                raise MisconfigurationException(
                    f"Cannot add arguments from {lightning_class!r}: pass a subclass of Trainer, LightningModule,"
                    " LightningDataModule or Callback, or a function that returns an instance of one."
                )
            if issubclass(lightning_class, Callback):
                self.callback_keys.append(nested_key)
            if subclass_mode:
                return self.add_subclass_arguments(lightning_class, nested_key, fail_untyped=False, required=required)
            is_trainer = issubclass(lightning_class, Trainer)
            # `gpus` (the 1.x form) and `compile` (a volt extension of the Python API) stay out of configs:
            # Lightning 2.x rejects a config.yaml that states either
            return self.add_class_arguments(lightning_class, nested_key, fail_untyped=False, sub_configs=True,
                                            instantiate=not is_trainer,
                                            skip={"gpus", "compile"} if is_trainer else None)

        def add_optimizer_args(self, optimizer_class=(Optimizer,), nested_key: str = "optimizer",
                               link_to: str = "AUTOMATIC") -> None:
            """Add `--<nested_key>` for an optimizer: one class (its arguments), or a tuple of base classes (any
            subclass by class path). With `link_to="AUTOMATIC"` the CLI builds it on the model's parameters and
            returns it from `configure_optimizers`; `link_to="model.optimizer_init"` instead passes it, as a
            `{"class_path": ..., "init_args": ...}` dict for `instantiate_class`, to that argument."""
            self._add_optimizer_like(optimizer_class, nested_key, {"params"}, self._optimizers, link_to)

        def add_lr_scheduler_args(self, lr_scheduler_class=(LRScheduler, ReduceLROnPlateau),
                                  nested_key: str = "lr_scheduler", link_to: str = "AUTOMATIC") -> None:
            """Add `--<nested_key>` for an LR scheduler, as `add_optimizer_args` does for optimizers."""
            self._add_optimizer_like(lr_scheduler_class, nested_key, {"optimizer"}, self._lr_schedulers, link_to)

        def _add_optimizer_like(self, classes, nested_key: str, skip: set, registry: dict, link_to: str) -> None:
            kwargs = {"instantiate": False, "fail_untyped": False, "skip": skip}
            if isinstance(classes, tuple):
                self.add_subclass_arguments(classes, nested_key, **kwargs)
            else:
                self.add_class_arguments(classes, nested_key, sub_configs=True, **kwargs)
            registry[nested_key] = (classes, link_to)

    # Reachable as `volt.cli.LightningArgumentParser` (the module's __getattr__), so parsers pickle (ddp_spawn).
    LightningArgumentParser.__qualname__ = "LightningArgumentParser"
    return LightningArgumentParser


def __getattr__(name: str):
    if name == "LightningArgumentParser":
        return _parser_class()
    raise AttributeError(f"module 'volt.cli' has no attribute {name!r}")


class SaveConfigCallback(Callback):
    """Write the CLI's resolved config to `<trainer.log_dir>/<config_filename>` at setup, so every run records
    exactly how it was configured. Rank zero writes; an existing file is an error unless `overwrite=True`.

    `multifile=True`: a config given as several files (`--model model.yaml`) is saved as several files too, the
    main one referring to the others (local log directories only). Override `save_config` to also send the config
    elsewhere (e.g. to a logger); `save_to_log_dir=False` then leaves the log directory alone.
    """

    def __init__(self, parser, config, config_filename: str = "config.yaml", overwrite: bool = False,
                 multifile: bool = False, save_to_log_dir: bool = True) -> None:
        if not save_to_log_dir and type(self).save_config is SaveConfigCallback.save_config:
            raise ValueError(
                "`save_to_log_dir=False` only makes sense in a SaveConfigCallback subclass whose `save_config` saves"
                " the config elsewhere: override it, or pass `save_config_callback=None` to LightningCLI to save no"
                " config."
            )
        self.parser = parser
        self.config = config
        self.config_filename = config_filename
        self.overwrite = overwrite
        self.multifile = multifile
        self.save_to_log_dir = save_to_log_dir
        self.already_saved = False

    def setup(self, trainer, pl_module, stage: str) -> None:
        if self.already_saved:
            return
        if self.save_to_log_dir:
            self._save_to_log_dir(trainer)
        if trainer.is_global_zero:
            self.save_config(trainer, pl_module, stage)
        self.already_saved = True

    def _save_to_log_dir(self, trainer) -> None:
        import fsspec
        from fsspec.implementations.local import LocalFileSystem

        # Let the loggers create their experiments (and folders) first, as Lightning does before its setup hooks:
        # a logger that found the config in a fresh log directory would warn that it is not empty.
        for logger in trainer.loggers:
            if hasattr(logger, "experiment"):
                logger.experiment
        log_dir = os.fspath(trainer.log_dir)
        fs, fs_dir = fsspec.core.url_to_fs(log_dir)
        config_path = os.path.join(fs_dir, self.config_filename)
        exists = trainer.strategy.broadcast(trainer.is_global_zero and fs.isfile(config_path))
        if exists and not self.overwrite:
            raise RuntimeError(
                f"{type(self).__name__} found {os.path.join(log_dir, self.config_filename)}, which a previous run"
                " wrote. Aborting to avoid overwriting its results: delete it, log to another directory, pass"
                " `LightningCLI(save_config_kwargs={'overwrite': True})`, or `save_config_callback=None` to save no"
                " config."
            )
        if self.multifile and not isinstance(fs, LocalFileSystem):
            raise ValueError(f"SaveConfigCallback(multifile=True) writes local files only; the log directory {log_dir}"
                             " is remote. Pass multifile=False to save the config as one file.")
        if not trainer.is_global_zero:
            return
        fs.makedirs(fs_dir, exist_ok=True)
        # Keep None values, so the file states every setting. (Positional: this argument is `skip_none` before
        # jsonargparse 4.49, `skip_unset` after.)
        if self.multifile:
            self.parser.save(self.config, config_path, "yaml", False, overwrite=self.overwrite, multifile=True)
        else:
            with fs.open(config_path, "w") as file:
                file.write(self.parser.dump(self.config, "yaml", False))

    def save_config(self, trainer, pl_module, stage: str) -> None:
        """Called on rank zero after the file is written. Override to save the config somewhere else as well."""


class LightningCLI:
    """Parse the command line (or `args`) into a Trainer, a model and a datamodule, then run a Trainer method.

    Args:
        model_class: a LightningModule class (or a function returning one). None: any, chosen by
            `--model class.path`.
        datamodule_class: likewise for `--data`. None: any or none (the model's own dataloaders).
        save_config_callback: callback class that saves the config to the log directory; None saves nothing.
        save_config_kwargs: extra arguments for it, e.g. `{"overwrite": True}`.
        trainer_class: the Trainer class (or a function returning one) whose arguments become `--trainer.*`.
        trainer_defaults: new defaults for Trainer arguments. Its `callbacks` are always added and not
            configurable.
        seed_everything_default: `--seed_everything` default: an int seed, True (seed from `PL_GLOBAL_SEED`, else
            0) or False (no seeding).
        parser_kwargs: arguments for the parser; under a subcommand's name ("fit": {...}) for that subcommand's.
        subclass_mode_model: accept any subclass of `model_class`, chosen by `--model class.path`.
        subclass_mode_data: likewise for `datamodule_class`.
        args: parse these instead of `sys.argv[1:]`: a list of strings or a dict (a parsed config).
        run: True: the first argument is a subcommand (fit, validate, test, predict) that runs. False: only build
            `cli.trainer`, `cli.model` and `cli.datamodule`.
        auto_configure_optimizers: add `--optimizer` and `--lr_scheduler`; when given they replace the model's
            `configure_optimizers`.

    After construction, `cli.config` holds the parsed config, `cli.config_init` the same with classes
    instantiated, and `cli.trainer`, `cli.model`, `cli.datamodule` the objects. Subclasses may override
    `add_arguments_to_parser`, `before_instantiate_classes`, `after_instantiate_classes`, and define
    `before_<subcommand>` / `after_<subcommand>` methods.
    """

    def __init__(
        self,
        model_class=None,
        datamodule_class=None,
        save_config_callback: Optional[type] = SaveConfigCallback,
        save_config_kwargs: Optional[Dict[str, Any]] = None,
        trainer_class=Trainer,
        trainer_defaults: Optional[Dict[str, Any]] = None,
        seed_everything_default: Union[bool, int] = True,
        parser_kwargs: Optional[Dict[str, Any]] = None,
        subclass_mode_model: bool = False,
        subclass_mode_data: bool = False,
        args: Optional[Union[List[str], Dict[str, Any]]] = None,
        run: bool = True,
        auto_configure_optimizers: bool = True,
    ) -> None:
        self.model_class = model_class
        self.datamodule_class = datamodule_class
        self.save_config_callback = save_config_callback
        self.save_config_kwargs = save_config_kwargs or {}
        self.trainer_class = trainer_class
        self.trainer_defaults = trainer_defaults or {}
        self.seed_everything_default = seed_everything_default
        self.subclass_mode_model = model_class is None or subclass_mode_model
        self.subclass_mode_data = datamodule_class is None or subclass_mode_data
        self.auto_configure_optimizers = auto_configure_optimizers

        parser_kwargs = parser_kwargs or {}
        main_kwargs = {k: v for k, v in parser_kwargs.items() if k not in self.subcommands()}
        self.parser = self.init_parser(**main_kwargs)
        if run:
            self._subcommand_parsers: Dict[str, Any] = {}
            self._subcommand_method_arguments: Dict[str, List[str]] = {}
            self._add_subcommands(self.parser, {k: v for k, v in parser_kwargs.items() if k in self.subcommands()})
        else:
            self._add_arguments(self.parser)

        self.parse_arguments(self.parser, args)
        self._config_dump: Optional[Dict[str, Any]] = None
        self.subcommand = self.config["subcommand"] if run else None
        self._load_hparams_from_ckpt_path()
        self._set_seed()
        self.before_instantiate_classes()
        self.instantiate_classes()
        self.after_instantiate_classes()
        if self.subcommand is not None:
            self._run_subcommand(self.subcommand)

    # ------------------------------------------------------------------------------------------------------------
    # building the parser

    @staticmethod
    def subcommands() -> Dict[str, set]:
        """The Trainer methods offered as subcommands, each with the arguments the CLI passes itself (a new dict on
        each call: subclasses may change what they get)."""
        return {
            "fit": {"model", "train_dataloaders", "val_dataloaders", "datamodule"},
            "validate": {"model", "dataloaders", "datamodule"},
            "test": {"model", "dataloaders", "datamodule"},
            "predict": {"model", "dataloaders", "datamodule"},
        }

    def init_parser(self, **kwargs: Any):
        """A new parser with `--config` (and so `--print_config`)."""
        from jsonargparse import ActionConfigFile

        from volt import __version__

        kwargs.setdefault("dump_header", [f"volt=={__version__}"])
        parser = _parser_class()(**kwargs)
        parser.add_argument("-c", "--config", action=ActionConfigFile,
                            help="Path to a configuration file in yaml or json format.")
        return parser

    def add_default_arguments_to_parser(self, parser) -> None:
        parser.add_argument(
            "--seed_everything", type=Union[bool, int], default=self.seed_everything_default,
            help="Seed for seed_everything, run before the classes are instantiated. True: PL_GLOBAL_SEED or 0;"
                 " false: do not seed.",
        )

    def add_core_arguments_to_parser(self, parser) -> None:
        """`--trainer.*`, `--model.*` and `--data.*` from the classes' signatures."""
        parser.add_lightning_class_args(self.trainer_class, "trainer")
        parser.set_defaults({f"trainer.{k}": v for k, v in self.trainer_defaults.items() if k != "callbacks"})
        parser.add_lightning_class_args(self.model_class or LightningModule, "model",
                                        subclass_mode=self.subclass_mode_model)
        parser.add_lightning_class_args(self.datamodule_class or LightningDataModule, "data",
                                        subclass_mode=self.subclass_mode_data,
                                        required=self.datamodule_class is not None)

    def add_arguments_to_parser(self, parser) -> None:
        """Override to add arguments (`parser.add_argument`, `parser.add_lightning_class_args(EarlyStopping,
        "early_stopping")`) or link them (`parser.link_arguments("data.num_classes", "model.num_classes")`)."""

    def _add_arguments(self, parser) -> None:
        self.add_default_arguments_to_parser(parser)
        self.add_core_arguments_to_parser(parser)
        self.add_arguments_to_parser(parser)
        if self.auto_configure_optimizers:
            if not parser._optimizers:
                parser.add_optimizer_args()
            if not parser._lr_schedulers:
                parser.add_lr_scheduler_args()
        self.link_optimizers_and_lr_schedulers(parser)

    @staticmethod
    def link_optimizers_and_lr_schedulers(parser) -> None:
        """Pass each optimizer and scheduler added with a `link_to` key to that argument."""
        for key, (classes, link_to) in {**parser._optimizers, **parser._lr_schedulers}.items():
            if link_to == "AUTOMATIC":
                continue
            if isinstance(classes, tuple):  # the value names its class already
                parser.link_arguments(key, link_to)
            else:
                parser.link_arguments(key, link_to, compute_fn=functools.partial(_with_class_path, classes))

    def _add_subcommands(self, parser, subcommand_kwargs: Dict[str, Dict[str, Any]]) -> None:
        """One full parser per subcommand: the common arguments plus the Trainer method's own (e.g. ckpt_path)."""
        from jsonargparse import class_from_function

        trainer_class = self.trainer_class
        if not isinstance(trainer_class, type):
            trainer_class = class_from_function(trainer_class)
        subcommands = parser.add_subcommands()
        for name, skip in self.subcommands().items():
            description = _first_line(getattr(trainer_class, name).__doc__)
            kwargs = {"description": description, **subcommand_kwargs.get(name, {})}
            subparser = self.init_parser(**kwargs)
            self._add_arguments(subparser)
            self._subcommand_method_arguments[name] = subparser.add_method_arguments(trainer_class, name, skip=skip)
            self._subcommand_parsers[name] = subparser
            subcommands.add_subcommand(name, subparser, help=description)

    def _parser(self, subcommand: Optional[str]):
        return self.parser if subcommand is None else self._subcommand_parsers[subcommand]

    def parse_arguments(self, parser, args) -> None:
        """Parse `args` (a list of strings, a dict or Namespace, or None for `sys.argv[1:]`) into `self.config`."""
        if args is not None and len(sys.argv) > 1:
            rank_zero_warn(f"LightningCLI's args parameter is given ({args}), so the command line arguments"
                           f" sys.argv[1:]={sys.argv[1:]} are ignored; pass one or the other.")
        if isinstance(args, (dict, Namespace)):
            self.config = parser.parse_object(args)
        else:
            self.config = parser.parse_args(args)

    # ------------------------------------------------------------------------------------------------------------
    # from config to objects

    def _get(self, config, key: str, default: Any = None) -> Any:
        """`config[key]`, looked up under the subcommand when there is one."""
        return config.get(str(self.subcommand), config).get(key, default)

    def _load_hparams_from_ckpt_path(self) -> None:
        """Rebuild the model with the hyperparameters saved in `--ckpt_path`, so that its weights fit: a test of a
        checkpoint trained with `--model.hidden_size 64` needs no `--model.hidden_size 64` again."""
        if self.subcommand is None:
            return
        from volt.checkpoint import checkpoint_exists, decode_hparams, is_remote
        from volt.sharded_checkpoint import load

        ckpt_path = self.config[self.subcommand].get("ckpt_path")
        if not ckpt_path or is_remote(ckpt_path) or not checkpoint_exists(ckpt_path):  # "best", "last", remote paths:
            return  # left to the Trainer
        checkpoint = load(ckpt_path, map_location="cpu", optimizer_states=False)
        hparams = decode_hparams(checkpoint.get("hyper_parameters") or {})
        hparams.pop("_instantiator", None)  # recorded by this CLI (see `_ConfigRecorder`)
        if not hparams:
            return
        if "_class_path" in hparams:  # the model was chosen by class path: build that class again
            hparams = {"class_path": hparams.pop("_class_path"), "dict_kwargs": hparams}
        elif self.subclass_mode_model and self.config[self.subcommand].get("model") is None:
            return  # no model class chosen: nothing to apply the hyperparameters to
        try:
            self.config = self.parser.parse_object({self.subcommand: {"model": hparams}}, self.config)
        except SystemExit:
            sys.stderr.write(f"Parsing of ckpt_path hyperparameters failed: the hyperparameters saved in {ckpt_path}"
                             " do not fit the model's arguments.\n")
            raise

    def _set_seed(self) -> None:
        seed = self._get(self.config, "seed_everything")
        if seed is False:
            return
        seed = seed_everything(None if seed is True else seed, workers=True)
        # Record the seed actually used, so the saved config reproduces the run.
        self.config.get(str(self.subcommand), self.config)["seed_everything"] = seed

    def before_instantiate_classes(self) -> None:
        """Override to act on `self.config` before any class is built."""

    def instantiate_classes(self) -> None:
        """Build the datamodule, the model and the Trainer from the config. The model and datamodule are built
        inside `given_hyperparameters` with their part of the config, so that `save_hyperparameters()` saves the
        config (see `_ConfigRecorder`)."""
        recorders = [(_ConfigRecorder(self, "model"), _built_type(self.model_class, LightningModule),
                      self.subclass_mode_model),
                     (_ConfigRecorder(self, "data"), _built_type(self.datamodule_class, LightningDataModule),
                      self.subclass_mode_data)]
        if hasattr(self.parser, "instantiate"):
            self.config_init = self.parser.instantiate(self.config, instantiators=recorders)
        else:  # jsonargparse < 4.49
            for recorder, class_type, subclasses in recorders:
                self.parser.add_instantiator(recorder, class_type, subclasses=subclasses)
            self.config_init = self.parser.instantiate_classes(self.config)
        self.datamodule = self._get(self.config_init, "data")
        self.model = self._get(self.config_init, "model")
        self._add_configure_optimizers_method_to_model()
        self.trainer = self.instantiate_trainer()

    def after_instantiate_classes(self) -> None:
        """Override to act on the built objects before the subcommand runs."""

    def _dumped_config(self) -> Dict[str, Any]:
        """The parsed config of the subcommand as plain data (link targets and None values included)."""
        if self._config_dump is None:
            import yaml

            # Positional `False`: `skip_none` before jsonargparse 4.49, `skip_unset` after.
            dump = yaml.safe_load(self.parser.dump(self.config, "yaml", False, skip_link_targets=False))
            self._config_dump = dump.get(str(self.subcommand), dump)
        return self._config_dump

    def instantiate_trainer(self, **kwargs: Any):
        """The Trainer from `--trainer.*` and `kwargs`, with the callbacks of `trainer_defaults`, of
        `add_lightning_class_args(SomeCallback, ...)`, and the config-saving callback appended (a Trainer class
        without a `callbacks` argument gets none of them, with a warning)."""
        config = {**self._get(self.config_init, "trainer", default={}), **kwargs}
        if "callbacks" not in config:
            rank_zero_warn(f"The `{getattr(self.trainer_class, '__qualname__', self.trainer_class)}` class does not"
                           " expose the `callbacks` argument so they will not be included: add `callbacks` to its"
                           " `__init__` to get the CLI's callbacks.")
            return self.trainer_class(**config)
        callbacks = config.get("callbacks") or []
        callbacks = list(callbacks) if isinstance(callbacks, (list, tuple)) else [callbacks]
        callbacks += [self._get(self.config_init, key) for key in self._parser(self.subcommand).callback_keys]
        default_callbacks = self.trainer_defaults.get("callbacks") or []
        default_callbacks = default_callbacks if isinstance(default_callbacks, list) else [default_callbacks]
        # a callback given as a config ({"class_path": ..., "init_args": ...}) is built, as one from the command line
        callbacks += [instantiate_class((), callback) if isinstance(callback, dict) else callback
                      for callback in default_callbacks]
        if self.save_config_callback is not None and not config.get("fast_dev_run", False):
            parser, subconfig = self._parser(self.subcommand), self.config.get(str(self.subcommand), self.config)
            callbacks.append(self.save_config_callback(parser, subconfig, **self.save_config_kwargs))
        config["callbacks"] = callbacks
        return self.trainer_class(**config)

    @staticmethod
    def configure_optimizers(lightning_module, optimizer: Optimizer, lr_scheduler=None) -> Any:
        """What the model's `configure_optimizers` returns when `--optimizer` is given. Override to change it."""
        if lr_scheduler is None:
            return optimizer
        if isinstance(lr_scheduler, ReduceLROnPlateau):
            return {"optimizer": optimizer,
                    "lr_scheduler": {"scheduler": lr_scheduler, "monitor": lr_scheduler.monitor}}
        return [optimizer], [lr_scheduler]

    def _add_configure_optimizers_method_to_model(self) -> None:
        """With `--optimizer` (and maybe `--lr_scheduler`) given, build them and make the model return them."""
        if not self.auto_configure_optimizers:
            return
        parser = self._parser(self.subcommand)
        optimizers, schedulers = _automatic(parser._optimizers), _automatic(parser._lr_schedulers)
        if len(optimizers) > 1 or len(schedulers) > 1:
            raise MisconfigurationException(
                f"{type(self).__name__} can configure one optimizer and one LR scheduler automatically, but the parser"
                f" has {list(optimizers) + list(schedulers)}. Pass `link_to=` when adding the others, or"
                " `auto_configure_optimizers=False`, and build them in your model's `configure_optimizers`."
            )
        optimizer_init = _class_and_args(optimizers, self._get(self.config_init, next(iter(optimizers), "")))
        if optimizer_init is None:
            return
        scheduler_init = _class_and_args(schedulers, self._get(self.config_init, next(iter(schedulers), "")))
        if type(self.model).configure_optimizers is not LightningModule.configure_optimizers:
            rank_zero_warn(f"`{type(self.model).__name__}.configure_optimizers` will be overridden by"
                           f" `{type(self).__name__}.configure_optimizers`, which returns the optimizer and LR"
                           " scheduler given by `--optimizer` and `--lr_scheduler`.")
        optimizer = instantiate_class(self.model.parameters(), optimizer_init)
        lr_scheduler = instantiate_class(optimizer, scheduler_init) if scheduler_init else None
        # a partial, not a lambda: the model must pickle (ddp_spawn sends it to the other processes)
        self.model.configure_optimizers = functools.partial(self.configure_optimizers, self.model, optimizer,
                                                            lr_scheduler)

    def _prepare_subcommand_kwargs(self, subcommand: str) -> Dict[str, Any]:
        """The keyword arguments the subcommand's Trainer method is called with. Override to change them."""
        kwargs = {k: v for k, v in self.config_init[subcommand].items()
                  if k in self._subcommand_method_arguments[subcommand]}
        kwargs["model"] = self.model
        if self.datamodule is not None:
            kwargs["datamodule"] = self.datamodule
        return kwargs

    def _run_subcommand(self, subcommand: str) -> None:
        """Run `self.<subcommand>` if the CLI subclass defines it, else the Trainer's method, between the
        `before_<subcommand>` and `after_<subcommand>` hooks."""
        before = getattr(self, f"before_{subcommand}", None)
        if callable(before):
            before()
        run = getattr(self, subcommand, None) or getattr(self.trainer, subcommand)
        run(**self._prepare_subcommand_kwargs(subcommand))
        after = getattr(self, f"after_{subcommand}", None)
        if callable(after):
            after()


class _ConfigRecorder:
    """A jsonargparse instantiator for the model (or datamodule): builds it inside `given_hyperparameters` with its
    part of the CLI's config, so that `save_hyperparameters()` in its `__init__` saves that plain config (with
    "_class_path" when chosen by class path, and the values of instantiation links) rather than the objects built
    from it, and `load_from_checkpoint` builds it again with `instantiate_module` (named by "_instantiator")."""

    def __init__(self, cli: "LightningCLI", key: str) -> None:
        self.cli = cli
        self.key = key

    def __call__(self, class_type: type, *args: Any, applied_instantiation_links: Optional[dict] = None,
                 **kwargs: Any) -> Any:
        hparams = self.cli._dumped_config().get(self.key) or {}
        if "class_path" in hparams:
            hparams = {"_class_path": hparams["class_path"], **(hparams.get("init_args") or {}),
                       **(hparams.get("dict_kwargs") or {})}
        else:
            hparams = dict(hparams)
        for target, value in (applied_instantiation_links or {}).items():
            if target.startswith(f"{self.key}."):
                target = target[len(self.key) + 1:]
                _set_nested(hparams, target[len("init_args."):] if target.startswith("init_args.") else target,
                            value)
        hparams["_instantiator"] = _instantiator_name()
        with given_hyperparameters(class_type, hparams):
            return class_type(*args, **kwargs)


def _instantiator_name() -> str:
    """How a checkpoint names `instantiate_module`: under Lightning's name when the program runs through the drop-in
    (`volt run`), where that name is volt's function, so that Lightning loads the checkpoint too; volt trusts both."""
    import volt.dropin

    return "lightning.pytorch.cli.instantiate_module" if volt.dropin.installed() else "volt.cli.instantiate_module"


def _set_nested(config: Dict[str, Any], dotted_key: str, value: Any) -> None:
    *parents, leaf = dotted_key.split(".")
    for key in parents:
        config = config.setdefault(key, {})
    config[leaf] = value


def _built_type(class_or_function, default: type) -> type:
    """The class a `model_class`/`datamodule_class` argument builds: the class itself, or the return annotation of
    a function that builds one."""
    if class_or_function is None:
        return default
    if isinstance(class_or_function, type):
        return class_or_function
    annotation = inspect.signature(class_or_function).return_annotation
    return annotation if isinstance(annotation, type) else default


def instantiate_class(args: Any, init: Dict[str, Any]) -> Any:
    """Build `init["class_path"]` with positional `args` (one value or a tuple) and `init["init_args"]`."""
    args = args if isinstance(args, tuple) else (args,)
    module_name, class_name = init["class_path"].rsplit(".", 1)
    cls = getattr(importlib.import_module(module_name), class_name)
    return cls(*args, **init.get("init_args", {}))


def _automatic(registry: Dict[str, Any]) -> Dict[str, Any]:
    """The optimizers (or schedulers) the CLI builds itself: {nested key: class or tuple of base classes}."""
    return {key: classes for key, (classes, link_to) in registry.items() if link_to == "AUTOMATIC"}


def _class_and_args(registry: Dict[str, Any], value) -> Optional[Dict[str, Any]]:
    """The parsed optimizer or scheduler as {"class_path", "init_args"}, or None when not given."""
    if not registry or value is None:
        return None
    return _with_class_path(next(iter(registry.values())), value)


def _with_class_path(classes, value) -> Dict[str, Any]:
    """A parsed optimizer or scheduler group as {"class_path", "init_args"}: a subclass-mode value names its class,
    a single class's value holds only its arguments."""
    value = dict(vars(value)) if not isinstance(value, dict) else dict(value)
    if isinstance(classes, tuple):
        init_args = value.get("init_args") or {}
        return {"class_path": value["class_path"],
                "init_args": dict(init_args) if isinstance(init_args, dict) else dict(vars(init_args))}
    return {"class_path": f"{classes.__module__}.{classes.__qualname__}", "init_args": value}


LIGHTNING_LOGO = r"""
        __
       / /
      / /__
     /__  /
       / /
      / /    volt
     /_/
"""


def cli_lightning_logo() -> None:
    """Print volt's logo (a lightning bolt), as Lightning's example scripts do before starting."""
    print()
    print("\033[0;33m" + LIGHTNING_LOGO + "\033[0m")
    print()


def _first_line(doc: Optional[str]) -> Optional[str]:
    lines = inspect.cleandoc(doc).splitlines() if doc else []
    return lines[0] if lines else None


# ----------------------------------------------------------------------------------------------------------------
# the `volt` command


class _DigitsCLI(LightningCLI):
    """The `volt` command's CLI: evaluating needs a checkpoint, since the digits model loads no weights itself."""

    def before_instantiate_classes(self) -> None:
        if self.subcommand in ("validate", "test", "predict") and not self.config[self.subcommand].get("ckpt_path"):
            self._parser(self.subcommand).error(
                f"`volt {self.subcommand}` needs --ckpt_path: without a checkpoint it would evaluate an untrained"
                " model. `volt fit` prints the path of its best checkpoint; pass that (or any .ckpt it wrote)."
            )


def main(args: Optional[List[str]] = None) -> None:
    """The `volt` command: LightningCLI for the built-in digits example (see `volt.examples.digits`), and
    `volt run script.py` to run a Lightning program on volt (see `volt.dropin.run`).

    `volt fit` trains it in seconds on a CPU and prints where the TensorBoard logs, the best checkpoint and the
    picture of its training curves are; `volt test --ckpt_path <that checkpoint>` evaluates it; `volt plot` draws
    the curves of any runs (see `volt.plot`); `volt checkpoint consolidate|shard` converts between sharded checkpoint
    folders and files (see `volt.sharded_checkpoint`). With no subcommand, prints the usage and exits with status 2,
    as a command missing a required argument does.
    """
    given, args = args, sys.argv[1:] if args is None else list(args)
    if args and args[0] == "run":  # `volt run script.py ...`: a Lightning program on volt (volt/dropin/run.py)
        from volt.dropin.run import main as run

        return run(args[1:])
    from volt.callbacks import ModelCheckpoint
    from volt.examples.digits import DigitsClassifier, DigitsDataModule

    if "OMP_NUM_THREADS" not in os.environ:
        # The example's model is tiny: one thread runs it fastest, and a second one that waits for a busy core can
        # make every step ten times slower.
        torch.set_num_threads(1)
    if args[:1] == ["plot"]:  # not a Trainer method: its own parser, in volt.plot
        from volt.plot import main as plot

        plot(args[1:])
        return
    if args[:1] == ["checkpoint"]:  # `volt checkpoint consolidate|shard`: its own parser, in volt.sharded_checkpoint
        from volt.sharded_checkpoint import main as checkpoint

        checkpoint(args[1:])
        return
    cli = _DigitsCLI(
        DigitsClassifier,
        DigitsDataModule,
        trainer_defaults={
            "max_epochs": 15,
            "log_every_n_steps": 5,  # an epoch is 17 steps: log train_loss several times per epoch
            "callbacks": [ModelCheckpoint(monitor="val_acc", mode="max", filename="{epoch}-{val_acc:.3f}")],
        },
        parser_kwargs={"prog": "volt", "description": "Train and evaluate volt's built-in digits example. (`volt plot"
                                                      " --help`: draw the training curves of runs; `volt checkpoint "
                                                      "--help`: convert sharded checkpoints.)"},
        args=given,  # None: the command line (a list given as well would warn that it replaces sys.argv)
    )
    if cli.subcommand == "fit" and cli.trainer.is_global_zero:
        _print_fit_summary(cli.trainer)


def _print_fit_summary(trainer) -> None:
    """Tell the user where the run's results are."""
    print(f"TensorBoard logs: {trainer.log_dir}")
    print(f"  view them with: tensorboard --logdir {trainer.log_dir}")
    checkpoint = trainer.checkpoint_callback
    if checkpoint is not None and checkpoint.best_model_path:
        print(f"Best checkpoint (val_acc={float(checkpoint.best_model_score):.4f}): {checkpoint.best_model_path}")
        print(f"  test it with: volt test --ckpt_path {checkpoint.best_model_path}")
    if "val_acc" in trainer.callback_metrics:
        print(f"Final val_acc: {float(trainer.callback_metrics['val_acc']):.4f}")
    if trainer.loggers:  # the picture is drawn from the logs, once they are complete
        curves = os.path.join(trainer.log_dir, "curves.png")
        try:
            from volt.plot import plot_runs

            plot_runs([trainer.log_dir], curves)
            print(f"Training curves: {curves}")
        except (ModuleNotFoundError, ValueError) as error:  # matplotlib is optional; a run may log nothing
            print(f"Training curves not drawn: {error}")
