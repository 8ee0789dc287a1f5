"""BasePredictionWriter under DDP on 2 gloo ranks: each rank writes its own part, per batch and at the end, and
the parts together cover the dataset once, each prediction with the index of its sample. Script:
scripts/predict_writer.py."""
import subprocess
import sys

import pytest
import torch

from distributed.helpers import SCRIPTS, finish, script_env

pytestmark = pytest.mark.distributed


def test_each_rank_writes_its_part(tmp_path):
    proc = subprocess.Popen([sys.executable, str(SCRIPTS / "predict_writer.py"), str(tmp_path)], env=script_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    output = finish(proc, timeout=50)
    assert proc.returncode == 0, output[-6000:]
    covered = []
    for rank in (0, 1):
        part = torch.load(tmp_path / f"predictions_{rank}.pt", weights_only=True)
        [indices] = part["indices"]  # one dataloader
        assert len(part["predictions"]) == len(indices)
        for batch_indices, prediction in zip(indices, part["predictions"]):
            assert torch.equal(prediction, 2 * torch.tensor(batch_indices, dtype=torch.float32).unsqueeze(1))
            covered += batch_indices
        batches = sorted(tmp_path.glob(f"batches/rank{rank}-*.pt"))
        assert [torch.load(p, weights_only=True)["indices"] for p in batches] == indices
    assert sorted(covered) == list(range(11))  # 6 and 5 samples: every sample once, none padded in twice
