"""The documented spelling of enum values, read from the contract's descriptors."""

from __future__ import annotations

from collections.abc import Iterable
from functools import cache

from google.protobuf.descriptor import EnumDescriptor, EnumValueDescriptor

from jobstatus.v1 import options_pb2


@cache
def spelling(value: EnumValueDescriptor) -> str:
    """The documented spelling of an enum value (`InProgress`), or its name if it has none."""
    options = value.GetOptions()
    if options.HasExtension(options_pb2.spelling):
        return str(options.Extensions[options_pb2.spelling])
    return value.name


def spell(enum: EnumDescriptor, number: int) -> str:
    """The documented spelling of the value `number` of `enum`."""
    value = enum.values_by_number.get(number)
    return spelling(value) if value is not None else str(number)


@cache
def by_spelling(enum: EnumDescriptor) -> dict[str, int]:
    """Every documented spelling of `enum`, with its number."""
    return {spelling(v): v.number for v in enum.values if v.number != 0}


def enum_name(value: EnumValueDescriptor) -> str:
    """The value's name in the contract (`MAP_IMPORT_STATUS_IN_PROGRESS`): what protobuf JSON,
    grpcurl and the generated code take."""
    return value.name


def both(enum: EnumDescriptor, number: int) -> str:
    """A value in both of its spellings, for messages that a person may copy into a request
    of either kind: `InProgress (MAP_IMPORT_STATUS_IN_PROGRESS)`."""
    value = enum.values_by_number.get(number)
    if value is None:
        return str(number)
    return f"{spelling(value)} ({value.name})"


def _folded(text: str) -> str:
    return "".join(c for c in text.lower() if c not in "_- ")


@cache
def by_any_spelling(enum: EnumDescriptor) -> dict[str, int]:
    """Every way a person may write a value of `enum`, folded (lower case, no `_`, `-` or
    spaces), with its number: the documented spelling (`InProgress`, `inProgress`), the
    contract's name (`MAP_IMPORT_STATUS_IN_PROGRESS`) and that name without the enum's
    prefix (`IN_PROGRESS`, `in_progress`). A folded form two values share is left out."""
    prefix = (
        enum.values_by_number[0].name.removesuffix("UNSPECIFIED")
        if 0 in enum.values_by_number
        else ""
    )
    seen: dict[str, set[int]] = {}
    for value in enum.values:
        if value.number == 0:
            continue
        for form in (spelling(value), value.name, value.name.removeprefix(prefix)):
            seen.setdefault(_folded(form), set()).add(value.number)
    return {form: next(iter(numbers)) for form, numbers in seen.items() if len(numbers) == 1}


def parse(enum: EnumDescriptor, text: str) -> int | None:
    """The number of the value `text` names in any spelling `by_any_spelling` knows."""
    return by_any_spelling(enum).get(_folded(text.strip()))


def listing(enum: EnumDescriptor, numbers: Iterable[int]) -> str:
    """Values in both spellings, in the order of their documented spelling, case-folded."""
    values = sorted(numbers, key=lambda n: spell(enum, n).lower())
    return ", ".join(both(enum, n) for n in values)
