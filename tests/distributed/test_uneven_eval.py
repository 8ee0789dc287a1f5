"""Evaluation shards of unequal length under DDP: no sample twice, yet every rank runs the same number of steps,
so per-step collectives (all_gather, on_step sync_dist) never hang, and metrics equal the one-process values."""
import pytest

from distributed.helpers import reports, run

pytestmark = pytest.mark.distributed


@pytest.mark.timeout(90)
def test_uneven_and_empty_eval_shards_stay_in_step(tmp_path):
    single, ddp = tmp_path / "single", tmp_path / "ddp"
    run(single, {"phases": ["uneven"], "strategy": "auto", "devices": 1})
    run(ddp, {"phases": ["uneven"], "strategy": "ddp"}, timeout=60)
    reference, ranks = reports(single)[0], reports(ddp)

    for size, steps, sizes in ((11, 2, [[5, 5], [1, 5]]), (1, 1, [[1, 1]])):
        # 11 samples in batches of 5: rank 0 holds 6 (2 batches), rank 1 holds 5 (1 batch, then 1 filler);
        # 1 sample: rank 1 holds none and runs one filler made from the dataset's first sample
        for stage in ("validate", "test"):
            for rank in (0, 1):
                result = ranks[rank][f"{stage}{size}"]
                assert result["steps"] == steps, (stage, size, rank)
                for key, value in reference[f"{stage}{size}"]["metrics"].items():
                    assert result["metrics"][key] == pytest.approx(value, rel=1e-5), (stage, size, rank, key)
        assert [ranks[r][f"validate{size}"]["gathered"] for r in (0, 1)] == [sizes, sizes]
    assert [ranks[r]["validate11"]["samples_in_outputs"] for r in (0, 1)] == [6, 5]  # filler outputs dropped
    assert [ranks[r]["validate1"]["samples_in_outputs"] for r in (0, 1)] == [1, 0]

    # per step, a filler contributes nothing: with 11 samples the second step's value is rank 0's last sample alone,
    # the value one process logs for its third batch (sample 10)
    rows, single_rows = ranks[0]["validate11"]["step_metrics"], reference["validate11"]["step_metrics"]
    assert len(rows) == 2 and len(single_rows) == 3
    for key in ("step_mean", "step_max"):
        assert rows[1][key] == pytest.approx(single_rows[2][key], rel=1e-6), key
    assert ranks[1]["validate11"]["step_metrics"] == []  # only rank 0 writes logs
