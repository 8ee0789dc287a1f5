"""String enums: Lightning's `LightningEnum` base and `GradClipAlgorithmType`."""
from enum import Enum
from typing import List


class LightningEnum(str, Enum):
    """A string enum: members equal (and hash as) their values; `str()` and f-strings give the value."""

    __hash__ = str.__hash__

    def __str__(self) -> str:
        return self.value

    @classmethod
    def from_str(cls, value: str, source: str = "key") -> "LightningEnum":
        """The member whose name (`source="key"`), value (`"value"`) or either (`"any"`) matches `value`,
        ignoring case."""
        for member in cls:
            if source in ("key", "any") and member.name.lower() == value.lower():
                return member
        for member in cls:
            if source in ("value", "any") and member.value.lower() == value.lower():
                return member
        allowed = [m.name for m in cls] if source == "key" else [m.value for m in cls]
        raise ValueError(f"{value!r} is not a {cls.__name__}; expected one of {allowed}.")


class GradClipAlgorithmType(LightningEnum):
    """`Trainer(gradient_clip_algorithm=...)`: clip the total 2-norm ("norm") or each value ("value")."""

    VALUE = "value"
    NORM = "norm"

    @staticmethod
    def supported_type(value: str) -> bool:
        return value in GradClipAlgorithmType.supported_types()

    @staticmethod
    def supported_types() -> List[str]:
        return [member.value for member in GradClipAlgorithmType]
