"""The 1.x forms older tutorials use, which volt accepts (Lightning 2.x rejects them): `Trainer(gpus=N)`,
`training_epoch_end(outputs)` / `validation_epoch_end` / `test_epoch_end`, and `precision=16`."""
import pytest
import torch

import volt
from volt.accelerators import CPUAccelerator
from helpers import BoringModel, loader, trainer


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
@pytest.mark.parametrize("gpus", [1, 2, [0], "1"])
def test_gpus_without_a_gpu_names_the_problem(gpus):
    with pytest.raises(RuntimeError, match=r"accelerator='gpu' \(or gpus=N\) asks for a CUDA GPU, but none is "
                                           r"available on this machine.*Use accelerator='cpu'"):
        volt.Trainer(gpus=gpus)


@pytest.mark.parametrize("gpus", [0, []])
def test_gpus_zero_trains_on_the_cpu(gpus, tmp_path):
    run = trainer(tmp_path, gpus=gpus, limit_val_batches=0)
    run.fit(BoringModel())
    assert isinstance(run.accelerator, CPUAccelerator) and run.global_step == 4


def test_gpus_conflicting_with_accelerator():
    with pytest.raises(Exception, match=r"Trainer\(gpus=1\) conflicts with accelerator='cpu'"):
        volt.Trainer(gpus=1, accelerator="cpu")


class EpochEnds(BoringModel):
    """Overrides the three 1.x epoch-end hooks and keeps what they received."""

    def __init__(self):
        super().__init__()
        self.received = {}

    def training_step(self, batch, batch_idx):
        loss = super().training_step(batch, batch_idx)
        return {"loss": loss, "batch_idx": batch_idx}

    def training_epoch_end(self, outputs):
        self.received.setdefault("train", []).append(outputs)
        self.log("avg_train_loss", torch.stack([x["loss"] for x in outputs]).mean())

    def validation_step(self, batch, batch_idx, dataloader_idx=0):
        super().validation_step(batch, batch_idx)
        return {"idx": (dataloader_idx, batch_idx)}

    def validation_epoch_end(self, outputs):
        self.received.setdefault("validate", []).append(outputs)

    def test_step(self, batch, batch_idx):
        return batch_idx * 10

    def test_epoch_end(self, outputs):
        self.received["test"] = outputs
        self.log("test_sum", float(sum(outputs)))


def test_training_epoch_end_gets_every_step_output_with_a_detached_loss(tmp_path):
    model = EpochEnds()
    run = trainer(tmp_path, max_epochs=2, num_sanity_val_steps=0, limit_val_batches=1)
    run.fit(model)
    first, second = model.received["train"]
    assert [o["batch_idx"] for o in first] == [0, 1, 2, 3] and len(second) == 4
    assert all(not o["loss"].requires_grad and o["loss"].dim() == 0 for o in first)
    mean = torch.stack([o["loss"] for o in second]).mean()
    assert torch.equal(run.callback_metrics["avg_train_loss"], mean)


def test_validation_and_test_epoch_end_get_step_outputs(tmp_path):
    model = EpochEnds()
    run = trainer(tmp_path, num_sanity_val_steps=0)
    run.fit(model)
    assert model.received["validate"] == [[{"idx": (0, 0)}, {"idx": (0, 1)}, {"idx": (0, 2)}, {"idx": (0, 3)}]]
    assert run.test(model, verbose=False) == [{"test_sum": 60.0}]
    assert model.received["test"] == [0, 10, 20, 30]


def test_validation_epoch_end_with_two_dataloaders_gets_a_list_per_loader(tmp_path):
    model = EpochEnds()
    trainer(tmp_path).validate(model, [loader(n=2), loader(n=4)], verbose=False)
    assert model.received["validate"] == [[[{"idx": (0, 0)}], [{"idx": (1, 0)}, {"idx": (1, 1)}]]]


def test_precision_16_warns_and_means_16_mixed(tmp_path):
    with pytest.warns(UserWarning, match="precision=16 is supported for backward compatibility; it means '16-mixed'"):
        run = trainer(tmp_path, precision=16, limit_train_batches=1, limit_val_batches=0)
    assert run.precision == "16-mixed" and isinstance(run.scaler, torch.amp.GradScaler)

    class Model(BoringModel):
        def training_step(self, batch, batch_idx):
            self.output_dtype = self(batch[0]).dtype
            return super().training_step(batch, batch_idx)

    model = Model()
    run.fit(model)
    assert model.output_dtype == torch.float16
