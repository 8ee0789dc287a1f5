"""One LightningModule's code, built at run time on either framework's base class, and the helpers that run it.

`framework("lightning")` is `pytorch_lightning`, `framework("volt")` is `volt`; both expose the same names
(`LightningModule`, `Trainer`, `seed_everything`, `callbacks`, `loggers`), which is the compatibility claim the
differential tests check. Everything else (data, seeds, model code) is shared, so any difference in the results
comes from the frameworks.
"""
import importlib
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

FRAMEWORKS = ("lightning", "volt")
_PACKAGES = {"lightning": "pytorch_lightning", "volt": "volt"}
_classes: Dict[Tuple[str, str], type] = {}  # built once per framework, so checkpoints name a stable class

QUIET = dict(enable_progress_bar=False, enable_model_summary=False)


def framework(name: str):
    return importlib.import_module(_PACKAGES[name])


# ---------------------------------------------------------------------- data
def dataset(n: int = 32, seed: int = 1234) -> TensorDataset:
    """A small noisy linear regression problem, drawn from its own generator (no global RNG touched)."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=generator)
    y = x @ torch.tensor([[0.5], [-1.0], [0.25], [1.0]]) + 0.1 * torch.randn(n, 1, generator=generator)
    return TensorDataset(x, y)


def loaders(n_train: int = 32, n_val: int = 16, batch_size: int = 4) -> Tuple[DataLoader, DataLoader]:
    """Unshuffled train and validation loaders (fresh objects per call, so the frameworks share nothing)."""
    return (DataLoader(dataset(n_train, seed=1234), batch_size=batch_size),
            DataLoader(dataset(n_val, seed=99), batch_size=batch_size))


# ---------------------------------------------------------------------- the module under test
def model_class(name: str) -> type:
    """The `Regressor` LightningModule subclassing `name`'s LightningModule."""
    key = (name, "Regressor")
    if key not in _classes:
        _classes[key] = _build_regressor(framework(name).LightningModule, name)
    return _classes[key]


def _build_regressor(base: type, name: str) -> type:
    class Regressor(base):
        """Linear -> ReLU -> Dropout -> Linear; options choose the optimizer setup, all else is shared.

        `scheduler`: None, "step_epoch", "step_epoch_freq2", "onecycle_step", "onecycle_step_freq2", "plateau".
        `manual`: manual optimization with two optimizers (one per layer).
        """

        def __init__(self, lr: float = 0.02, hidden: int = 8, dropout: float = 0.0,
                     scheduler: Optional[str] = None, manual: bool = False, log_lr: bool = False) -> None:
            super().__init__()
            self.save_hyperparameters()
            self.layer1 = nn.Linear(4, hidden)
            self.dropout = nn.Dropout(dropout)
            self.layer2 = nn.Linear(hidden, 1)
            self.automatic_optimization = not manual

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.layer2(self.dropout(torch.relu(self.layer1(x))))

        def compute_loss(self, batch) -> torch.Tensor:
            x, y = batch
            return nn.functional.mse_loss(self(x), y)

        def training_step(self, batch, batch_idx):
            if self.hparams.manual:
                return self._manual_step(batch)
            loss = self.compute_loss(batch)
            self.log("train_loss", loss, on_step=True, on_epoch=True, prog_bar=True)
            if self.hparams.log_lr:
                self.log("lr", self.trainer.optimizers[0].param_groups[0]["lr"])
            return loss

        def _manual_step(self, batch) -> None:
            first, second = self.optimizers()
            for optimizer in (first, second):
                loss = self.compute_loss(batch)
                optimizer.zero_grad()
                self.manual_backward(loss)
                optimizer.step()
            self.log("train_loss", loss)

        def validation_step(self, batch, batch_idx):
            loss = self.compute_loss(batch)
            self.log("val_loss", loss)
            return loss

        def configure_optimizers(self):
            if self.hparams.manual:
                return [torch.optim.SGD(self.layer1.parameters(), lr=self.hparams.lr),
                        torch.optim.Adam(self.layer2.parameters(), lr=self.hparams.lr)]
            optimizer = torch.optim.SGD(self.parameters(), lr=self.hparams.lr, momentum=0.9)
            kind = self.hparams.scheduler
            if kind is None:
                return optimizer
            if kind.startswith("step_epoch"):
                scheduler = {"scheduler": torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5),
                             "interval": "epoch", "frequency": 2 if kind.endswith("freq2") else 1}
            elif kind.startswith("onecycle_step"):
                total = int(self.trainer.estimated_stepping_batches)
                scheduler = {"scheduler": torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=0.05,
                                                                              total_steps=total),
                             "interval": "step", "frequency": 2 if kind.endswith("freq2") else 1}
            elif kind == "plateau":
                # mode="max" on a falling loss: every check after the first counts as "no improvement",
                # so the plateau scheduler really cuts the learning rate during the run.
                plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="max", factor=0.5, patience=0)
                scheduler = {"scheduler": plateau, "monitor": "val_loss"}
            else:
                raise ValueError(f"unknown scheduler option {kind!r}")
            return {"optimizer": optimizer, "lr_scheduler": scheduler}

    return Regressor


