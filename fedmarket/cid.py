"""Content identifiers: CIDv1 (raw codec, sha2-256) and the 32-byte digest stored on-chain.

A blob has two names that convert into each other without loss: off-chain its CID string
(``bafkrei...``, what IPFS would call it, so blobs can later move to an IPFS node unchanged),
on-chain the bare sha256 digest as ``bytes32`` (cheaper than a string, and what the contract
compares). Only this one CID kind is accepted: any other version, codec or hash function would
name the same bytes differently and break that one-to-one mapping.
"""

from __future__ import annotations

import hashlib

from multiformats import CID, multihash

from fedmarket.errors import InvalidCIDError

__all__ = ["cid_from_digest", "cid_of", "digest_from_cid", "digest_of", "normalize_cid"]

_RAW_CODEC = "raw"  # multicodec 0x55: the bytes are the blob itself, no IPLD structure
_HASH = "sha2-256"  # multihash 0x12
_DIGEST_SIZE = 32


def digest_of(data: bytes) -> bytes:
    """sha256 of ``data``: the on-chain name of a blob (``specHash``, ``modelHash``, ...)."""
    return hashlib.sha256(data).digest()


def cid_from_digest(digest: bytes) -> str:
    """The CID string (base32, ``bafkrei...``) of the blob whose sha256 is ``digest``."""
    if not isinstance(digest, (bytes, bytearray)) or len(digest) != _DIGEST_SIZE:
        raise InvalidCIDError(
            f"a sha256 digest is {_DIGEST_SIZE} bytes, got {_describe(digest)}: pass digest_of(blob)"
        )
    return str(CID("base32", 1, _RAW_CODEC, multihash.wrap(bytes(digest), _HASH)))


def cid_of(data: bytes) -> str:
    """The CID of ``data``: what a content store returns from ``put(data)``."""
    return cid_from_digest(digest_of(data))


def digest_from_cid(cid: str) -> bytes:
    """The 32-byte sha256 digest named by ``cid``, refusing any CID fedmarket does not use.

    Accepts the CID in any multibase (the canonical form is base32); refuses CIDv0, other codecs
    (e.g. ``dag-pb``), other hash functions and digests that are not 32 bytes long.
    """
    if not isinstance(cid, str):
        raise InvalidCIDError(f"a CID is a string, got {_describe(cid)}")
    shown = repr(cid) if len(cid) <= 80 else repr(cid[:77] + "...")
    try:
        parsed = CID.decode(cid)
    except Exception as exc:  # the parser raises many types (even IndexError) on hostile input
        raise InvalidCIDError(f"{shown} is not a CID ({exc}); expected a CIDv1 like 'bafkrei...'") from exc
    if parsed.version != 1:
        raise InvalidCIDError(f"{shown} is a CIDv{parsed.version}; fedmarket uses CIDv1 ('bafkrei...')")
    if parsed.codec.name != _RAW_CODEC:
        raise InvalidCIDError(
            f"{shown} has codec {parsed.codec.name!r}; fedmarket blobs use the 'raw' codec (0x55)"
        )
    if parsed.hashfun.name != _HASH:
        raise InvalidCIDError(f"{shown} is hashed with {parsed.hashfun.name!r}; fedmarket uses sha2-256")
    digest = bytes(parsed.raw_digest)
    if len(digest) != _DIGEST_SIZE:
        raise InvalidCIDError(f"{shown} holds a {len(digest)}-byte digest; sha2-256 digests are 32 bytes")
    return digest


def normalize_cid(cid: str) -> str:
    """The canonical (base32) spelling of ``cid``, so equal CIDs compare equal as strings."""
    return cid_from_digest(digest_from_cid(cid))


def _describe(value: object) -> str:
    if isinstance(value, (bytes, bytearray)):
        return f"{len(value)} bytes"
    return type(value).__name__
