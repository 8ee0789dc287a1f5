"""Hook order: every callback and LightningModule hook, recorded through real runs and compared with the order
PyTorch Lightning 2.6.6 produces for the same run (the EXPECTED lists below were recorded from it; the
`lightning`-marked test re-checks them against Lightning when it is installed).

An entry is "Callback.<hook>" or "<module hook>", with "(stage)" for setup/teardown and "[batch_idx]" for hooks
that receive a batch index.
"""
import inspect

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import volt

CALLBACK_HOOKS = [name for name in vars(volt.Callback) if name.startswith("on_")] + [
    "setup", "teardown", "state_dict", "load_state_dict"]

MODULE_HOOKS = [
    "configure_callbacks", "prepare_data", "setup", "configure_model", "configure_optimizers", "teardown",
    "train_dataloader", "val_dataloader", "test_dataloader", "predict_dataloader",
    "on_fit_start", "on_fit_end", "on_train_start", "on_train_end", "on_train_epoch_start", "on_train_epoch_end",
    "on_train_batch_start", "on_train_batch_end", "training_step",
    "on_before_batch_transfer", "transfer_batch_to_device", "on_after_batch_transfer",
    "optimizer_step", "optimizer_zero_grad", "on_before_zero_grad", "on_before_backward", "backward",
    "on_after_backward", "on_before_optimizer_step", "configure_gradient_clipping", "lr_scheduler_step",
    "on_validation_model_zero_grad", "on_validation_model_eval", "on_validation_model_train",
    "on_validation_start", "on_validation_end", "on_validation_epoch_start", "on_validation_epoch_end",
    "on_validation_batch_start", "on_validation_batch_end", "validation_step",
    "on_test_model_eval", "on_test_model_train", "on_test_start", "on_test_end", "on_test_epoch_start",
    "on_test_epoch_end", "on_test_batch_start", "on_test_batch_end", "test_step",
    "on_predict_model_eval", "on_predict_start", "on_predict_end", "on_predict_epoch_start", "on_predict_epoch_end",
    "on_predict_batch_start", "on_predict_batch_end", "predict_step",
    "on_save_checkpoint", "on_load_checkpoint",
]


def _describe(prefix, name, base_method, args, kwargs):
    bound = inspect.signature(base_method).bind(None, *args, **kwargs).arguments
    if name in ("setup", "teardown"):
        stage = bound["stage"]
        return f"{prefix}{name}({getattr(stage, 'value', stage)})"  # Lightning passes a str enum
    if "batch_idx" in bound:
        return f"{prefix}{name}[{bound['batch_idx']}]"
    return prefix + name


def _recording_callback_hook(name, base):
    def hook(self, *args, **kwargs):
        self.calls.append(_describe("Callback.", name, getattr(base, name), args, kwargs))
        return {"recorded": True} if name == "state_dict" else None

    return hook


def _recording_module_hook(name, base):
    def hook(self, *args, **kwargs):
        self.calls.append(_describe("", name, getattr(base, name), args, kwargs))
        return getattr(self, "do_" + name, getattr(super(type(self), self), name))(*args, **kwargs)

    return hook


def _classes(pl):
    """A recording Callback and LightningModule built on `pl` (volt, or Lightning for the oracle test)."""

    class Recorder(pl.Callback):
        def __init__(self, calls):
            self.calls = calls

    for name in CALLBACK_HOOKS:
        setattr(Recorder, name, _recording_callback_hook(name, pl.Callback))

    class Model(pl.LightningModule):
        """Every hook records itself, then does its default work; the `do_<hook>` methods give the real steps."""

        def __init__(self, calls, manual=False, skip_batches=()):
            super().__init__()
            self.calls = calls
            self.layer = torch.nn.Linear(4, 1)
            self.automatic_optimization = not manual
            self.skip_batches = skip_batches

        def forward(self, x):
            return self.layer(x)

        def do_training_step(self, batch, batch_idx):
            loss = self(batch[0]).pow(2).mean()
            if not self.automatic_optimization:
                optimizer = self.optimizers()
                optimizer.zero_grad()
                self.manual_backward(loss)
                optimizer.step()
                return loss.detach()
            return None if batch_idx in self.skip_batches else loss

        def do_validation_step(self, batch, batch_idx):
            self.log("v", self(batch[0]).mean())

        def do_test_step(self, batch, batch_idx):
            self.log("t", self(batch[0]).mean())

        def do_predict_step(self, batch, batch_idx):
            return self(batch[0])

        def do_configure_optimizers(self):
            optimizer = torch.optim.SGD(self.parameters(), lr=0.1)
            return {"optimizer": optimizer, "lr_scheduler": torch.optim.lr_scheduler.StepLR(optimizer, 1)}

        def do_configure_callbacks(self):
            return []

        def do_data(self):
            return DataLoader(TensorDataset(torch.randn(8, 4)), batch_size=2)

        do_train_dataloader = do_val_dataloader = do_test_dataloader = do_predict_dataloader = do_data

    for name in MODULE_HOOKS:
        setattr(Model, name, _recording_module_hook(name, pl.LightningModule))
    return Recorder, Model


