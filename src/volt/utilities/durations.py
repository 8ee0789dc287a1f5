"""Durations as Lightning takes them (`Trainer(max_time=...)`, `Timer(duration=...)`, a time-based
`val_check_interval`): a "DD:HH:MM:SS" string, a `datetime.timedelta`, or a dict of timedelta's arguments."""
import re
from datetime import timedelta
from typing import Any

from volt.utilities.exceptions import MisconfigurationException

_FORMS = ("use 'DD:HH:MM:SS' (a string in the format DD:HH:MM:SS, e.g. '00:12:00:00' for 12 hours), a "
          "datetime.timedelta, or a dict like {'hours': 12}")


def duration_seconds(value: Any, argument: str) -> float:
    """The seconds `value` stands for. `argument` names what was given (e.g. "Timer(duration='1:30')") in the error
    raised for anything that is not a duration."""
    if isinstance(value, str):
        match = re.fullmatch(r"(\d+):(\d\d?):(\d\d?):(\d\d?)", value.strip())
        if match is None:
            raise MisconfigurationException(f"{argument} is not a duration: {_FORMS}.")
        days, hours, minutes, seconds = (int(part) for part in match.groups())
        value = timedelta(days=days, hours=hours, minutes=minutes, seconds=seconds)
    elif isinstance(value, dict):
        try:
            value = timedelta(**value)
        except TypeError as error:
            raise MisconfigurationException(f"{argument} is not a duration ({error}): {_FORMS}.") from None
    if not isinstance(value, timedelta):
        raise MisconfigurationException(f"{argument} is not a duration: {_FORMS}.")
    return value.total_seconds()
