"""`volt run`: unmodified Lightning programs, written by the tests as files, run on volt in fresh processes.

Each test checks that the program really ran on volt (the Trainer's class, the files volt writes) and that the
command behaves as `python script.py` would (arguments, `__main__`, exit status, child processes).
"""
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

SRC = Path(__file__).resolve().parents[1] / "src"
_LAUNCH_VARS = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE", "RANK", "GROUP_RANK",
                "LOCAL_WORLD_SIZE", "TORCHELASTIC_RUN_ID", "SLURM_NTASKS", "PL_GLOBAL_SEED", "VOLT_DROPIN")

# A Lightning program as users write it: all three spellings of the import, a seeded fit, a checkpoint.
PROGRAM = '''
import sys
import torch
import lightning as L
import pytorch_lightning
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.demos.boring_classes import BoringModel
from pytorch_lightning.utilities.types import STEP_OUTPUT


class Model(BoringModel):
    def training_step(self, batch, batch_idx) -> STEP_OUTPUT:
        loss = self.step(batch)
        self.log("train_loss", loss)
        return loss


if __name__ == "__main__":
    L.seed_everything(7)
    model = Model()
    trainer = pytorch_lightning.Trainer(max_epochs=2, limit_train_batches=4, limit_val_batches=2,
                                        callbacks=[ModelCheckpoint(save_last=True)], enable_progress_bar=False,
                                        log_every_n_steps=1)
    trainer.fit(model)
    torch.save(model.state_dict(), "weights.pt")
    print("TRAINER", type(trainer).__module__, L.__version__, sys.argv[1:])
'''


def env(**extra: str) -> dict:
    environment = {k: v for k, v in os.environ.items() if k not in _LAUNCH_VARS}
    environment["PYTHONPATH"] = os.pathsep.join(p for p in (str(SRC), environment.get("PYTHONPATH", "")) if p)
    environment["OMP_NUM_THREADS"] = "1"
    environment.update(extra)
    return environment


def run(args, cwd: Path, timeout: float = 120, python=None) -> subprocess.CompletedProcess:
    command = (python or [sys.executable, "-m", "volt", "run"]) + [str(a) for a in args]
    return subprocess.run(command, cwd=cwd, env=env(), capture_output=True, text=True, timeout=timeout)


def write(path: Path, source: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(source))
    return path


def test_a_lightning_script_runs_on_volt_unmodified(tmp_path):
    write(tmp_path / "train.py", PROGRAM)
    result = run(["train.py", "--lr", "0.1"], tmp_path)
    assert result.returncode == 0, result.stderr[-4000:]
    assert "TRAINER volt.trainer.trainer 2.6.6 ['--lr', '0.1']" in result.stdout
    # volt's files: its checkpoint layout and keys
    version = tmp_path / "lightning_logs" / "version_0"
    assert sorted(p.name for p in (version / "checkpoints").iterdir()) == ["epoch=1-step=8.ckpt", "last.ckpt"]
    checkpoint = torch.load(version / "checkpoints" / "last.ckpt", weights_only=True)
    assert "volt_version" in checkpoint and checkpoint["global_step"] == 8
    # the weights are those of the same program written for volt, in this process
    import volt
    from volt.demos.boring_classes import BoringModel

    volt.seed_everything(7)
    model = BoringModel()
    volt.Trainer(max_epochs=2, limit_train_batches=4, limit_val_batches=2, enable_progress_bar=False, logger=False,
                 enable_checkpointing=False, enable_model_summary=False).fit(model)
    weights = torch.load(tmp_path / "weights.pt", weights_only=True)
    assert all(torch.equal(weights[k], v) for k, v in model.state_dict().items())
    assert torch.equal(checkpoint["state_dict"]["layer.weight"], weights["layer.weight"])


