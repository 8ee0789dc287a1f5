"""torch.compile: a module compiled by the user (whole or a submodule) or by `Trainer(compile=...)` trains,
validates, checkpoints with plain keys and resumes, compiling once per input shape.

Compiling is slow, so the models are tiny and each test fits once or twice. The main test uses inductor (the
backend users get); the others use "aot_eager", which goes through the same dynamo tracing and AOTAutograd graphs
without generating C++ code: what they check (what is compiled, how often, checkpoint keys) does not depend on the
backend.
"""
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import volt
from volt.callbacks import ModelCheckpoint
from volt.utilities.compile import from_compiled, to_uncompiled

pytestmark = pytest.mark.compile
dynamo = pytest.importorskip("torch._dynamo")
from torch._dynamo.utils import counters  # noqa: E402


def data(n: int = 20) -> DataLoader:
    """Batches of 8, 8 and 4: two input shapes."""
    generator = torch.Generator().manual_seed(0)
    return DataLoader(TensorDataset(torch.randn(n, 4, generator=generator), torch.randn(n, 1, generator=generator)),
                      batch_size=8)


class Regressor(volt.LightningModule):
    def __init__(self, compile_net: bool = False):
        super().__init__()
        torch.manual_seed(0)
        self.net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1))
        if compile_net:
            self.net = torch.compile(self.net, backend="aot_eager")

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = torch.nn.functional.mse_loss(self(x), y)
        self.log("train_loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_loss", torch.nn.functional.mse_loss(self(x), y))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.05)


class TrainOnly(Regressor):
    validation_step = volt.LightningModule.validation_step  # not defined: the counts are training_step's alone


class GraphCount(volt.Callback):
    """The number of graphs dynamo has compiled so far, at the end of each training epoch."""

    def __init__(self):
        self.per_epoch = []

    def on_train_epoch_end(self, trainer, module):
        self.per_epoch.append(counters["stats"]["unique_graphs"])


def trainer(tmp_path, **kwargs) -> volt.Trainer:
    options = dict(default_root_dir=tmp_path, logger=False, enable_progress_bar=False, enable_model_summary=False,
                   max_epochs=2)
    options.update(kwargs)
    return volt.Trainer(**options)


@pytest.fixture(autouse=True)
def fresh_dynamo():
    """Each test counts its own compiles: dynamo's caches and counters start empty."""
    dynamo.reset()
    counters.clear()
    yield
    dynamo.reset()


def weights(module) -> dict:
    return {k: v.clone() for k, v in module.state_dict().items()}


def test_compiled_module_trains_checkpoints_and_resumes_with_inductor(tmp_path, quiet_lightning):
    count = GraphCount()
    uninterrupted = Regressor()
    trainer(tmp_path / "a", max_epochs=3, callbacks=[count], enable_checkpointing=False).fit(
        torch.compile(uninterrupted), data(), data())
    # training_step and validation_step: one graph for batches of 8, one (dynamic) for the smaller last batch;
    # nothing more after the first epoch, so no step recompiles
    assert count.per_epoch == [4, 4, 4]
    assert "training_step" in vars(uninterrupted)

    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    first = Regressor()
    trainer(tmp_path / "b", max_epochs=1, callbacks=[checkpoint]).fit(torch.compile(first), data(), data())
    state = torch.load(checkpoint.last_model_path, weights_only=True)
    assert list(state["state_dict"]) == ["net.0.weight", "net.0.bias", "net.2.weight", "net.2.bias"]

    resumed = Regressor()
    trainer(tmp_path / "b", max_epochs=3, enable_checkpointing=False).fit(
        torch.compile(resumed), data(), data(), ckpt_path=checkpoint.last_model_path)
    for name, value in weights(uninterrupted).items():
        assert torch.equal(resumed.state_dict()[name], value), name
    assert counters["stats"]["unique_graphs"] == 4  # new instances of the same class reuse the graphs

    # the checkpoint loads into the uncompiled model, in volt and in Lightning
    plain = Regressor.load_from_checkpoint(checkpoint.last_model_path)
    assert "training_step" not in vars(plain)
    x = torch.randn(3, 4)
    assert torch.allclose(plain(x), first(x))

    class LightningRegressor(quiet_lightning.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1))

    theirs = LightningRegressor.load_from_checkpoint(checkpoint.last_model_path, weights_only=True)
    assert torch.allclose(theirs.net(x), first(x))


