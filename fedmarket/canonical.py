"""Canonical JSON: the one byte string of a public artifact (task spec, round report).

Sorted keys, no whitespace, UTF-8, floats in Python's shortest round-trip form, no NaN or
infinity; the same value always gives the same bytes, so anyone can recompute its sha256.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel


def canonical_json(value: BaseModel | Any) -> bytes:
    """`value` (a pydantic model, dumped in JSON mode, or plain JSON data) as canonical bytes."""
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json")
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return text.encode("utf-8")
