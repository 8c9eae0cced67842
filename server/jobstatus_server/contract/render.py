"""Documented JSON from protobuf messages, driven by the descriptors.

A Shape lists the documented keys of a message, in the documented order, and
whether each appears when unset. Everything else comes from the descriptor:
the JSON key (the field's json_name), enum spellings (the `spelling` option),
date-times (RFC 3339, `Z`), 64-bit integers as JSON numbers. The same Shape
gives the JSON Schema of the body for /openapi.json, so the document and the
answers cannot drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from google.protobuf import timestamp_pb2
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from jobstatus.spelling import spelling

TIMESTAMP = timestamp_pb2.Timestamp.DESCRIPTOR.full_name
_INTEGERS = {
    FieldDescriptor.TYPE_INT32: "int32",
    FieldDescriptor.TYPE_SINT32: "int32",
    FieldDescriptor.TYPE_SFIXED32: "int32",
    FieldDescriptor.TYPE_UINT32: "int64",
    FieldDescriptor.TYPE_FIXED32: "int64",
    FieldDescriptor.TYPE_INT64: "int64",
    FieldDescriptor.TYPE_SINT64: "int64",
    FieldDescriptor.TYPE_SFIXED64: "int64",
    FieldDescriptor.TYPE_UINT64: "int64",
    FieldDescriptor.TYPE_FIXED64: "int64",
}
_FLOATS = {FieldDescriptor.TYPE_FLOAT, FieldDescriptor.TYPE_DOUBLE}


@dataclass(frozen=True)
class Key:
    """One documented key: the proto field it renders, and when it appears.

    `always`: the key is in every body; an unset date-time is `null`, an unset
    message renders its own keys. Otherwise the key appears only when the field is
    set (a non-default scalar, a present message, a non-empty list).
    """

    field: str
    always: bool = False
    shape: Shape | None = None
    # Enum values this key never reports (left out of the schema's enum).
    never: frozenset[int] = frozenset()
    description: str = ""


@dataclass(frozen=True)
class Shape:
    """The documented JSON object of one message type."""

    descriptor: Descriptor
    keys: tuple[Key, ...]
    _fields: dict[str, FieldDescriptor] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        for key in self.keys:
            found = self.descriptor.fields_by_name.get(key.field)
            if found is None:
                raise ValueError(f"{self.descriptor.full_name} has no field {key.field}")
            nested = _nested(found)
            if nested is not None and (key.shape is None or key.shape.descriptor is not nested):
                raise ValueError(f"{self.descriptor.full_name}.{key.field} needs its Shape")
            self._fields[key.field] = found

    def render(self, message: Message) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key in self.keys:
            descriptor = self._fields[key.field]
            value = getattr(message, key.field)
            if descriptor.is_repeated:
                if value or key.always:
                    out[descriptor.json_name] = [_value(descriptor, key, item) for item in value]
            elif _is_set(message, descriptor, value):
                out[descriptor.json_name] = _value(descriptor, key, value)
            elif key.always:
                out[descriptor.json_name] = _unset(descriptor, key, value)
        return out

    def schema(self) -> dict[str, Any]:
        """The JSON Schema (OpenAPI 3.0) of what `render` returns."""
        properties: dict[str, Any] = {}
        required: list[str] = []
        for key in self.keys:
            descriptor = self._fields[key.field]
            item = _schema(descriptor, key)
            if descriptor.is_repeated:
                item = {"type": "array", "items": item}
            elif key.always and descriptor.message_type is not None and key.shape is None:
                item = {**item, "nullable": True}
            if key.description:
                item = {**item, "description": key.description}
            properties[descriptor.json_name] = item
            if key.always:
                required.append(descriptor.json_name)
        out: dict[str, Any] = {
            "type": "object",
            "properties": properties,
            "additionalProperties": False,
        }
        if required:
            out["required"] = required
        return out


def _nested(descriptor: FieldDescriptor) -> Descriptor | None:
    """The message type of a field rendered as a JSON object (not a well-known type)."""
    message = descriptor.message_type
    if message is None or message.full_name == TIMESTAMP:
        return None
    return message


def _is_set(message: Message, descriptor: FieldDescriptor, value: Any) -> bool:
    if descriptor.has_presence:
        return message.HasField(descriptor.name)
    return bool(value)


def _value(descriptor: FieldDescriptor, key: Key, value: Any) -> Any:
    if descriptor.type == FieldDescriptor.TYPE_ENUM:
        assert descriptor.enum_type is not None
        found = descriptor.enum_type.values_by_number.get(int(value))
        return spelling(found) if found is not None and found.number else None
    if descriptor.message_type is not None:
        if descriptor.message_type.full_name == TIMESTAMP:
            return str(value.ToJsonString())
        assert key.shape is not None
        return key.shape.render(value)
    if descriptor.type in _INTEGERS:
        return int(value)
    if descriptor.type in _FLOATS:
        return float(value)
    if descriptor.type == FieldDescriptor.TYPE_BOOL:
        return bool(value)
    return str(value)


def _unset(descriptor: FieldDescriptor, key: Key, value: Any) -> Any:
    if descriptor.message_type is not None:
        return None if key.shape is None else key.shape.render(value)
    if descriptor.type == FieldDescriptor.TYPE_ENUM:
        return None
    return _value(descriptor, key, value)


def _schema(descriptor: FieldDescriptor, key: Key) -> dict[str, Any]:
    if descriptor.type == FieldDescriptor.TYPE_ENUM:
        assert descriptor.enum_type is not None
        values = [
            spelling(v)
            for v in descriptor.enum_type.values
            if v.number != 0 and v.number not in key.never
        ]
        return {"type": "string", "enum": values}
    if descriptor.message_type is not None:
        if descriptor.message_type.full_name == TIMESTAMP:
            return {"type": "string", "format": "date-time"}
        assert key.shape is not None
        return key.shape.schema()
    if descriptor.type in _INTEGERS:
        return {"type": "integer", "format": _INTEGERS[descriptor.type]}
    if descriptor.type in _FLOATS:
        return {"type": "number"}
    if descriptor.type == FieldDescriptor.TYPE_BOOL:
        return {"type": "boolean"}
    return {"type": "string"}
