"""Loggers after a resume: TensorBoard and CSV show each step once, the points the interrupted run logged after its
last checkpoint replaced by the resumed run's."""
import pytest

from . import run_training
from .harness import read_text

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

CONFIG = dict(tensorboard=True, max_epochs=2, val_check_interval=0.5,
              checkpoint={"every_n_train_steps": 4, "save_last": True, "save_top_k": 1})


def _scalars(log_dir) -> dict:
    """{tag: [(step, value), ...]} as TensorBoard shows them (its reader applies the resume's purge marker)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(log_dir))
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def test_tensorboard_and_csv_show_each_step_once_after_resume(tmp_path):
    reference, run = tmp_path / "reference", tmp_path / "run"
    run_training.run(dict(root=str(reference), **CONFIG))
    with pytest.raises(RuntimeError, match="crash at step 7"):  # the last checkpoint is from step 4
        run_training.run(dict(root=str(run), crash_at_step=7, **CONFIG))
    logged_before_resume = _scalars(run / "tb" / "version_0")
    assert max(step for step, _ in logged_before_resume["train_loss_step"]) == 6  # steps 5-7 (x = 4-6) to replace

    run_training.run(dict(root=str(run), ckpt_path="last", **CONFIG))
    expected = _scalars(reference / "tb" / "version_0")
    assert _scalars(run / "tb" / "version_0") == expected
    steps = [step for step, _ in expected["train_loss_step"]]
    assert steps == sorted(set(steps)) and len(steps) == 12
    assert read_text(run / "logs" / "version_0" / "metrics.csv") == read_text(reference / "logs" / "version_0" /
                                                                             "metrics.csv")