def _trainer(pl, tmp_path, calls, Recorder, **kwargs):
    options = dict(max_epochs=1, limit_train_batches=2, limit_val_batches=1, limit_test_batches=1,
                   limit_predict_batches=1, enable_progress_bar=False, enable_model_summary=False, logger=False,
                   default_root_dir=tmp_path)
    options.update(kwargs)
    return pl.Trainer(callbacks=[Recorder(calls), *options.pop("callbacks", [])], **options)


def record(pl, scenario, tmp_path):
    """Run `scenario` with the recording classes of `pl`; return the calls."""
    Recorder, Model = _classes(pl)
    calls = []
    model = Model(calls, manual=scenario == "manual", skip_batches=(0,) if scenario == "none_loss" else ())
    if scenario == "fit":
        _trainer(pl, tmp_path, calls, Recorder).fit(model)
    elif scenario == "val_check_interval":
        _trainer(pl, tmp_path, calls, Recorder, val_check_interval=0.5, num_sanity_val_steps=0).fit(model)
    elif scenario in ("validate", "test", "predict"):
        getattr(_trainer(pl, tmp_path, calls, Recorder), scenario)(model)
    elif scenario == "resume":
        first = _trainer(pl, tmp_path, [], Recorder, limit_val_batches=0)
        first.fit(Model([]))
        first.save_checkpoint(tmp_path / "resume.ckpt")
        _trainer(pl, tmp_path, calls, Recorder, max_epochs=2).fit(
            model, ckpt_path=tmp_path / "resume.ckpt")
    elif scenario == "resume_mid_epoch":  # a checkpoint written after the first of the epoch's two batches
        first = _trainer(pl, tmp_path, [], Recorder, limit_val_batches=0, callbacks=[pl.callbacks.ModelCheckpoint(
            tmp_path, filename="{step}", every_n_train_steps=1, save_top_k=-1)])
        first.fit(Model([]))
        _trainer(pl, tmp_path, calls, Recorder, limit_val_batches=0).fit(model, ckpt_path=tmp_path / "step=1.ckpt")
    elif scenario == "accumulate":
        _trainer(pl, tmp_path, calls, Recorder, accumulate_grad_batches=2, limit_train_batches=3,
                 limit_val_batches=0, enable_checkpointing=False).fit(model)
    elif scenario in ("manual", "none_loss"):
        _trainer(pl, tmp_path, calls, Recorder, limit_val_batches=0, enable_checkpointing=False).fit(model)
    return calls


# ------------------------------------------------------------------------------ the expected order, block by block


def both(name):
    """A hook called on callbacks first, then on the module."""
    return [f"Callback.{name}", name]


TRANSFER = ["on_before_batch_transfer", "transfer_batch_to_device", "on_after_batch_transfer"]
SAVE_CHECKPOINT = ["Callback.state_dict", "Callback.on_save_checkpoint", "on_save_checkpoint"]
LOAD_CHECKPOINT = ["on_load_checkpoint", "Callback.on_load_checkpoint", "Callback.load_state_dict"]
FIT_END = both("on_train_end") + both("on_fit_end") + both("teardown(fit)")


def fit_start(resume=False):
    return ["configure_callbacks", "prepare_data", *both("setup(fit)"), "configure_model",
            *(LOAD_CHECKPOINT if resume else []), "configure_optimizers", *both("on_fit_start")]


def eval_setup(stage, loader):
    return ["configure_callbacks", "prepare_data", *both(f"setup({stage})"), "configure_model", loader]


def eval_loop(hook, step, in_fit=False, save_checkpoint=False):
    """One run of the validation/test/predict loop over one batch."""
    calls = ["on_validation_model_zero_grad"] if in_fit else []
    calls += [f"on_{hook}_model_eval", *both(f"on_{hook}_start"), *both(f"on_{hook}_epoch_start")]
    calls += TRANSFER + both(f"on_{hook}_batch_start[0]") + [step] + both(f"on_{hook}_batch_end[0]")
    calls += both(f"on_{hook}_epoch_end") + [f"Callback.on_{hook}_end"]
    calls += (SAVE_CHECKPOINT if save_checkpoint else []) + [f"on_{hook}_end"]
    return calls + ([f"on_{hook}_model_train"] if hook != "predict" else [])


def validation(in_fit=True, save_checkpoint=False):
    return eval_loop("validation", "validation_step", in_fit, save_checkpoint)


SANITY_CHECK = ["Callback.on_sanity_check_start", "val_dataloader", *validation(in_fit=False),
                "Callback.on_sanity_check_end"]