def test_module_mode_sets_main_as_python_dash_m_does(tmp_path):
    write(tmp_path / "pkg" / "__init__.py", "")
    write(tmp_path / "pkg" / "train.py", """
        import sys
        import lightning.pytorch as pl
        print("SPEC", __spec__.name, __name__, sys.argv, pl.LightningModule.__module__)
    """)
    write(tmp_path / "pkg" / "__main__.py", "print('PACKAGE MAIN', __spec__.name)")
    result = run(["-m", "pkg.train", "a", "--b"], tmp_path)
    assert result.returncode == 0, result.stderr[-4000:]
    assert f"SPEC pkg.train __main__ [{str(tmp_path / 'pkg' / 'train.py')!r}, 'a', '--b'] volt.module" in result.stdout
    result = run(["-m", "pkg"], tmp_path)
    assert "PACKAGE MAIN pkg.__main__" in result.stdout, result.stderr[-4000:]
    result = run(["-m", "nonexistent_module"], tmp_path)
    assert result.returncode == 1 and "No module named nonexistent_module" in result.stderr


def test_exit_status_and_errors_are_the_programs(tmp_path):
    write(tmp_path / "exits.py", """
        import sys
        import lightning.pytorch
        sys.exit(int(sys.argv[1]))
    """)
    assert run(["exits.py", "3"], tmp_path).returncode == 3
    write(tmp_path / "fails.py", """
        import lightning.pytorch

        def train():
            raise ValueError("bad config")

        train()
    """)
    result = run(["fails.py"], tmp_path)
    assert result.returncode == 1
    assert result.stderr.startswith("Traceback"), result.stderr
    assert 'fails.py", line 7, in <module>' in result.stderr and "ValueError: bad config" in result.stderr
    assert "volt/dropin" not in result.stderr  # the traceback starts in the program, as with python


def test_bad_command_lines_exit_as_python_does(tmp_path, capsys):
    from volt.dropin.run import main

    for argv, status, message in ([[], 2, "usage: volt run SCRIPT"], [["-m"], 2, "-m needs a module name"],
                                  [[str(tmp_path / "missing.py")], 2, "can't open file"]):
        with pytest.raises(SystemExit) as stopped:
            main(argv)
        assert stopped.value.code == status and message in capsys.readouterr().err
    with pytest.raises(SystemExit) as stopped:
        main(["--help"])
    assert stopped.value.code == 0 and "usage: volt run" in capsys.readouterr().out


def test_a_lightning_name_volt_lacks_says_so(tmp_path):
    write(tmp_path / "names.py", """
        import lightning as L
        for attempt in ("from lightning.pytorch.accelerators import XLAAccelerator",
                        "import lightning.pytorch.loops", "L.Fabric",
                        "from lightning.pytorch.strategies import DeepSpeedStrategy"):
            try:
                exec(attempt)
            except ImportError as err:
                print(type(err).__name__, err)
        try:
            L.pytorch.callbacks.NoSuchCallback
        except AttributeError as err:
            print(type(err).__name__, err)
    """)
    result = run(["names.py"], tmp_path)
    assert result.returncode == 0, result.stderr[-4000:]
    assert result.stdout.splitlines() == [
        "NotProvidedError volt does not provide lightning.pytorch.accelerators.XLAAccelerator: volt trains on CPU, "
        "CUDA and MPS devices; TPU/XLA is not supported.",
        "NotProvidedError volt does not provide lightning.pytorch.loops: Lightning's internal machinery, which volt's "
        "own loop replaces (see volt/trainer/fit_loop.py).",
        "NotProvidedError volt does not provide lightning.Fabric: volt has no Fabric; put the model in a "
        "LightningModule and use the Trainer, or plain PyTorch.",
        "NotProvidedError volt does not provide lightning.pytorch.strategies.DeepSpeedStrategy: volt does not "
        "integrate DeepSpeed; use strategy='fsdp' for sharded training.",
        "AttributeError module 'lightning.pytorch.callbacks' has no attribute 'NoSuchCallback' (volt does not "
        "provide it).",
    ]


