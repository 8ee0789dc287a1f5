"""Warning categories users filter by name."""
import os
import warnings


class PossibleUserWarning(UserWarning):
    """A warning about something that may be a mistake but can be intended (e.g. few DataLoader workers)."""


def disable_possible_user_warnings(module: str = "") -> None:
    """Silence every `PossibleUserWarning` (from modules matching `module`, a regex; all by default)."""
    warnings.filterwarnings("ignore", category=PossibleUserWarning, module=module)


def read_environment_switch() -> None:
    """Lightning's switch, read when the package is imported (or reloaded): POSSIBLE_USER_WARNINGS=0 or off
    silences every `PossibleUserWarning`."""
    if os.environ.get("POSSIBLE_USER_WARNINGS", "").lower() in ("0", "off"):
        disable_possible_user_warnings()
