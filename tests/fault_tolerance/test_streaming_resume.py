"""Resumable streams: an iterable dataset or loader with `state_dict()`/`load_state_dict()` has its state saved in
checkpoints, and a run resumed inside an epoch continues the stream from it at once (no replay), ending
bit-identical to an uninterrupted run. Without the pair, the consumed batches are replayed and a notice says why.

Streams: a user's own (run_training.StatefulNoisyStream), torchdata's StatefulDataLoader with worker processes, and a
Hugging Face `datasets` IterableDataset.
"""
import glob
import logging

import pytest
import torch

from . import run_training
from .test_exact_resume import _resume_from_each

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture
def volt_log(caplog):
    caplog.set_level(logging.INFO, logger="volt")
    return caplog


def _resume(tmp_path, checkpoint, **cfg):
    """Resume once from `checkpoint` in this process; returns the Trainer."""
    return run_training.run(dict(root=str(tmp_path / "resumed"), ckpt_path=checkpoint, **cfg))


def test_a_stateful_stream_resumes_from_every_checkpoint_without_replaying(tmp_path, volt_log):
    """A user's own stateful IterableDataset, accumulation across the stream's last, partial window: every
    checkpoint resumes exactly, and a resume late in the epoch reads only what is left of the stream."""
    cfg = dict(iterable="stateful", accumulate=2, max_epochs=2)
    checkpoints = _resume_from_each(tmp_path, **cfg)
    assert "replaying" not in volt_log.text
    saved = torch.load(checkpoints[4], weights_only=True)["loops"]["fit_loop"]  # after the 5th of 6 batches
    assert saved["batch_idx"] == 5 and saved["stream"]["position"] == 20
    trainer = _resume(tmp_path, checkpoints[4], **cfg)
    assert trainer.fit_loop.train_loader.dataset.served == 4 + 24  # the epoch's last batch, then the next epoch


def test_torchdata_stateful_dataloader_with_worker_processes(tmp_path, volt_log):
    """torchdata's StatefulDataLoader follows its worker processes (and their prefetching) in its state_dict."""
    pytest.importorskip("torchdata")
    _resume_from_each(tmp_path, iterable="stateful", stateful_loader=True, num_workers=2, n=16, max_epochs=2)
    assert "replaying" not in volt_log.text


def test_hugging_face_iterable_dataset(tmp_path, volt_log):
    """A `datasets` IterableDataset (two shards) in a DataLoader: its own state_dict() says where it stands."""
    pytest.importorskip("datasets")
    checkpoints = _resume_from_each(tmp_path, iterable="hf", n=16, max_epochs=2)
    assert "replaying" not in volt_log.text
    stream = torch.load(checkpoints[2], weights_only=True)["loops"]["fit_loop"]["stream"]  # after 3 of 4 batches
    assert stream["epoch"] == 0 and stream["examples_iterable"]["type"] == "RebatchedArrowExamplesIterable"


@pytest.mark.parametrize("iterable, workers, why", [
    (True, 0, "the training data (NoisyStream) has no state_dict()/load_state_dict()"),
    ("stateful", 2, "the training dataset (StatefulNoisyStream) has a state_dict(), but it runs in 2 DataLoader "
                    "worker processes whose progress this process cannot see (torchdata's StatefulDataLoader can)"),
])
def test_without_a_usable_state_the_stream_is_replayed_and_a_notice_says_why(tmp_path, volt_log, iterable, workers,
                                                                             why):
    cfg = dict(iterable=iterable, num_workers=workers, n=16, max_epochs=1)
    run_training.run(dict(root=str(tmp_path / "reference"), save_everywhere=True, **cfg))
    checkpoint = glob.glob(str(tmp_path / "reference" / "all" / "002-batch2-*.ckpt"))[0]  # 3 batches consumed
    _resume(tmp_path, checkpoint, **cfg)
    assert f"Resuming inside an epoch of iterable data: {why}; replaying 3 batches to reach the resume point." \
        in volt_log.text
