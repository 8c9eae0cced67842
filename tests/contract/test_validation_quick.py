"""The quick validity check (validation._quick) agrees with the full walk of the rules.

`validate` asks the quick check first and walks every field (for the violations, in
declaration order) only when it says no, so the two must agree on every message: a
quick "yes" where the walk finds a violation would let a bad request through. Each
request type of the contract is filled at random, many times, from values that sit on
both sides of every rule (empty, too long, NUL, off-pattern strings; unknown enum
numbers; numbers at and beyond their bounds; too many items; nested messages set or
not), and both answers are compared.
"""

from __future__ import annotations

import random
from typing import Any

import pytest
from google.protobuf import message_factory
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from jobstatus_server.contract import validation
from jobstatus_server.grpc_api.services import SERVICES

REQUEST_TYPES = sorted(
    {
        method.input_type.full_name: method.input_type
        for module, name in SERVICES
        for method in module.DESCRIPTOR.services_by_name[name].methods
    }.items()
)
ROUNDS = 1000  # enough that every request type, its lease fields too, is sometimes valid


def _rules(field: FieldDescriptor) -> Any:
    return validation._rules(field)


def _string(rng: random.Random, field: FieldDescriptor) -> str:
    limit = _rules(field).max_len or validation.DEFAULT_MAX_LEN
    return rng.choice(
        [
            "",
            "a",
            "job-0001",
            "x" * limit,
            "x" * (limit + 1),
            "bad\x00id",
            "has space",
            "0123456789abcdef" * 2,
            "ok_Name-1.2",
        ]
    )


def _number(rng: random.Random, field: FieldDescriptor) -> Any:
    rules = _rules(field)
    edges = [0, 1, -1, 100, 101, 2**31 - 1]
    for name in ("min", "max"):
        if rules.HasField(name):
            bound = getattr(rules, name)
            edges += [bound - 1, bound, bound + 1]
    if field.type in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        return float(rng.choice(edges)) + rng.choice([0.0, 0.5])
    value = rng.choice(edges)
    if field.type in (
        FieldDescriptor.TYPE_UINT32,
        FieldDescriptor.TYPE_UINT64,
        FieldDescriptor.TYPE_FIXED32,
        FieldDescriptor.TYPE_FIXED64,
    ):
        value = abs(value)
    return value


def _scalar(rng: random.Random, field: FieldDescriptor) -> Any:
    if field.type == FieldDescriptor.TYPE_STRING:
        return _string(rng, field)
    if field.type == FieldDescriptor.TYPE_ENUM:
        assert field.enum_type is not None
        numbers = list(field.enum_type.values_by_number)
        return rng.choice([*numbers, max(numbers) + 1, 999])
    if field.type == FieldDescriptor.TYPE_BYTES:
        return rng.choice([b"", b"x", b"x" * 2000])
    if field.type == FieldDescriptor.TYPE_BOOL:
        return rng.choice([True, False])
    return _number(rng, field)


def _fill(rng: random.Random, message: Message, depth: int = 0) -> None:
    descriptor: Any = message.DESCRIPTOR
    if descriptor.full_name == "google.protobuf.Timestamp":
        message.seconds = rng.choice([0, 1_767_225_600, validation.MAX_TIMESTAMP_SECONDS + 1])  # type: ignore[attr-defined]
        message.nanos = rng.choice([0, 5, 1_000_000_000])  # type: ignore[attr-defined]
        return
    if descriptor.full_name == "google.protobuf.Duration":
        message.seconds = rng.choice([0, 3, -3, validation.MAX_DURATION_SECONDS + 1])  # type: ignore[attr-defined]
        message.nanos = rng.choice([0, 5, -5])  # type: ignore[attr-defined]
        return
    for field in descriptor.fields:
        if rng.random() < 0.35:
            continue  # left unset
        container = getattr(message, field.name)
        if validation._is_repeated(field):
            limit = _rules(field).max_len or validation.DEFAULT_MAX_ITEMS
            count = rng.choice([0, 1, 2, limit + 1] if limit <= 8 else [0, 1, 2])
            for _ in range(count):
                if field.type == FieldDescriptor.TYPE_MESSAGE:
                    if depth < 3:
                        _fill(rng, container.add(), depth + 1)
                else:
                    container.append(_scalar(rng, field))
        elif field.type == FieldDescriptor.TYPE_MESSAGE:
            if depth < 3:
                getattr(message, field.name).SetInParent()
                _fill(rng, getattr(message, field.name), depth + 1)
        else:
            setattr(message, field.name, _scalar(rng, field))


@pytest.mark.parametrize("name", [name for name, _ in REQUEST_TYPES])
def test_the_quick_check_agrees_with_the_full_walk(name: str) -> None:
    descriptor = dict(REQUEST_TYPES)[name]
    request_type = message_factory.GetMessageClass(descriptor)
    quick = validation._quick(descriptor)
    rng = random.Random(name)
    seen = {True: 0, False: 0}
    for _ in range(ROUNDS):
        message = request_type()
        _fill(rng, message)
        found = list(validation.violations_of(message))
        assert quick(message) == (not found), (message, found)
        seen[not found] += 1
    # Both answers were exercised, so the agreement means something.
    assert seen[True] > 0 and seen[False] > 0, seen