@pytest.mark.distributed
@pytest.mark.parametrize("strategy", ["ddp", "ddp_spawn"])
def test_ddp_ranks_run_on_volt(tmp_path, strategy):
    """"ddp": volt's launcher re-runs the script with `volt run`; "ddp_spawn": multiprocessing spawn children import
    the script again, and resolve its Lightning imports to volt at startup."""
    write(tmp_path / "ddp.py", """
        import sys
        import lightning.pytorch as pl
        from lightning.pytorch.demos.boring_classes import BoringModel

        class Model(BoringModel):
            def on_train_end(self):
                with open(f"rank{self.global_rank}.txt", "w") as f:
                    f.write(f"{type(self.trainer).__module__} {self.trainer.world_size} {sys.argv[1:]}")

        if __name__ == "__main__":
            trainer = pl.Trainer(accelerator="cpu", devices=2, strategy=sys.argv[1], max_epochs=1,
                                 limit_train_batches=2, limit_val_batches=1, enable_progress_bar=False, logger=False,
                                 enable_checkpointing=False, enable_model_summary=False)
            trainer.fit(Model())
    """)
    result = run(["ddp.py", strategy, "--flag"], tmp_path, timeout=180)
    assert result.returncode == 0, result.stderr[-4000:]
    for rank in (0, 1):
        assert (tmp_path / f"rank{rank}.txt").read_text() == f"volt.trainer.trainer 2 ['{strategy}', '--flag']"


def test_spawned_dataloader_workers_resolve_lightning_to_volt(tmp_path):
    write(tmp_path / "workers.py", """
        import torch
        from torch.utils.data import DataLoader, Dataset
        import lightning.pytorch as pl
        from lightning.pytorch.demos.boring_classes import BoringModel


        class WhereAmI(Dataset):
            def __len__(self):
                return 4

            def __getitem__(self, index):
                import pytorch_lightning  # in the spawned worker process
                return torch.tensor([float(pytorch_lightning.Trainer.__module__ == "volt.trainer.trainer")])


        class Model(BoringModel):
            def training_step(self, batch, batch_idx):
                assert torch.all(batch == 1.0), "the worker resolved Lightning to something else"
                self.seen = getattr(self, "seen", 0) + 1
                return (self.layer.weight.sum() * 0 + batch.sum()).requires_grad_()

            def train_dataloader(self):
                return DataLoader(WhereAmI(), batch_size=2, num_workers=1, multiprocessing_context="spawn")


        if __name__ == "__main__":
            model = Model()
            pl.Trainer(max_epochs=1, limit_val_batches=0, enable_progress_bar=False, logger=False,
                       enable_checkpointing=False, enable_model_summary=False).fit(model)
            print("BATCHES", model.seen)
    """)
    result = run(["workers.py"], tmp_path)
    assert result.returncode == 0, result.stderr[-4000:]
    assert "BATCHES 2" in result.stdout


def test_hydra_target_and_jsonargparse_class_path_resolve_to_volt(tmp_path):
    pytest.importorskip("hydra")
    write(tmp_path / "conf" / "config.yaml", """
        trainer:
          _target_: lightning.pytorch.Trainer
          max_epochs: 1
          limit_train_batches: 2
          limit_val_batches: 1
          enable_progress_bar: false
          callbacks:
            - _target_: lightning.pytorch.callbacks.ModelCheckpoint
              dirpath: hydra_ckpts
        model:
          _target_: lightning.pytorch.demos.boring_classes.BoringModel
    """)
    write(tmp_path / "hydra_app.py", """
        import hydra
        from hydra.utils import instantiate


        @hydra.main(version_base="1.3", config_path="conf", config_name="config")
        def main(cfg):
            trainer = instantiate(cfg.trainer)
            trainer.fit(instantiate(cfg.model))
            print("HYDRA", type(trainer).__module__, type(trainer.checkpoint_callback).__module__,
                  trainer.max_epochs, trainer.global_step)


        main()
    """)
    result = run(["hydra_app.py", "trainer.max_epochs=2", "hydra.run.dir=outputs"], tmp_path)
    assert result.returncode == 0, result.stderr[-4000:]
    assert "HYDRA volt.trainer.trainer volt.callbacks.model_checkpoint 2 4" in result.stdout
    assert (tmp_path / "hydra_ckpts" / "epoch=1-step=4.ckpt").exists()

    write(tmp_path / "cli.yaml", """
        trainer:
          max_epochs: 1
          limit_train_batches: 2
          limit_val_batches: 1
          enable_progress_bar: false
          callbacks:
            - class_path: lightning.pytorch.callbacks.ModelCheckpoint
              init_args:
                dirpath: cli_ckpts
                filename: from-config
    """)
    write(tmp_path / "cli_app.py", """
        import torch
        from lightning.pytorch.cli import LightningCLI
        from lightning.pytorch.demos.boring_classes import BoringModel


        class Model(BoringModel):
            def __init__(self, width: int = 32):
                super().__init__()
                self.save_hyperparameters()


        cli = LightningCLI(Model)
        print("CLI", type(cli.trainer).__module__, [type(c).__name__ for c in cli.trainer.callbacks])
        saved = torch.load("cli_ckpts/from-config.ckpt", weights_only=True)["hyper_parameters"]
        print("INSTANTIATOR", saved["_instantiator"], Model.load_from_checkpoint("cli_ckpts/from-config.ckpt").hparams)
    """)
    result = run(["cli_app.py", "fit", "--config", "cli.yaml"], tmp_path)
    assert result.returncode == 0, result.stderr[-4000:]
    assert "CLI volt.trainer.trainer" in result.stdout and "'ModelCheckpoint'" in result.stdout
    # the checkpoint names LightningCLI's instantiator as Lightning does, so that Lightning and volt both load it
    assert "INSTANTIATOR lightning.pytorch.cli.instantiate_module {'width': 32}" in result.stdout
    assert (tmp_path / "cli_ckpts" / "from-config.ckpt").exists()


