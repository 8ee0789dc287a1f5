"""The built-in digits example: its data module, and `volt fit` run end to end as a user runs it."""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from volt.checkpoint import load_checkpoint
from volt.examples import DigitsClassifier, DigitsDataModule
from volt.examples.digits import load_digits

SRC = Path(__file__).resolve().parents[1] / "src"


def _split(**kwargs):
    datamodule = DigitsDataModule(**kwargs)
    datamodule.setup("fit")
    return datamodule


def test_bundled_data_is_the_uci_digits():
    images, labels = load_digits()
    assert images.shape == (1797, 8, 8) and images.dtype == torch.uint8
    assert labels.shape == (1797,) and labels.dtype == torch.uint8
    assert int(images.max()) == 16 and int(images.min()) == 0
    assert torch.bincount(labels.long()).tolist() == [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]


def test_datamodule_splits_every_image_once():
    datamodule = _split(val_fraction=0.2, test_fraction=0.1)
    sizes = [len(datamodule.train_set), len(datamodule.val_set), len(datamodule.test_set)]
    assert sizes == [1797 - 359 - 180, 359, 180]
    split_labels = torch.cat([part.tensors[1] for part in (datamodule.train_set, datamodule.val_set,
                                                           datamodule.test_set)])
    assert torch.equal(torch.bincount(split_labels), torch.bincount(load_digits()[1].long()))


def test_datamodule_split_depends_only_on_seed():
    first, again, other = _split(seed=3), _split(seed=3), _split(seed=4)
    assert torch.equal(first.val_set.tensors[0], again.val_set.tensors[0])
    assert not torch.equal(first.val_set.tensors[1], other.val_set.tensors[1])


def test_datamodule_batches_are_normalised_float_vectors():
    datamodule = _split(batch_size=32)
    images, labels = next(iter(datamodule.train_dataloader()))
    assert images.shape == (32, 64) and images.dtype == torch.float32
    assert labels.shape == (32,) and labels.dtype == torch.int64
    train_images = datamodule.train_set.tensors[0]
    assert abs(float(train_images.mean())) < 1e-5 and abs(float(train_images.std()) - 1) < 1e-5
    assert [len(batch) for batch in (next(iter(datamodule.val_dataloader())),
                                     next(iter(datamodule.test_dataloader())))] == [2, 2]
    (predict_images,) = next(iter(datamodule.predict_dataloader()))  # images only: nothing to peek at
    assert torch.equal(predict_images, datamodule.test_set.tensors[0][:32])


def test_datamodule_rejects_fractions_that_leave_nothing_to_train_on():
    with pytest.raises(ValueError, match="val_fraction=0.5 and test_fraction=0.5 must be positive and sum"):
        DigitsDataModule(val_fraction=0.5, test_fraction=0.5)


def test_classifier_predicts_class_ids():
    model = DigitsClassifier(hidden_size=16)
    assert dict(model.hparams) == {"hidden_size": 16, "lr": 3e-3, "dropout": 0.1}
    predictions = model.predict_step([torch.randn(5, 64)], 0)
    assert predictions.shape == (5,) and predictions.dtype == torch.int64
    assert bool(((predictions >= 0) & (predictions < 10)).all())


def test_volt_fit_trains_the_example_end_to_end(tmp_path):
    """`volt fit` with its defaults, as a user runs it: it must reach 95% validation accuracy and say where the
    logs and the best checkpoint are."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(SRC), os.environ.get("PYTHONPATH")]))}
    result = subprocess.run(
        [sys.executable, "-m", "volt", "fit", "--trainer.default_root_dir", str(tmp_path)],
        capture_output=True, text=True, env=env, timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    printed = dict(re.findall(r"^(TensorBoard logs|Best checkpoint \(val_acc=[\d.]+\)|Final val_acc|Training curves):"
                              r" (.+)$", result.stdout, re.MULTILINE))

    log_dir = tmp_path / "lightning_logs" / "version_0"
    assert printed["TensorBoard logs"] == str(log_dir)
    assert list(log_dir.glob("events.out.tfevents.*"))
    assert (log_dir / "config.yaml").is_file()
    assert printed["Training curves"] == str(log_dir / "curves.png")
    assert (log_dir / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    (best_label,) = [key for key in printed if key.startswith("Best checkpoint")]
    best_path = Path(printed[best_label])
    assert best_path.parent == log_dir / "checkpoints" and best_path.is_file()
    best_score = float(re.search(r"val_acc=([\d.]+)", best_label).group(1))
    assert best_score >= 0.95
    assert float(printed["Final val_acc"]) >= 0.95

    checkpoint = load_checkpoint(best_path)
    # as LightningCLI: the checkpoint names the function that rebuilds the model from them
    assert checkpoint["hyper_parameters"] == {"hidden_size": 256, "lr": 3e-3, "dropout": 0.1,
                                              "_instantiator": "volt.cli.instantiate_module"}
    (state,) = [value for key, value in checkpoint["callbacks"].items() if key.startswith("ModelCheckpoint")]
    assert float(state["best_model_score"]) == pytest.approx(best_score, abs=1e-4)


def test_lr_find_picture_of_the_example(tmp_path, capsys, one_torch_thread):
    """`python -m volt.examples.lr_find PATH`, which draws the README's picture: a PNG and the suggestion."""
    from volt.examples.lr_find import main

    main([str(tmp_path / "lr.png")])
    assert (tmp_path / "lr.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    suggestion = float(re.search(r"Suggested learning rate: (\S+)", capsys.readouterr().out).group(1))
    assert 1e-4 < suggestion < 1e-1
    assert os.listdir(tmp_path) == ["lr.png"]
