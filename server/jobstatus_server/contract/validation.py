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
from collections.abc import Callable, Iterable, Iterator
from functools import cache
from typing import cast

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from jobstatus.v1 import options_pb2
from jobstatus_server.contract.errors import FieldViolation, InvalidArgument

DEFAULT_MAX_LEN = 1024
DEFAULT_MAX_ITEMS = 1000
MIN_TIMESTAMP_SECONDS = -62135596800  # 0001-01-01T00:00:00Z
MAX_TIMESTAMP_SECONDS = 253402300799  # 9999-12-31T23:59:59Z
MAX_DURATION_SECONDS = 315576000000


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
    if _quick(message.DESCRIPTOR)(message):
        return
    violations: list[FieldViolation] = []
    _checker(message.DESCRIPTOR)(message, prefix, violations)
    if violations:
        summary = "; ".join(f"{v.field}: {v.description}" for v in violations[:5])
        raise InvalidArgument(
            f"invalid request: {summary}", reason="INVALID_ARGUMENT", violations=violations
        )


def violations_of(message: Message, prefix: str = "") -> Iterator[FieldViolation]:
    violations: list[FieldViolation] = []
    _checker(message.DESCRIPTOR)(message, prefix, violations)
    return iter(violations)


# --- the rules, compiled once per message type -----------------------------------------
#
# A checker appends the violations of one message to a list; it is built once per
# descriptor from the field options (on first use, and for every message type of the
# contract at start-up by `compile_all`), so a call only runs the checks that apply.

Checker = Callable[[Message, str, list[FieldViolation]], None]


@cache
def _checker(descriptor: Descriptor) -> Checker:
    if descriptor.full_name == "google.protobuf.Timestamp":
        return lambda message, prefix, out: out.extend(_timestamp(message, prefix.rstrip(".")))
    if descriptor.full_name == "google.protobuf.Duration":
        return lambda message, prefix, out: out.extend(_duration(message, prefix.rstrip(".")))
    checks = tuple(_field_check(field) for field in descriptor.fields)

    def check(message: Message, prefix: str, out: list[FieldViolation]) -> None:
        for field_check in checks:
            field_check(message, prefix, out)

    return check


def compile_all(descriptors: Iterable[Descriptor]) -> None:
    """Build the checkers of these message types and of every type they contain."""
    pending = list(descriptors)
    seen: set[str] = set()
    while pending:
        descriptor = pending.pop()
        if descriptor.full_name in seen:
            continue
        seen.add(descriptor.full_name)
        _checker(descriptor)
        pending.extend(
            field.message_type for field in descriptor.fields if field.message_type is not None
        )


Value = Callable[[object, str, list[FieldViolation]], None]
Quick = Callable[[Message], bool]


# --- the same rules, answering only "is it valid?" -----------------------------------------
#
# A request sets few of its fields. `_quick` looks only at those (ListFields, in C) and
# at the fields whose absence breaks a rule (required, or a number whose default is out
# of its range). It answers exactly when the full walk (`_checker`) finds nothing;
# `validate` walks in full, for the violations in declaration order, only when it does not.


@cache
def _quick(descriptor: Descriptor) -> Quick:
    full = _checker(descriptor)
    if descriptor.full_name in ("google.protobuf.Timestamp", "google.protobuf.Duration"):
        return lambda message: _clean(full, message)
    present: dict[int, Callable[[object], bool]] = {}
    absent: list[int] = []  # the fields whose absence is a violation
    for field in descriptor.fields:
        rules = _rules(field)
        if _is_repeated(field):
            present[field.number] = _quick_items(field, rules)
            if rules.required:
                absent.append(field.number)
            continue
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            assert field.message_type is not None
            present[field.number] = cast(Callable[[object], bool], _quick(field.message_type))
            if rules.required:
                absent.append(field.number)
            continue
        value_check = _value_check(field, rules)
        quick_value = _quick_value(field, rules)
        if quick_value is not None:
            present[field.number] = quick_value
        default_broken: list[FieldViolation] = []
        value_check(field.default_value, field.name, default_broken)
        if default_broken and not (field.has_presence and _is_numeric(field)):
            absent.append(field.number)  # as `_field_check`: checked even when unset

    def quick(message: Message) -> bool:
        fields = message.ListFields()
        for field, value in fields:
            check = present.get(field.number)
            if check is not None and not field.is_extension and not check(value):
                return False
        if absent:
            have = {field.number for field, _ in fields}
            return all(number in have for number in absent)
        return True

    return quick


def _clean(check: Checker, message: Message) -> bool:
    found: list[FieldViolation] = []
    check(message, "", found)
    return not found


def _quick_value(
    field: FieldDescriptor, rules: options_pb2.FieldRules
) -> Callable[[object], bool] | None:
    """`_value_check`'s rules for a scalar as a predicate; None: every value passes."""
    kind = field.type
    required = rules.required
    if kind == FieldDescriptor.TYPE_STRING:
        limit = rules.max_len or DEFAULT_MAX_LEN
        pattern = _pattern(rules.pattern) if rules.pattern else None

        def string(value: object) -> bool:
            text = cast(str, value)
            if not text:
                return not required
            if len(text) > limit or "\x00" in text:
                return False
            return pattern is None or pattern.fullmatch(text) is not None

        return string
    if kind == FieldDescriptor.TYPE_ENUM:
        assert field.enum_type is not None
        known = frozenset(field.enum_type.values_by_number)
        return lambda value: value in known and not (required and value == 0)
    if kind == FieldDescriptor.TYPE_BYTES:
        byte_limit = rules.max_len or DEFAULT_MAX_LEN
        return lambda value: len(cast(bytes, value)) <= byte_limit
    if kind == FieldDescriptor.TYPE_BOOL:
        return None
    low = rules.min if rules.HasField("min") else None
    high = rules.max if rules.HasField("max") else None
    if low is None and high is None and not required:
        return None

    def number(value: object) -> bool:
        amount = cast(int | float, value)
        if low is not None and amount < low:
            return False
        if high is not None and amount > high:
            return False
        return not (required and not amount)

    return number


