"""Exception types users catch by name."""


class MisconfigurationException(Exception):
    """A Trainer, module or callback was configured in a way that cannot work. The message says how to fix it."""


def dataloader_not_implemented(name: str) -> MisconfigurationException:
    """What a LightningModule's or LightningDataModule's default `*_dataloader` hook raises (as in Lightning)."""
    return MisconfigurationException(
        f"`{name}` must be implemented to be used with the Lightning Trainer: define `{name}(self)` in your "
        "LightningModule or LightningDataModule, or pass the dataloaders to the Trainer call."
    )


class TrainingStopped(SystemExit):
    """Raised after a graceful stop (SIGTERM, Ctrl-C, a SLURM requeue signal) has saved its checkpoint; exits the
    process with status 1 and its message."""


class _TunerExitException(Exception):
    """Raised by a tuner callback once its search is done when `Tuner` runs it: the Trainer ends the call there
    (teardown hooks, no training), as Lightning does."""
