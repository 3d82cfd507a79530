"""A value that must never reach a log, a repr or an error message."""

from __future__ import annotations

import hmac

MASK = "***"


class Secret:
    """Holds a credential; prints as "***" however it is printed.

    `reveal()` is the one door to the value: call it only where the value is handed to the
    library that needs it (an HTTP header, a database driver).
    """

    __slots__ = ("_value",)

    def __init__(self, value: str = "") -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __bool__(self) -> bool:
        return bool(self._value)

    def __repr__(self) -> str:
        return MASK

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        return MASK

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        return hmac.compare_digest(self._value.encode(), other._value.encode())

    def __hash__(self) -> int:
        return hash((Secret, self._value))
