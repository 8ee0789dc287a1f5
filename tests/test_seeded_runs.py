"""A seeded fit draws the same random numbers whether or not another fit ran before it in the process.

The first fit of a process is the one that imports what its loggers and callbacks load on first use (tensorboardX,
which imports comet_ml when it is installed, rich), and some of those packages draw from the global RNGs when
imported. The run below is the first fit of a fresh subprocess, with the default Trainer (TensorBoard logger, rich
progress bar and model summary where installed) and a model that draws from `random`, numpy and torch at every step.
"""
import json
import os
import subprocess
import sys

import pytest

SCRIPT = r"""
import json, random, sys
import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset
import volt

assert not {"tensorboardX", "rich", "comet_ml"} & set(sys.modules), "the first fit must be the first import"


class Noisy(volt.LightningModule):
    def __init__(self):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Dropout(0.3), torch.nn.Linear(8, 1))

    def training_step(self, batch, batch_idx):
        (x,) = batch
        x = x * (1 + 0.1 * random.random()) + 0.1 * float(np.random.randn())
        loss = self.net(x).pow(2).mean()
        self.log("loss", loss)
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def seeded_fit(root):
    volt.seed_everything(7, verbose=False)
    model = Noisy()
    data = DataLoader(TensorDataset(torch.randn(16, 4)), batch_size=4, shuffle=True)
    volt.Trainer(default_root_dir=root, max_epochs=2, log_every_n_steps=1).fit(model, data)
    return {"weights": [float(p.sum()) for p in model.parameters()], "random": random.random(),
            "numpy": float(np.random.rand()), "torch": float(torch.rand(()))}


print("RESULTS", json.dumps([seeded_fit(sys.argv[1] + "/first"), seeded_fit(sys.argv[1] + "/second")]))
"""


def test_the_first_seeded_fit_of_a_process_equals_a_later_one(tmp_path):
    pytest.importorskip("tensorboardX")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    result = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path)], capture_output=True, text=True, env=env,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    first, second = json.loads(result.stdout.split("RESULTS ")[-1])
    assert first == second
