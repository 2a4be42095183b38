"""The one parser of private keys typed by people (CLI options, environment variables).

``eth_account`` left-pads a short hex key, so a key with a digit lost in copying (63 hex digits)
silently becomes *another* account, which then has no tokens or stake. Here a key is exactly 32
bytes of hex, with or without ``0x``; anything else is an :class:`InvalidKeyError` that says what
is wrong with it (and never echoes the key).
"""

from __future__ import annotations

import string

from eth_account import Account
from eth_account.signers.local import LocalAccount

from fedmarket.errors import FedmarketError

__all__ = ["KEY_HEX_DIGITS", "InvalidKeyError", "account_from_key", "parse_private_key"]

KEY_HEX_DIGITS = 64  # 32 bytes
# secp256k1's group order: a private key is an integer in [1, n).
_CURVE_ORDER = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141


class InvalidKeyError(FedmarketError, ValueError):
    """Not a private key: wrong length, not hex, or outside the curve's range."""


def parse_private_key(text: str, *, what: str = "the private key") -> bytes:
    """The 32 key bytes of `text` (64 hex digits, optionally ``0x``-prefixed, surrounding blanks
    ignored); InvalidKeyError naming `what` otherwise."""
    digits = text.strip()
    if digits[:2].lower() == "0x":
        digits = digits[2:]
    if not digits:
        raise InvalidKeyError(f"{what} is empty: expected 32 bytes of hex (64 digits, with or without 0x)")
    if any(c not in string.hexdigits for c in digits):
        raise InvalidKeyError(f"{what} is not hex: expected 32 bytes of hex (64 digits, with or without 0x)")
    if len(digits) != KEY_HEX_DIGITS:
        raise InvalidKeyError(
            f"{what} has {len(digits)} hex digits, not {KEY_HEX_DIGITS}: a private key is exactly 32 bytes "
            "(a digit lost or added in copying would be another account)"
        )
    key = bytes.fromhex(digits)
    if not 0 < int.from_bytes(key, "big") < _CURVE_ORDER:
        raise InvalidKeyError(f"{what} is not a valid secp256k1 private key (zero or above the curve order)")
    return key


def account_from_key(text: str, *, what: str = "the private key") -> LocalAccount:
    """The signing account of a key parsed by :func:`parse_private_key`."""
    return Account.from_key(parse_private_key(text, what=what))
