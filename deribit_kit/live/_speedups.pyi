"""Types of the optional compiled loop in ``_speedups.c`` (see ``deribit_kit.live.ladder._Ladder``)."""

from typing import Any

def ladder_apply(
    slots: list[tuple[float, float] | None],
    owners: list[float | None],
    origin: float,
    scale: float,
    entries: list[Any],
    pos: int,
    first: int,
    count: int,
    /,
) -> tuple[int, int, int, int]: ...
def ladder_head(slots: list[tuple[float, float] | None], first: int, n: int, /) -> list[tuple[float, float]]: ...
