"""ModelPruning through `Trainer.fit`: how much is pruned, permanent weights, plain checkpoints, and resuming from
them with the masks."""
import pytest
import torch

from volt.callbacks import ModelCheckpoint, ModelPruning
from volt.utilities.exceptions import MisconfigurationException

from helpers import BoringModel, trainer


class Wide(BoringModel):
    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1))


def zeros(model):
    """Zero weights of the Linear layers (while pruned, `weight` is `weight_orig * weight_mask`)."""
    return sum(int((m.weight == 0).sum()) for m in model.modules() if isinstance(m, torch.nn.Linear))


def test_global_l1_pruning_made_permanent(tmp_path):
    """Half of both layers' weights, pruned globally after each epoch: 20 of 40 after the first, 30 after the
    second (half of the rest). At the end the pruning is permanent: plain `weight` parameters, no masks."""
    model = Wide()
    pruning = ModelPruning("l1_unstructured", parameter_names=["weight"], amount=0.5)
    counts = []
    fit = trainer(tmp_path, max_epochs=2, enable_checkpointing=True,
                  callbacks=[pruning, ModelCheckpoint(tmp_path, save_top_k=-1)])
    pruning.on_train_epoch_start = lambda t, m: counts.append(zeros(m))
    fit.fit(model)
    assert counts == [0, 20] and zeros(model) == 30
    assert sorted(model.state_dict()) == ["layer.0.bias", "layer.0.weight", "layer.2.bias", "layer.2.weight"]
    saved = torch.load(tmp_path / "epoch=0-step=4.ckpt", weights_only=True)
    assert sorted(saved["state_dict"]) == sorted(model.state_dict())  # permanent in the checkpoint as well
    state = saved["state_dict"]
    assert int((state["layer.0.weight"] == 0).sum() + (state["layer.2.weight"] == 0).sum()) == 20
    # one state key per method and amount, so that several pruning callbacks combine (as in Lightning)
    assert pruning.state_key == "ModelPruning{'pruning_fn': 'l1_unstructured', 'amount': 0.5}"
    masks = saved["callbacks"][pruning.state_key]["masks"]
    assert sorted(masks) == ["layer.0.weight", "layer.2.weight"]
    assert int(sum((m == 0).sum() for m in masks.values())) == 20


@pytest.mark.filterwarnings("ignore:The dirpath has changed")
def test_resume_keeps_the_masks(tmp_path):
    """Resumed from the first epoch's (permanent) checkpoint, the second pruning prunes half of what survived, as in
    the run that was not interrupted: the same weights and momentum buffers. (Without the masks it would prune
    the zeros again; applied before `configure_optimizers`, the masks would reorder the optimizer's parameters.)"""
    class Momentum(Wide):
        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1, momentum=0.9)

    def run(root, ckpt_path=None):
        torch.manual_seed(0)
        model = Momentum()
        pruning = ModelPruning("l1_unstructured", parameter_names=["weight"], amount=0.5,
                               use_lottery_ticket_hypothesis=False)
        fit = trainer(root, max_epochs=2, enable_checkpointing=True,
                      callbacks=[pruning, ModelCheckpoint(root, save_top_k=-1)])
        fit.fit(model, ckpt_path=ckpt_path)
        return model, fit.optimizers[0].state_dict()

    full, full_optimizer = run(tmp_path / "full")
    resumed, resumed_optimizer = run(tmp_path / "resumed", ckpt_path=tmp_path / "full" / "epoch=0-step=4.ckpt")
    assert zeros(resumed) == 30
    for (name, a), b in zip(full.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name
    for i, state in full_optimizer["state"].items():
        assert torch.equal(state["momentum_buffer"], resumed_optimizer["state"][i]["momentum_buffer"]), i


def test_local_structured_pruning_with_a_schedule(tmp_path):
    """`ln_structured` on the first layer only (whole rows), every epoch from the second, 2 rows at a time."""
    model = Wide()
    pruning = ModelPruning("ln_structured", parameters_to_prune=[(model.layer[0], "weight")],
                           use_global_unstructured=False, pruning_dim=0, pruning_norm=2, amount=2,
                           apply_pruning=lambda epoch: epoch >= 1, make_pruning_permanent=False)
    trainer(tmp_path, max_epochs=3, callbacks=[pruning]).fit(model)
    mask = model.layer[0].weight_mask
    assert int((mask.sum(dim=1) == 0).sum()) == 4 and int(mask.sum()) == 4 * 4


def test_verbose_logs_the_sparsity(tmp_path, caplog):
    import logging

    with caplog.at_level(logging.INFO, logger="volt.callbacks.pruning"):
        trainer(tmp_path, max_epochs=1, callbacks=[ModelPruning("random_unstructured", amount=0.25, verbose=2)]).fit(
            Wide())
    assert "Applied `RandomUnstructured`. Pruned: 0/49 (0.00%) -> 12/49 (24.49%)" in caplog.text
    assert "`Linear(in_features=4, out_features=8, bias=True).weight` with amount=0.25" in caplog.text


@pytest.mark.parametrize("kwargs, match", [
    (dict(pruning_fn="l2_unstructured"), "isn't available in PyTorch's built-in functions"),
    (dict(pruning_fn="ln_structured", use_global_unstructured=False), "the `pruning_dim` should be provided"),
    (dict(pruning_fn="ln_structured", use_global_unstructured=False, pruning_dim=0), "`pruning_norm` should be"),
    (dict(pruning_fn="random_structured", pruning_dim=0), 'Only the "unstructured" PRUNING_TYPE is supported'),
    (dict(pruning_fn=torch.nn.utils.prune.l1_unstructured), "HINT: if passing a `BasePruningMethod`, pass the class"),
    (dict(pruning_fn=torch.nn.utils.prune.L1Unstructured, use_global_unstructured=False),
     "only supported with `use_global_unstructured=True`"),
    (dict(pruning_fn="l1_unstructured", parameter_names=["scale"]), "isn't in \\('weight', 'bias'\\)"),
    (dict(pruning_fn="l1_unstructured", amount="half"), "either an int, a float or Callable"),
    (dict(pruning_fn="l1_unstructured", verbose=3), r"`verbose` must be any of \(0, 1, 2\)"),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(MisconfigurationException, match=match):
        ModelPruning(**kwargs)


def test_parameters_not_in_the_model(tmp_path):
    stranger = torch.nn.Linear(2, 2)
    with pytest.raises(MisconfigurationException, match="don't exist in the model"):
        trainer(tmp_path, callbacks=[ModelPruning("l1_unstructured", parameters_to_prune=[(stranger, "weight")])]).fit(
            Wide())
