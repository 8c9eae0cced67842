"""The documented spelling of enum values, read from the contract's descriptors."""

from __future__ import annotations

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
