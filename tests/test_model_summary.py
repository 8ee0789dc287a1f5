"""Model summary: the table's text (compared with PyTorch Lightning 2.6.6 where it is installed), depths, sizes from
`example_input_array`, and the callbacks that print it."""
import io
import logging
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from volt.callbacks.model_summary import ModelSummary, RichModelSummary, get_human_readable_count, summarize


@pytest.fixture
def volt_logs(caplog, monkeypatch):
    """caplog for volt's logger, which does not propagate to the root logger by default."""
    monkeypatch.setattr(logging.getLogger("volt"), "propagate", True)
    with caplog.at_level(logging.INFO, logger="volt"):
        yield caplog


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder = nn.Linear(400, 200)
        self.head = nn.Sequential(nn.Linear(200, 3), nn.BatchNorm1d(3))
        self.head[1].eval()
        self.encoder.weight.requires_grad_(False)
        self.example_input_array = None

    def forward(self, x):
        return self.head(self.encoder(x))


EXPECTED_DEPTH_2 = """\
  | Name    | Type        | Params | Mode  | FLOPs | In sizes | Out sizes
-------------------------------------------------------------------------------
0 | encoder | Linear      | 80.2 K | train | 800 K | [5, 400] | [5, 200] 
1 | head    | Sequential  | 609    | train | 6.0 K | [5, 200] | [5, 3]   
2 | head.0  | Linear      | 603    | train | 6.0 K | [5, 200] | [5, 3]   
3 | head.1  | BatchNorm1d | 6      | eval  | 0     | [5, 3]   | [5, 3]   
-------------------------------------------------------------------------------
809       Trainable params
80.0 K    Non-trainable params
80.8 K    Total params
0.323     Total estimated model params size (MB)
3         Modules in train mode
1         Modules in eval mode
806 K     Total Flops"""


def test_table_with_example_input_matches_lightning_format():
    model = Net()
    model.example_input_array = torch.zeros(5, 400)
    assert str(summarize(model, max_depth=2)) == EXPECTED_DEPTH_2
    # the example pass leaves the modes (and the weights' grad flags) as they were
    assert model.training and not model.head[1].training and not model.encoder.weight.requires_grad


def test_depth_one_lists_children_without_sizes_when_no_example_input():
    text = str(summarize(Net()))
    lines = text.splitlines()
    assert lines[0].split() == ["|", "Name", "|", "Type", "|", "Params", "|", "Mode", "|", "FLOPs"]
    assert lines[2].split()[:3] == ["0", "|", "encoder"] and lines[3].split()[:3] == ["1", "|", "head"]
    assert "head.0" not in text and "In sizes" not in text
    assert lines[-1] == "0         Total Flops"


def test_all_depths_and_parameters_owned_by_the_model_itself():
    model = Net()
    model.scale = nn.Parameter(torch.ones(7))
    summary = summarize(model, max_depth=-1)
    assert summary.layer_names == ["encoder", "head", "head.0", "head.1"]
    assert summary.total_parameters == 80200 + 609 + 7
    data = dict(summary.summary_data())
    assert data["Name"][-1] == "other params" and data["Params"][-1] == "7  " and data["Type"][-1] == "n/a"