def test_outside_volt_run_lightning_stays_lightning(tmp_path):
    pytest.importorskip("pytorch_lightning")
    write(tmp_path / "plain.py", """
        import volt  # importing volt changes nothing for Lightning
        import pytorch_lightning
        from pytorch_lightning.callbacks import ModelCheckpoint
        print("PLAIN", pytorch_lightning.Trainer.__module__, ModelCheckpoint.__module__, pytorch_lightning.__version__)
    """)
    result = run(["plain.py"], tmp_path, python=[sys.executable])
    assert result.returncode == 0, result.stderr[-4000:]
    assert ("PLAIN pytorch_lightning.trainer.trainer pytorch_lightning.callbacks.model_checkpoint 2.6.6"
            in result.stdout)


def test_opt_in_for_notebooks_and_test_suites(tmp_path):
    # a notebook: install() before the first Lightning import; after one, it refuses to mix the two
    # (a reload reads POSSIBLE_USER_WARNINGS again, as a reload of Lightning does)
    code = ("import volt.dropin; volt.dropin.install(); import lightning.pytorch as pl; import volt; "
            "import importlib, os, warnings; os.environ['POSSIBLE_USER_WARNINGS'] = 'off'; importlib.reload(pl); "
            "from lightning.pytorch.utilities.warnings import PossibleUserWarning as W; "
            "print('NOTEBOOK', pl.Trainer is volt.Trainer, volt.dropin.installed(), "
            "any(f[0] == 'ignore' and f[2] is W for f in warnings.filters))")
    result = run(["-c", code], tmp_path, python=[sys.executable])
    assert "NOTEBOOK True True True" in result.stdout, result.stderr[-4000:]
    pytest.importorskip("pytorch_lightning")
    code = "import pytorch_lightning, volt.dropin; volt.dropin.install()"
    result = run(["-c", code], tmp_path, python=[sys.executable])
    assert result.returncode == 1 and "Lightning is already imported in this process (" in result.stderr
    # a test suite: pytest -p volt.dropin.pytest_plugin
    write(tmp_path / "test_on_volt.py", """
        import lightning.pytorch as pl
        from lightning.pytorch.demos.boring_classes import BoringModel

        def test_model_trains_on_volt(tmp_path):
            trainer = pl.Trainer(max_epochs=1, limit_train_batches=2, limit_val_batches=1, default_root_dir=tmp_path,
                                 enable_progress_bar=False)
            trainer.fit(BoringModel())
            assert type(trainer).__module__ == "volt.trainer.trainer" and trainer.global_step == 2
    """)
    result = run(["-m", "pytest", "-q", "-p", "volt.dropin.pytest_plugin", "-p", "no:cacheprovider",
                  "test_on_volt.py"], tmp_path, python=[sys.executable])
    assert result.returncode == 0 and "1 passed" in result.stdout, result.stdout[-4000:] + result.stderr[-4000:]
