"""A user's script for the prediction-writer test: `python predict_writer.py OUT`.

`trainer.predict` on 2 gloo ranks with `return_predictions=False` and a BasePredictionWriter that writes each rank's
part: every batch to OUT/batches/rank{r}-{batch_idx}.pt, and at the end OUT/predictions_{r}.pt with all of the
rank's predictions and their dataset indices.
"""
import os
import sys

import torch
from torch.utils.data import DataLoader, TensorDataset

import volt
from volt.callbacks import BasePredictionWriter

OUT = sys.argv[1]


class Doubler(volt.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.scale = torch.nn.Parameter(torch.tensor(2.0))

    def predict_step(self, batch, batch_idx):
        return batch[0] * self.scale


class RankWriter(BasePredictionWriter):
    def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx):
        folder = os.path.join(OUT, "batches")
        os.makedirs(folder, exist_ok=True)
        torch.save({"indices": batch_indices, "prediction": prediction},
                   os.path.join(folder, f"rank{trainer.global_rank}-{batch_idx}.pt"))

    def write_on_epoch_end(self, trainer, pl_module, predictions, batch_indices):
        torch.save({"predictions": predictions, "indices": batch_indices},
                   os.path.join(OUT, f"predictions_{trainer.global_rank}.pt"))


def main() -> None:
    data = TensorDataset(torch.arange(11, dtype=torch.float32).unsqueeze(1))
    trainer = volt.Trainer(accelerator="cpu", devices=2, strategy="ddp", logger=False, enable_progress_bar=False,
                           enable_model_summary=False, callbacks=[RankWriter("batch_and_epoch")])
    result = trainer.predict(Doubler(), DataLoader(data, batch_size=2), return_predictions=False)
    assert result is None


if __name__ == "__main__":
    main()