def train_batch(i, step=True, zero_grad=True, backward=True, scheduler=False):
    """One automatic-optimization batch. The closure (training_step, zero_grad, backward) runs inside
    optimizer_step; an accumulating batch runs the closure alone, with no optimizer_step."""
    calls = TRANSFER + both(f"on_train_batch_start[{i}]") + ([f"optimizer_step[{i}]"] if step else [])
    calls += ["training_step"]
    calls += both("on_before_zero_grad") + [f"optimizer_zero_grad[{i}]"] if zero_grad else []
    calls += both("on_before_backward") + ["backward"] + both("on_after_backward") if backward else []
    calls += both("on_before_optimizer_step") + ["configure_gradient_clipping"] if step else []
    calls += ["lr_scheduler_step"] if scheduler else []
    return calls + both(f"on_train_batch_end[{i}]")


def manual_batch(i):
    """`training_step` steps its optimizer itself: no optimizer_step/zero_grad hooks, no scheduler stepping."""
    return (TRANSFER + both(f"on_train_batch_start[{i}]") + ["training_step"] + both("on_before_backward")
            + ["backward"] + both("on_after_backward") + both("on_before_optimizer_step")
            + both(f"on_train_batch_end[{i}]"))


TRAIN_START = ["train_dataloader", *both("on_train_start"), *both("on_train_epoch_start")]
TRAIN_EPOCH_END = both("on_train_epoch_end")

EXPECTED = {
    "fit": fit_start() + SANITY_CHECK + TRAIN_START + train_batch(0) + train_batch(1, scheduler=True)
    + validation() + TRAIN_EPOCH_END + SAVE_CHECKPOINT + FIT_END,
    # the val loaders are loaded before on_train_start when validation runs in the first epoch
    "val_check_interval": fit_start() + ["train_dataloader", "val_dataloader", *TRAIN_START[1:]] + train_batch(0)
    + validation(save_checkpoint=True) + train_batch(1, scheduler=True) + validation(save_checkpoint=True)
    + TRAIN_EPOCH_END + FIT_END,
    "validate": eval_setup("validate", "val_dataloader") + validation(in_fit=False) + both("teardown(validate)"),
    "test": eval_setup("test", "test_dataloader") + eval_loop("test", "test_step") + both("teardown(test)"),
    "predict": eval_setup("predict", "predict_dataloader") + eval_loop("predict", "predict_step")
    + both("teardown(predict)"),
    # the checkpoint was taken at the end of epoch 0: the run continues with epoch 1
    "resume": fit_start(resume=True) + SANITY_CHECK + TRAIN_START + train_batch(0) + train_batch(1, scheduler=True)
    + validation() + TRAIN_EPOCH_END + SAVE_CHECKPOINT + FIT_END,
    # resumed inside epoch 0: no on_train_epoch_start for it, the run goes on with batch 1
    "resume_mid_epoch": fit_start(resume=True) + ["train_dataloader", *both("on_train_start")]
    + train_batch(1, scheduler=True) + TRAIN_EPOCH_END + SAVE_CHECKPOINT + FIT_END,
    # accumulate_grad_batches=2 over 3 batches: windows [0, 1] and [2]
    "accumulate": fit_start() + TRAIN_START + train_batch(0, step=False) + train_batch(1, zero_grad=False)
    + train_batch(2, scheduler=True) + TRAIN_EPOCH_END + FIT_END,
    "manual": fit_start() + TRAIN_START + manual_batch(0) + manual_batch(1) + TRAIN_EPOCH_END + FIT_END,
    # training_step returns None for batch 0: no backward, but the optimizer step hooks still run
    "none_loss": fit_start() + TRAIN_START + train_batch(0, backward=False) + train_batch(1, scheduler=True)
    + TRAIN_EPOCH_END + FIT_END,
}


@pytest.mark.parametrize("scenario", sorted(EXPECTED))
def test_hook_order_matches_lightning(scenario, tmp_path):
    assert record(volt, scenario, tmp_path) == EXPECTED[scenario]


@pytest.mark.lightning
@pytest.mark.parametrize("scenario", sorted(EXPECTED))
def test_expected_order_is_lightnings(scenario, tmp_path):
    """The EXPECTED lists are what Lightning 2.6.6 itself does."""
    pl = pytest.importorskip("pytorch_lightning")
    assert record(pl, scenario, tmp_path) == EXPECTED[scenario]


def test_accumulation_steps_once_per_window_and_zeroes_at_its_start(tmp_path):
    calls = record(volt, "accumulate", tmp_path)
    assert [c for c in calls if c.startswith("optimizer_")] == [
        "optimizer_zero_grad[0]", "optimizer_step[1]", "optimizer_step[2]", "optimizer_zero_grad[2]"]
    assert calls.count("backward") == 3
