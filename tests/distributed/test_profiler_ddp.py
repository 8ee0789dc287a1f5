"""PyTorchProfiler under DDP (2 processes on gloo, volt's launcher): every rank writes its own trace and report."""
import json
import subprocess
import sys

import pytest

from distributed.helpers import finish, script_env

pytestmark = pytest.mark.distributed

SCRIPT = """
import sys
import torch
from torch.utils.data import DataLoader, TensorDataset
import volt
from volt.profilers import PyTorchProfiler


class Net(volt.LightningModule):
    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(4, 1)

    def training_step(self, batch, batch_idx):
        return self.layer(batch[0]).pow(2).mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


data = DataLoader(TensorDataset(torch.randn(32, 4)), batch_size=2)  # 8 batches per rank
trainer = volt.Trainer(accelerator="cpu", devices=2, strategy="ddp", max_epochs=1, logger=False,
                       enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                       profiler=PyTorchProfiler(dirpath=sys.argv[1], filename="perf"))
trainer.fit(Net(), data)
"""


def test_each_rank_writes_its_trace_and_report_as_lightning(tmp_path):
    script = tmp_path / "profile_ddp.py"
    script.write_text(SCRIPT)
    proc = subprocess.Popen([sys.executable, str(script), str(tmp_path / "prof")], env=script_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    output = finish(proc, timeout=90)
    assert proc.returncode == 0, output[-6000:]
    assert sorted(p.name for p in (tmp_path / "prof").iterdir()) == [
        "fit-perf-0.0.pt.trace.json", "fit-perf-0.txt", "fit-perf-1.0.pt.trace.json", "fit-perf-1.txt"]
    for rank in (0, 1):
        trace = json.loads((tmp_path / "prof" / f"fit-perf-{rank}.0.pt.trace.json").read_text())
        names = [event["name"] for event in trace["traceEvents"] if event.get("ph") == "X"]
        assert names.count("[pl][profile][Strategy]DDPStrategy.training_step") == 3
    for rank in (0, 1):
        assert f"Profile stats for: records rank: {rank}" in (tmp_path / "prof" / f"fit-perf-{rank}.txt").read_text()