# ---------------------------------------------------------------------- an in-memory logger
def memory_logger(name: str):
    """A Logger (subclassing `name`'s Logger base) that keeps every `log_metrics` call in a list."""
    key = (name, "MemoryLogger")
    if key not in _classes:
        base = framework(name).loggers.Logger

        class MemoryLogger(base):
            def __init__(self) -> None:
                super().__init__()
                self.records: List[Tuple[Optional[int], Dict[str, float]]] = []
                self.hparams: Dict[str, Any] = {}

            @property
            def name(self) -> str:
                return "memory"

            @property
            def version(self) -> int:
                return 0

            def log_metrics(self, metrics, step=None) -> None:
                self.records.append((step, dict(metrics)))

            def log_hyperparams(self, params, *args, **kwargs) -> None:
                self.hparams.update(dict(params))

        _classes[key] = MemoryLogger
    return _classes[key]()


# ---------------------------------------------------------------------- running a scenario
@dataclass
class Run:
    """What one fit left behind, in framework-neutral form."""

    model: Any
    trainer: Any
    logger: Any

    @property
    def weights(self) -> Dict[str, torch.Tensor]:
        return {k: v.detach().clone() for k, v in self.model.state_dict().items()}


def fit(name: str, root, *, model_kwargs: Optional[dict] = None, callbacks: Optional[Callable] = None,
        data: Optional[Tuple[DataLoader, DataLoader]] = None, validate: bool = True, seed: int = 0,
        ckpt_path: Any = None, memory: bool = True, **trainer_kwargs: Any) -> Run:
    """Seed, build the Regressor, fit it with `name`'s Trainer and return the Run.

    Defaults: CPU, 2 epochs, no checkpointing, the in-memory logger writing every step, quiet output.
    `callbacks(pl)` builds callbacks from the framework package `pl`.
    """
    pl = framework(name)
    pl.seed_everything(seed, verbose=False)
    model = model_class(name)(**(model_kwargs or {}))
    logger = memory_logger(name) if memory else None
    options = dict(accelerator="cpu", devices=1, max_epochs=2, log_every_n_steps=1, enable_checkpointing=False,
                   default_root_dir=str(root), **QUIET)
    if memory:
        options["logger"] = logger
    options.update(trainer_kwargs)
    if callbacks is not None:
        options["callbacks"] = callbacks(pl)
    trainer = pl.Trainer(**options)
    train_loader, val_loader = data or loaders()
    trainer.fit(model, train_loader, val_loader if validate else None, ckpt_path=ckpt_path)
    return Run(model, trainer, logger)


# ---------------------------------------------------------------------- a hand-written reference loop
def hand_loop(name: str, *, epochs: int = 2, accumulate: int = 1, partial_divisor: str = "N",
              autocast_dtype: Optional[torch.dtype] = None, seed: int = 0, lr: float = 0.02) -> Dict[str, torch.Tensor]:
    """Plain PyTorch training of the same model on the same data, as the reference for one framework's choice.

    `partial_divisor`: what the loss of a final partial window of k < `accumulate` batches is divided by, "k"
    (volt) or "N" (Lightning: accumulate_grad_batches); full windows divide by N in both.
    `autocast_dtype`: run the forward under CPU autocast; float16 adds a GradScaler, as real fp16 AMP does.
    """
    framework(name).seed_everything(seed, verbose=False)
    model = model_class(name)()
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    scaler = torch.amp.GradScaler("cpu") if autocast_dtype == torch.float16 else None
    batches = list(loaders()[0])
    full_end = len(batches) // accumulate * accumulate
    partial = len(batches) - full_end
    for _ in range(epochs):
        for batch_idx, batch in enumerate(batches):
            if batch_idx % accumulate == 0:
                optimizer.zero_grad()
            with torch.autocast("cpu", dtype=autocast_dtype, enabled=autocast_dtype is not None):
                loss = model.compute_loss(batch)
            divisor = partial if (batch_idx >= full_end and partial_divisor == "k") else accumulate
            loss = loss / divisor
            (scaler.scale(loss) if scaler else loss).backward()
            if (batch_idx + 1) % accumulate == 0 or batch_idx == len(batches) - 1:
                if scaler:
                    scaler.step(optimizer)
                    scaler.update()
                else:
                    optimizer.step()
    return {k: v.detach().clone() for k, v in model.state_dict().items()}
