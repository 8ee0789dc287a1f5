"""A user's own strategy, subclassed from volt's as from Lightning's: `setup(trainer)` is called every stage,
`restore_checkpoint_after_setup` decides whether the checkpoint is read before or after it, and `root_device` may
be a read-only property of the subclass. Also: what a ddp_spawn/ddp_fork launch raises when a rank raises."""
import pytest
import torch
from torch.multiprocessing import ProcessRaisedException

import volt
from helpers import BoringModel, loader, trainer
from volt.distributed import RankFailedError
from volt.plugins import Precision, TorchCheckpointIO
from volt.strategies import DDPStrategy, SingleDeviceStrategy


def recording_strategy(read_after_setup: bool):
    class Recording(SingleDeviceStrategy):
        restore_checkpoint_after_setup = read_after_setup

        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.events = []

        def setup(self, trainer):
            assert self.lightning_module.layer.weight.device == torch.device("cpu")
            super().setup(trainer)
            self.events.append(("setup", trainer.state.fn))

        def load_checkpoint(self, checkpoint_path, weights_only=None):
            self.events.append(("load", str(checkpoint_path)))
            return super().load_checkpoint(checkpoint_path, weights_only)

    return Recording(device=torch.device("cpu"), precision_plugin=Precision(), checkpoint_io=TorchCheckpointIO())


@pytest.mark.parametrize("read_after_setup", [False, True])
def test_a_custom_strategy_is_set_up_every_stage_and_reads_the_checkpoint_before_or_after(tmp_path,
                                                                                         read_after_setup):
    assert SingleDeviceStrategy().restore_checkpoint_after_setup is False
    path = str(tmp_path / "model.ckpt")
    first = trainer(tmp_path, max_steps=2, limit_val_batches=0)
    first.fit(BoringModel(), loader())
    first.save_checkpoint(path)
    saved = first.lightning_module.layer.weight.detach().clone()

    strategy = recording_strategy(read_after_setup)
    model = BoringModel()
    resumed = trainer(tmp_path, strategy=strategy, max_steps=3, max_epochs=2, limit_val_batches=0, limit_test_batches=1,
                      limit_predict_batches=1)
    resumed.fit(model, loader(), ckpt_path=path)
    assert resumed.global_step == 3  # the checkpoint's 2 steps, then one more
    resumed.test(model, loader(), ckpt_path=path, verbose=False)
    assert torch.equal(model.layer.weight, saved)  # the checkpoint's weights, whichever way it was read
    resumed.predict(model, torch.utils.data.DataLoader(torch.zeros(2, 4)), ckpt_path=path)
    stages = ("fit", "test", "predict")
    per_stage = [[("setup", stage), ("load", path)] if read_after_setup else [("load", path), ("setup", stage)]
                 for stage in stages]
    assert strategy.events == [event for events in per_stage for event in events]


def test_a_strategy_subclass_may_define_root_device_as_a_read_only_property(tmp_path):
    class OnMyDevice(SingleDeviceStrategy):
        @property
        def root_device(self):
            return torch.device("cpu")

    class DDPOnMyDevice(DDPStrategy):
        def __init__(self, device, **kwargs):
            self.my_device = device
            super().__init__(**kwargs)

        @property
        def root_device(self):
            return self.my_device

    ddp = DDPOnMyDevice(torch.device("cuda", 3), process_group_backend="gloo")
    assert ddp.root_device == torch.device("cuda", 3) and ddp.process_group_backend == "gloo"
    model = BoringModel()
    trainer(tmp_path, strategy=OnMyDevice(), max_steps=1, limit_val_batches=0).fit(model, loader())
    assert model.layer.weight.device == torch.device("cpu") and model.trainer.global_step == 1


class FailingModel(BoringModel):  # at module level: ddp_spawn pickles it into the new process
    def training_step(self, batch, batch_idx):
        raise ValueError("planned failure in training_step")


# ddp_spawn, not ddp_fork: forking a test process whose other threads (compile workers, loggers) may hold locks can
# hang the child.
def test_a_rank_that_raises_under_a_spawning_launch_is_a_process_raised_exception(tmp_path):
    run = trainer(tmp_path, strategy="ddp_spawn", accelerator="cpu", devices=1, max_steps=1, limit_val_batches=0)
    with pytest.raises(ProcessRaisedException, match="planned failure in training_step") as raised:
        run.fit(FailingModel(), loader())
    assert isinstance(raised.value, RankFailedError)  # volt's own message: which rank failed, and its traceback
    assert "Rank 0 of 1" in str(raised.value) and raised.value.error_index == 0


def test_a_spawning_strategy_returns_no_predictions_and_refuses_to_keep_them(tmp_path):
    """As Lightning: only rank 0's predictions could come back, so none are kept by default and asking for them
    fails in the ranks (a ProcessRaisedException, as Lightning's users catch it)."""
    run = trainer(tmp_path, strategy="ddp_spawn", accelerator="cpu", devices=1)
    data = torch.utils.data.DataLoader(torch.zeros(2, 4))
    assert run.predict(BoringModel(), data) is None
    with pytest.raises(ProcessRaisedException, match="`return_predictions` should be set to `False`"):
        run.predict(BoringModel(), data, return_predictions=True)


def test_the_trainers_module_is_the_strategys(quiet_lightning):
    """`trainer.lightning_module` is what the strategy holds, as in Lightning: `trainer.strategy.connect(model)`
    attaches a model without a run (tests of `configure_optimizers` do that)."""
    for pl in (volt, quiet_lightning):
        trainer, model = pl.Trainer(logger=False), pl.LightningModule()
        assert trainer.lightning_module is None
        trainer.strategy.connect(model)
        assert trainer.lightning_module is model and trainer.strategy.model is model
