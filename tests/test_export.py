"""LightningModule.to_onnx (run back with onnxruntime) and to_torchscript (script and trace, saved and loaded)."""
import sys

import pytest
import torch
from torch import nn

import volt
from helpers import loader, trainer

# torch 2.10+ deprecates TorchScript (torch.jit.*) and says so on every call; to_torchscript still has to work.
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.*` is deprecated:DeprecationWarning")


class Net(volt.LightningModule):
    """Batch norm and dropout behave differently in train mode: outputs only match if export ran in eval mode."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(4, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.5), nn.Linear(16, 3))
        self.example_input_array = torch.randn(8, 4)

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return (self(x)[:, :1] - y).pow(2).mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


class TwoInputs(volt.LightningModule):
    """Takes a uint8 image and a scale; the batch-transfer hook turns the image into floats, as for batches."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(6, 2)

    def forward(self, image, scale):
        return self.linear(image.flatten(1)) * scale

    def on_before_batch_transfer(self, batch, dataloader_idx):
        image, scale = batch
        return image.float() / 255, scale


def _trained_net(tmp_path):
    """A Net after a short fit, so its batch-norm statistics are not the initial ones; left in train mode."""
    model = Net()
    trainer(tmp_path, max_steps=3).fit(model, loader(n=8, batch_size=4))
    assert model.training
    return model


def _reference(model, *inputs):
    training = model.training
    model.eval()
    with torch.no_grad():
        output = model(*inputs)
    model.train(training)
    return output


def _run_onnx(path, *inputs):
    onnxruntime = pytest.importorskip("onnxruntime")
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feed = {arg.name: value.numpy() for arg, value in zip(session.get_inputs(), inputs)}
    return torch.from_numpy(session.run(None, feed)[0])


def test_to_onnx_runs_in_onnxruntime_like_torch(tmp_path):
    pytest.importorskip("onnxscript")
    model = _trained_net(tmp_path)
    path = tmp_path / "net.onnx"
    program = model.to_onnx(path, dynamic_shapes=({0: torch.export.Dim("batch")},))  # example_input_array
    assert model.training  # its mode is given back
    assert type(program).__name__ == "ONNXProgram"
    x = torch.randn(5, 4)  # another batch size than the sample's
    torch.testing.assert_close(_run_onnx(path, x), _reference(model, x), rtol=1e-5, atol=1e-5)


def test_to_onnx_with_an_input_sample_of_several_tensors_through_the_transfer_hooks(tmp_path):
    pytest.importorskip("onnxscript")
    model = TwoInputs()
    image, scale = torch.randint(0, 256, (2, 2, 3), dtype=torch.uint8), torch.tensor(0.5)
    model.to_onnx(tmp_path / "two.onnx", (image, scale))
    # the exported graph takes what the hook produced: float images
    expected = _reference(model, image.float() / 255, scale)
    torch.testing.assert_close(_run_onnx(tmp_path / "two.onnx", image.float() / 255, scale), expected)


def test_to_onnx_needs_a_sample(tmp_path):
    model = TwoInputs()
    with pytest.raises(ValueError, match=r"`TwoInputs.to_onnx\(\)` needs an input to run the model on. Could not "
                                         r"export to ONNX since neither .* Pass `input_sample`, or set "
                                         r"`self.example_input_array`"):
        model.to_onnx(tmp_path / "x.onnx")


@pytest.mark.parametrize("kwargs, missing", [({}, "onnx and onnxscript, which are"),
                                             ({"dynamo": False}, "onnx, which is")])
def test_to_onnx_names_the_missing_packages(tmp_path, monkeypatch, kwargs, missing):
    monkeypatch.setitem(sys.modules, "onnx", None)  # find_spec reports a module set to None as not installed
    monkeypatch.setitem(sys.modules, "onnxscript", None)
    with pytest.raises(ModuleNotFoundError, match=rf"Net.to_onnx\(\) needs {missing} not installed: `pip install"):
        Net().to_onnx(tmp_path / "x.onnx", **kwargs)


@pytest.mark.parametrize("method", ["script", "trace"])
def test_to_torchscript_saved_and_loaded_gives_the_same_outputs(tmp_path, method):
    model = _trained_net(tmp_path)  # attached to a Trainer, in train mode
    compiled = model.to_torchscript(tmp_path / "net.pt", method=method)
    assert model.training and not compiled.training
    loaded = torch.jit.load(str(tmp_path / "net.pt"))
    x = torch.randn(6, 4)
    torch.testing.assert_close(loaded(x), _reference(model, x))
    torch.testing.assert_close(compiled(x), _reference(model, x))


def test_to_torchscript_of_a_module_without_a_trainer(tmp_path):
    model = TwoInputs()
    image, scale = torch.randint(0, 256, (2, 2, 3), dtype=torch.uint8), torch.tensor(2.0)
    scripted = model.to_torchscript()
    traced = model.to_torchscript(method="trace", example_inputs=(image, scale))
    floats = image.float() / 255
    torch.testing.assert_close(scripted(floats, scale), _reference(model, floats, scale))
    torch.testing.assert_close(traced(floats, scale), _reference(model, floats, scale))
    with pytest.raises(RuntimeError, match="not attached to a `Trainer`"):
        model.trainer  # exporting left no trace on the module


def test_to_torchscript_bad_arguments():
    with pytest.raises(ValueError, match=r"to_torchscript\(method='compile'\): the method only supports 'script'"):
        Net().to_torchscript(method="compile")
    with pytest.raises(ValueError, match=r"TwoInputs.to_torchscript\(method='trace'\)` needs an input .* Pass"
                                         r" `example_inputs`"):
        TwoInputs().to_torchscript(method="trace")


def test_to_torchscript_warns_it_is_deprecated_as_lightning(quiet_lightning):
    """Lightning 2.6.6 deprecates `to_torchscript` (TorchScript is deprecated in PyTorch); volt warns the same way."""
    import warnings

    class LightningNet(quiet_lightning.LightningModule):
        def __init__(self):
            super().__init__()
            self.layer = nn.Linear(4, 1)

        def forward(self, x):
            return self.layer(x)

    for model in (Net(), LightningNet()):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            model.to_torchscript()
        deprecations = [w for w in caught if issubclass(w.category, DeprecationWarning)
                        and "to_torchscript" in str(w.message)]
        assert len(deprecations) == 1
        assert "has been deprecated in v2.7 and will be removed in v2.8" in str(deprecations[0].message)
        assert deprecations[0].category.__name__ == "LightningDeprecationWarning"
