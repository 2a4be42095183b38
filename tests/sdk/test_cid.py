"""CIDs: checked against a by-hand encoding, and refusing every CID kind fedmarket does not use."""

from __future__ import annotations

import base64
import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st
from multiformats import CID, multihash

from fedmarket.cid import cid_from_digest, cid_of, digest_from_cid, digest_of, normalize_cid
from fedmarket.errors import InvalidCIDError


def cid_by_hand(data: bytes) -> str:
    """CIDv1 per spec: version 0x01, codec raw 0x55, multihash sha2-256 0x12 of length 0x20,
    then multibase 'b' (RFC 4648 base32, lower case, no padding)."""
    binary = bytes([0x01, 0x55, 0x12, 0x20]) + hashlib.sha256(data).digest()
    return "b" + base64.b32encode(binary).decode("ascii").lower().rstrip("=")


@pytest.mark.parametrize("data", [b"", b"hello", bytes(range(256)) * 10])
def test_cid_matches_independent_encoding(data):
    assert cid_of(data) == cid_by_hand(data)
    assert cid_of(data).startswith("bafkrei")


def test_known_cid_of_hello():
    assert cid_of(b"hello") == "bafkreibm6jg3ux5qumhcn2b3flc3tyu6dmlb4xa7u5bf44yegnrjhc4yeq"


@given(st.binary(min_size=32, max_size=32))
def test_digest_and_cid_convert_both_ways(digest):
    assert digest_from_cid(cid_from_digest(digest)) == digest


def test_digest_of_is_sha256():
    assert digest_of(b"abc") == hashlib.sha256(b"abc").digest()


def test_cid_in_other_multibase_names_same_digest():
    cid = cid_of(b"hello")
    base58 = CID.decode(cid).encode("base58btc")
    assert digest_from_cid(base58) == digest_from_cid(cid)
    assert normalize_cid(base58) == cid
    assert normalize_cid(cid.upper()) == cid


@pytest.mark.parametrize(
    ("cid", "problem"),
    [
        ("QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG", "CIDv0"),
        ("bafybeigdyrzt5sfp7udm7hu76uh7y26nf3efuylqabf3oclgtqy55fbzdi", "dag-pb"),
        (str(CID("base32", 1, "raw", multihash.digest(b"x", "blake2b-256"))), "blake2b-256"),
        (str(CID("base32", 1, "raw", multihash.wrap(b"\x00" * 20, "sha2-256"))), "20-byte digest"),
        ("", "not a CID"),
        ("bafkrei!!", "not a CID"),
        ("\x00", "not a CID"),
    ],
)
def test_digest_from_cid_refuses_other_cids_naming_problem(cid, problem):
    with pytest.raises(InvalidCIDError, match=problem):
        digest_from_cid(cid)


def test_digest_from_cid_refuses_non_string():
    with pytest.raises(InvalidCIDError, match="string"):
        digest_from_cid(b"bafkrei")


@pytest.mark.parametrize("digest", [b"", b"\x00" * 31, b"\x00" * 33])
def test_cid_from_digest_refuses_wrong_length(digest):
    with pytest.raises(InvalidCIDError, match="32 bytes"):
        cid_from_digest(digest)


@given(st.text(max_size=80))
def test_digest_from_cid_on_any_text_raises_only_invalid_cid(text):
    try:
        digest = digest_from_cid(text)
    except InvalidCIDError:
        return
    assert len(digest) == 32