def test_same_text_as_lightning():
    pl = pytest.importorskip("pytorch_lightning")
    from pytorch_lightning.utilities.model_summary import summarize as pl_summarize

    class LitNet(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.encoder = nn.Linear(400, 200)
            self.head = nn.Sequential(nn.Linear(200, 3), nn.ReLU())

        def forward(self, x):
            return self.head(self.encoder(x))

    model = LitNet()
    for depth in (1, 2, -1):
        model.example_input_array = None
        assert str(summarize(model, max_depth=depth)) == str(pl_summarize(model, max_depth=depth))
        model.example_input_array = torch.zeros(2, 400)
        assert str(summarize(model, max_depth=depth)) == str(pl_summarize(model, max_depth=depth))


def test_model_size_follows_the_parameter_dtype():
    model = nn.Linear(1000, 1000).to(torch.float16)
    assert summarize(model).model_size == pytest.approx(1001000 * 2 / 1e6)


def test_example_input_as_tuple_and_dict():
    class TwoInputs(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(4, 2)

        def forward(self, x, y):
            return self.a(x) + y

    model = TwoInputs()
    model.example_input_array = (torch.zeros(3, 4), torch.zeros(3, 2))
    assert summarize(model).in_sizes == [[3, 4]]
    model.example_input_array = {"x": torch.zeros(6, 4), "y": torch.zeros(6, 2)}
    assert summarize(model).out_sizes == [[6, 2]]


def test_human_readable_counts():
    assert get_human_readable_count(0) == "0  "
    assert get_human_readable_count(123) == "123  "
    assert get_human_readable_count(1234) == "1.2 K"
    assert get_human_readable_count(2_000_000) == "2.0 M"
    assert get_human_readable_count(int(4e14)) == "400 T"
    assert get_human_readable_count(int(5e15)) == "5,000 T"


def test_bad_max_depth():
    with pytest.raises(ValueError, match=r"max_depth=-2.*-1 \(all layers\)"):
        summarize(Net(), max_depth=-2)
    with pytest.raises(ValueError, match=r"ModelSummary\(max_depth='1'\)"):
        ModelSummary(max_depth="1")


def test_callback_logs_the_table_on_rank_zero_only(volt_logs):
    ModelSummary(max_depth=2).on_fit_start(SimpleNamespace(is_global_zero=True), Net())
    assert "head.0" in volt_logs.text and "Total params" in volt_logs.text
    volt_logs.clear()
    ModelSummary().on_fit_start(SimpleNamespace(is_global_zero=False), Net())
    ModelSummary(max_depth=0).on_fit_start(SimpleNamespace(is_global_zero=True), Net())
    assert volt_logs.text == ""


def test_rich_summary_prints_a_table(monkeypatch):
    import rich

    console = rich.console.Console(file=io.StringIO(), width=150)
    monkeypatch.setattr(rich, "get_console", lambda: console)
    RichModelSummary().on_fit_start(SimpleNamespace(is_global_zero=True), Net())
    out = console.file.getvalue()
    assert "encoder" in out and "Sequential" in out and "Trainable params: 809" in out


def test_rich_summary_without_rich_gives_install_hint(monkeypatch):
    from volt.callbacks import model_summary

    monkeypatch.setattr(model_summary.importlib.util, "find_spec", lambda name, *args: None)
    with pytest.raises(ModuleNotFoundError, match="pip install rich"):
        RichModelSummary()


# ------------------------------------------------------------------------------------------ end to end


def test_fit_logs_the_summary_by_default_without_rich(tmp_path, volt_logs, monkeypatch):
    import importlib.util

    from volt.trainer import trainer as trainer_module

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(trainer_module.importlib.util, "find_spec",
                        lambda name, *args: None if name == "rich" else find_spec(name, *args))
    import volt
    from torch.utils.data import DataLoader, TensorDataset

    class Model(volt.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = Net()
            self.example_input_array = torch.zeros(5, 400)

        def forward(self, x):
            return self.net(x)

        def training_step(self, batch, batch_idx):
            return self(batch[0]).sum()

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    trainer = volt.Trainer(max_steps=1, default_root_dir=str(tmp_path), logger=False, enable_checkpointing=False,
                           enable_progress_bar=False)
    assert any(type(cb) is ModelSummary for cb in trainer.callbacks)
    trainer.fit(Model(), DataLoader(TensorDataset(torch.randn(4, 400)), batch_size=2))
    assert "0 | net  | Net  | 80.8 K | train | 806 K | [5, 400] | [5, 3]" in volt_logs.text
    assert "80.8 K    Total params" in volt_logs.text