def _quick_items(field: FieldDescriptor, rules: options_pb2.FieldRules) -> Callable[[object], bool]:
    limit = rules.max_len or DEFAULT_MAX_ITEMS
    item: Callable[[object], bool] | None
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        assert field.message_type is not None
        item = cast(Callable[[object], bool], _quick(field.message_type))
    else:
        item = _quick_value(field, options_pb2.FieldRules())

    def quick(values: object) -> bool:
        items = cast(list[object], values)
        if len(items) > limit:
            return False
        return item is None or all(item(value) for value in items)

    return quick


def _field_check(field: FieldDescriptor) -> Checker:
    name = field.name
    rules = _rules(field)
    if _is_repeated(field):
        limit = rules.max_len or DEFAULT_MAX_ITEMS
        required = rules.required
        item = _value_check(field, options_pb2.FieldRules())

        def repeated(message: Message, prefix: str, out: list[FieldViolation]) -> None:
            values = getattr(message, name)
            if not values and not required:
                return
            path = prefix + name
            if len(values) > limit:
                out.append(FieldViolation(path, f"at most {limit} elements, got {len(values)}"))
                return
            if required and not values:
                out.append(FieldViolation(path, "is required", "REQUIRED"))
            for index, value in enumerate(values):
                item(value, f"{path}[{index}]", out)

        return repeated
    value_check = _value_check(field, rules)
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        required = rules.required

        def nested(message: Message, prefix: str, out: list[FieldViolation]) -> None:
            if message.HasField(name):
                value_check(getattr(message, name), prefix + name, out)
            elif required:
                out.append(FieldViolation(prefix + name, "is required", "REQUIRED"))

        return nested
    if _is_numeric(field) and field.has_presence:

        def present_scalar(message: Message, prefix: str, out: list[FieldViolation]) -> None:
            if message.HasField(name):
                value_check(getattr(message, name), prefix + name, out)

        return present_scalar

    def scalar(message: Message, prefix: str, out: list[FieldViolation]) -> None:
        value_check(getattr(message, name), prefix + name, out)

    return scalar


def _is_numeric(field: FieldDescriptor) -> bool:
    return field.type not in (
        FieldDescriptor.TYPE_STRING,
        FieldDescriptor.TYPE_ENUM,
        FieldDescriptor.TYPE_BYTES,
        FieldDescriptor.TYPE_BOOL,
    )


def _value_check(field: FieldDescriptor, rules: options_pb2.FieldRules) -> Value:
    """The checks of one value of `field` (a present one, for numbers)."""
    kind = field.type
    required = rules.required
    if kind == FieldDescriptor.TYPE_MESSAGE:
        assert field.message_type is not None
        message_type = field.message_type

        def message_value(value: object, path: str, out: list[FieldViolation]) -> None:
            _checker(message_type)(cast(Message, value), path + ".", out)

        return message_value
    if kind == FieldDescriptor.TYPE_STRING:
        limit = rules.max_len or DEFAULT_MAX_LEN
        pattern = _pattern(rules.pattern) if rules.pattern else None
        described = rules.pattern_description or f"match {rules.pattern}"

        def string(value: object, path: str, out: list[FieldViolation]) -> None:
            value = cast(str, value)
            if not value:
                if required:
                    out.append(FieldViolation(path, "is required", "REQUIRED"))
            elif len(value) > limit:
                out.append(
                    FieldViolation(
                        path, f"at most {limit} characters, got {len(value)}", "TOO_LONG"
                    )
                )
            elif "\x00" in value:
                out.append(FieldViolation(path, "must not contain NUL characters", "NUL_CHARACTER"))
            elif pattern is not None and not pattern.fullmatch(value):
                out.append(FieldViolation(path, f"must be {described}", "PATTERN"))

        return string
    if kind == FieldDescriptor.TYPE_ENUM:
        enum = field.enum_type
        assert enum is not None
        known = frozenset(enum.values_by_number)
        enum_name = enum.full_name

        def enum_value(value: object, path: str, out: list[FieldViolation]) -> None:
            if value not in known:
                out.append(
                    FieldViolation(path, f"{value} is not a value of {enum_name}", "UNKNOWN_ENUM")
                )
            elif required and value == 0:
                out.append(FieldViolation(path, "is required", "REQUIRED"))

        return enum_value
    if kind == FieldDescriptor.TYPE_BYTES:
        byte_limit = rules.max_len or DEFAULT_MAX_LEN

        def bytes_value(value: object, path: str, out: list[FieldViolation]) -> None:
            if len(cast(bytes, value)) > byte_limit:
                out.append(FieldViolation(path, f"at most {byte_limit} bytes", "TOO_LONG"))

        return bytes_value
    if kind == FieldDescriptor.TYPE_BOOL:
        return lambda value, path, out: None
    low = rules.min if rules.HasField("min") else None
    high = rules.max if rules.HasField("max") else None
    if low is None and high is None and not required:
        return lambda value, path, out: None

    def number(value: object, path: str, out: list[FieldViolation]) -> None:
        value = cast(int | float, value)
        if low is not None and value < low:
            out.append(FieldViolation(path, f"must be at least {low}, got {value}", "OUT_OF_RANGE"))
        elif high is not None and value > high:
            out.append(FieldViolation(path, f"must be at most {high}, got {value}", "OUT_OF_RANGE"))
        elif required and not value:
            out.append(FieldViolation(path, "is required", "REQUIRED"))

    return number


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