def test_compiled_submodule_checkpoint_has_plain_keys_and_loads_either_way(tmp_path):
    module = Regressor(compile_net=True)
    assert "net._orig_mod.0.weight" in module.state_dict()
    fit = trainer(tmp_path, max_epochs=1, enable_checkpointing=False)
    fit.fit(module, data(), data())
    assert counters["stats"]["unique_graphs"] > 0
    path = tmp_path / "sub.ckpt"
    fit.save_checkpoint(path)
    saved = torch.load(path, weights_only=True)["state_dict"]
    assert list(saved) == ["net.0.weight", "net.0.bias", "net.2.weight", "net.2.bias"]

    # plain keys into a model that compiles its submodule (resume), and into one that does not
    again = Regressor(compile_net=True)
    trainer(tmp_path, max_epochs=2, enable_checkpointing=False).fit(again, data(), data(), ckpt_path=path)
    assert again.current_epoch == 2
    plain = Regressor.load_from_checkpoint(path)
    assert torch.equal(plain.net[0].weight, module.net._orig_mod[0].weight)

    # a checkpoint with `_orig_mod.` keys (as Lightning writes for a compiled submodule) loads into a plain model
    prefixed = torch.load(path, weights_only=True)
    prefixed["state_dict"] = {f"net._orig_mod.{k[len('net.'):]}": v for k, v in saved.items()}
    torch.save(prefixed, tmp_path / "prefixed.ckpt")
    assert torch.equal(Regressor.load_from_checkpoint(tmp_path / "prefixed.ckpt").net[2].bias, module.net._orig_mod[2].bias)


@pytest.mark.parametrize("dynamic, expected", [(None, 2), (False, 2), (True, 1)])
def test_trainer_compile_option_compiles_once_per_shape(tmp_path, dynamic, expected):
    """Batches of 8 and 4: default and dynamic=False compile twice (the second graph dynamic resp. static for 4),
    dynamic=True compiles one graph for both sizes."""
    module = TrainOnly()
    options = {"backend": "aot_eager"} if dynamic is None else {"backend": "aot_eager", "dynamic": dynamic}
    count = GraphCount()
    trainer(tmp_path, callbacks=[count], enable_checkpointing=False, compile=options).fit(module, data())
    assert count.per_epoch == [expected, expected]
    assert "training_step" in vars(module) and "forward" in vars(module)
    assert "validation_step" not in vars(module)  # steps the class does not define stay undefined


def test_compile_arguments_are_checked():
    with pytest.raises(TypeError, match=r"\['modes'\] are not `torch.compile` arguments"):
        volt.Trainer(compile={"modes": "max-autotune"})
    with pytest.raises(TypeError, match="pass True, False, or a dict"):
        volt.Trainer(compile="yes")
    with pytest.raises(ValueError, match="choose one"):
        volt.Trainer(compile=True, logger=False).fit(torch.compile(Regressor()), data())


def test_from_compiled_and_to_uncompiled():
    """Lightning's helpers: the module inside torch.compile with its steps compiled, and back."""
    module = Regressor()
    assert from_compiled(torch.compile(module, backend="aot_eager")) is module
    assert {"forward", "training_step", "validation_step", "log", "log_dict"} <= set(vars(module))
    assert "test_step" not in vars(module)  # not defined by the class: stays undefined
    assert to_uncompiled(module) is module
    assert not {"forward", "training_step", "log"} & set(vars(module))
    with pytest.raises(ValueError, match="expects a compiled LightningModule, got an uncompiled Regressor"):
        to_uncompiled(module)
    with pytest.raises(ValueError, match="expects the result of `torch.compile"):
        from_compiled(module)
    with pytest.raises(ValueError, match="got a compiled Linear"):
        from_compiled(torch.compile(torch.nn.Linear(2, 2)))
