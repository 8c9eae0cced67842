"""Validate requests against the rules declared in the contract.

Each field rule is declared once, as a `(jobstatus.v1.rules)` option in the
proto files; this module walks the descriptors and applies them. The rules
that hold for every field need no annotation: enum fields take only declared
values, strings are at most DEFAULT_MAX_LEN characters and hold no NUL (no
database stores one), repeated fields have
at most DEFAULT_MAX_ITEMS elements, Timestamps and Durations are valid.

protovalidate was the first choice, but its 2.x ships its own protobuf runtime
and no .proto source for buf/validate (and the Buf registry is out of reach
here), so the contract declares its own, smaller rule option instead.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from functools import cache

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from jobstatus.v1 import options_pb2
from jobstatus_server.errors import FieldViolation, InvalidArgument

DEFAULT_MAX_LEN = 1024
DEFAULT_MAX_ITEMS = 1000
MIN_TIMESTAMP_SECONDS = -62135596800  # 0001-01-01T00:00:00Z
MAX_TIMESTAMP_SECONDS = 253402300799  # 9999-12-31T23:59:59Z
MAX_DURATION_SECONDS = 315576000000

_TYPE_NAME = {
    FieldDescriptor.TYPE_STRING: "string",
    FieldDescriptor.TYPE_ENUM: "enum",
}


@cache
def _rules(field: FieldDescriptor) -> options_pb2.FieldRules:
    options = field.GetOptions()
    if options.HasExtension(options_pb2.rules):
        return options.Extensions[options_pb2.rules]
    return options_pb2.FieldRules()


@cache
def _pattern(regex: str) -> re.Pattern[str]:
    return re.compile(regex)


def _is_repeated(field: FieldDescriptor) -> bool:
    return bool(field.is_repeated)


def validate(message: Message, prefix: str = "") -> None:
    """Raise InvalidArgument listing every violation in `message`, or return."""
    violations = list(violations_of(message, prefix))
    if violations:
        summary = "; ".join(f"{v.field}: {v.description}" for v in violations[:5])
        raise InvalidArgument(
            f"invalid request: {summary}", reason="INVALID_ARGUMENT", violations=violations
        )


def violations_of(message: Message, prefix: str = "") -> Iterator[FieldViolation]:
    descriptor: Descriptor = message.DESCRIPTOR  # type: ignore[assignment]
    if descriptor.full_name == "google.protobuf.Timestamp":
        yield from _timestamp(message, prefix.rstrip("."))
        return
    if descriptor.full_name == "google.protobuf.Duration":
        yield from _duration(message, prefix.rstrip("."))
        return
    for field in descriptor.fields:
        path = prefix + field.name
        rules = _rules(field)
        value = getattr(message, field.name)
        if _is_repeated(field):
            limit = rules.max_len or DEFAULT_MAX_ITEMS
            if len(value) > limit:
                yield FieldViolation(path, f"at most {limit} elements, got {len(value)}")
                continue
            if rules.required and not value:
                yield FieldViolation(path, "is required", "REQUIRED")
            for index, item in enumerate(value):
                yield from _single(field, options_pb2.FieldRules(), item, f"{path}[{index}]", True)
        else:
            present = message.HasField(field.name) if field.has_presence else None
            if field.type == FieldDescriptor.TYPE_MESSAGE and not present:
                if rules.required:
                    yield FieldViolation(path, "is required", "REQUIRED")
                continue
            yield from _single(field, rules, value, path, present is not False)


def _single(
    field: FieldDescriptor, rules: options_pb2.FieldRules, value: object, path: str, present: bool
) -> Iterator[FieldViolation]:
    kind = field.type
    if kind == FieldDescriptor.TYPE_MESSAGE:
        assert isinstance(value, Message)
        yield from violations_of(value, path + ".")
    elif kind == FieldDescriptor.TYPE_STRING:
        assert isinstance(value, str)
        limit = rules.max_len or DEFAULT_MAX_LEN
        if rules.required and not value:
            yield FieldViolation(path, "is required", "REQUIRED")
        elif len(value) > limit:
            yield FieldViolation(path, f"at most {limit} characters, got {len(value)}", "TOO_LONG")
        elif "\x00" in value:
            yield FieldViolation(path, "must not contain NUL characters", "NUL_CHARACTER")
        elif value and rules.pattern and not _pattern(rules.pattern).fullmatch(value):
            described = rules.pattern_description or f"match {rules.pattern}"
            yield FieldViolation(path, f"must be {described}", "PATTERN")
    elif kind == FieldDescriptor.TYPE_ENUM:
        assert isinstance(value, int)
        enum = field.enum_type
        assert enum is not None
        if value not in enum.values_by_number:
            yield FieldViolation(
                path, f"{value} is not a value of {enum.full_name}", "UNKNOWN_ENUM"
            )
        elif rules.required and value == 0:
            yield FieldViolation(path, "is required", "REQUIRED")
    elif kind == FieldDescriptor.TYPE_BYTES:
        assert isinstance(value, bytes)
        limit = rules.max_len or DEFAULT_MAX_LEN
        if len(value) > limit:
            yield FieldViolation(path, f"at most {limit} bytes", "TOO_LONG")
    elif kind != FieldDescriptor.TYPE_BOOL and present:
        assert isinstance(value, int | float)
        if rules.HasField("min") and value < rules.min:
            yield FieldViolation(path, f"must be at least {rules.min}, got {value}", "OUT_OF_RANGE")
        elif rules.HasField("max") and value > rules.max:
            yield FieldViolation(path, f"must be at most {rules.max}, got {value}", "OUT_OF_RANGE")
        elif rules.required and not value:
            yield FieldViolation(path, "is required", "REQUIRED")


def _timestamp(message: Message, path: str) -> Iterator[FieldViolation]:
    seconds: int = getattr(message, "seconds")  # noqa: B009
    nanos: int = getattr(message, "nanos")  # noqa: B009
    if not MIN_TIMESTAMP_SECONDS <= seconds <= MAX_TIMESTAMP_SECONDS:
        yield FieldViolation(path, "must lie between years 1 and 9999", "INVALID_TIMESTAMP")
    elif not 0 <= nanos <= 999_999_999:
        yield FieldViolation(path, "nanos must be 0 to 999999999", "INVALID_TIMESTAMP")


def _duration(message: Message, path: str) -> Iterator[FieldViolation]:
    seconds: int = getattr(message, "seconds")  # noqa: B009
    nanos: int = getattr(message, "nanos")  # noqa: B009
    if abs(seconds) > MAX_DURATION_SECONDS or abs(nanos) > 999_999_999:
        yield FieldViolation(path, "is not a valid duration", "INVALID_DURATION")
    elif seconds * nanos < 0:
        yield FieldViolation(path, "seconds and nanos must have the same sign", "INVALID_DURATION")
