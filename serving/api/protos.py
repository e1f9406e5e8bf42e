"""Protobuf messages as TF Serving's REST JSON: one conversion for the REST front end (status,
metadata) and the gRPC client (which answers in the REST client's shapes)."""
from __future__ import annotations

from typing import Any


def to_dict(message) -> dict[str, Any]:
    """`message` as JSON-ready dicts, field names as in the .proto, fields without presence included."""
    from google.protobuf import json_format
    return json_format.MessageToDict(message, preserving_proto_field_name=True,
                                     always_print_fields_with_no_presence=True)
