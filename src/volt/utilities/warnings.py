"""Warning categories users filter by name."""
import warnings


class PossibleUserWarning(UserWarning):
    """A warning about something that may be a mistake but can be intended (e.g. few DataLoader workers)."""


def disable_possible_user_warnings(module: str = "") -> None:
    """Silence every `PossibleUserWarning` (from modules matching `module`, a regex; all by default)."""
    warnings.filterwarnings("ignore", category=PossibleUserWarning, module=module)
