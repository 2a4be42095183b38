"""Content stores: the shared contract on every back end, then what each back end adds."""

from __future__ import annotations

import multiprocessing
import os
import threading
from pathlib import Path

import pytest

from fedmarket.cid import cid_of
from fedmarket.errors import (
    BlobNotFoundError,
    BlobTooLargeError,
    CorruptBlobError,
    InvalidCIDError,
    StoreError,
)
from fedmarket.store import DirectoryStore, HttpStore, MemoryStore, open_store

MISSING_CID = cid_of(b"never stored")


def files_under(root: Path) -> list[Path]:
    return sorted(path for path in root.rglob("*") if path.is_file())


# --- the contract every back end keeps ---------------------------------------------------------


def test_put_then_get_returns_the_same_bytes(any_store):
    data = os.urandom(5000)
    cid = any_store.put(data)
    assert cid == cid_of(data)
    assert any_store.get(cid) == data


def test_put_empty_blob_round_trips(any_store):
    assert any_store.get(any_store.put(b"")) == b""


def test_put_same_bytes_twice_gives_same_cid(any_store):
    assert any_store.put(b"twice") == any_store.put(bytearray(b"twice"))


def test_has_and_size_after_put(any_store):
    cid = any_store.put(b"12345")
    assert any_store.has(cid)
    assert any_store.size(cid) == 5


def test_has_is_false_for_missing_blob(any_store):
    assert not any_store.has(MISSING_CID)


def test_get_missing_blob_raises_not_found(any_store):
    with pytest.raises(BlobNotFoundError, match=MISSING_CID):
        any_store.get(MISSING_CID)


def test_size_of_missing_blob_raises_not_found(any_store):
    with pytest.raises(BlobNotFoundError):
        any_store.size(MISSING_CID)


def test_get_with_invalid_cid_raises_invalid_cid(any_store):
    with pytest.raises(InvalidCIDError):
        any_store.get("../../etc/passwd")


def test_put_over_limit_raises_too_large(any_store, blob_limit):
    with pytest.raises(BlobTooLargeError):
        any_store.put(b"x" * (blob_limit + 1))


def test_put_exactly_at_limit_is_accepted(any_store, blob_limit):
    data = b"y" * blob_limit
    assert any_store.get(any_store.put(data)) == data


def test_put_stream_joins_chunks(any_store):
    cid = any_store.put_stream([b"ab", b"", b"cd"])
    assert cid == cid_of(b"abcd")
    assert any_store.get(cid) == b"abcd"


def test_put_stream_over_limit_raises_too_large(any_store, blob_limit):
    with pytest.raises(BlobTooLargeError):
        any_store.put_stream(b"z" * 1024 for _ in range(blob_limit // 1024 + 1))


def test_put_refuses_non_bytes(any_store):
    with pytest.raises(TypeError):
        any_store.put("text is not bytes")


# --- DirectoryStore ------------------------------------------------------------------------------


def test_directory_blob_file_is_named_by_cid_under_digest_prefix(directory_store):
    cid = directory_store.put(b"hello")
    [path] = files_under(directory_store.root)
    assert path.name == cid
    assert path.parent.name == "2c"  # sha256(b"hello") starts 2cf24d...
    assert path.read_bytes() == b"hello"


def test_get_flipped_byte_raises_corrupt_blob(directory_store):
    cid = directory_store.put(b"model weights " * 100)
    [path] = files_under(directory_store.root)
    damaged = bytearray(path.read_bytes())
    damaged[42] ^= 0x01
    path.write_bytes(bytes(damaged))
    with pytest.raises(CorruptBlobError, match=cid):
        directory_store.get(cid)


def test_put_again_repairs_corrupt_blob(directory_store):
    data = b"original bytes"
    cid = directory_store.put(data)
    [path] = files_under(directory_store.root)
    path.write_bytes(b"damaged bytes!")
    directory_store.put(data)
    assert directory_store.get(cid) == data


def test_put_over_limit_leaves_nothing_in_directory(tmp_path):
    store = DirectoryStore(tmp_path / "blobs", max_blob_bytes=1024)
    with pytest.raises(BlobTooLargeError):
        store.put(b"x" * 1025)
    with pytest.raises(BlobTooLargeError):
        store.put_stream(b"x" * 100 for _ in range(11))
    assert files_under(store.root) == []


def test_put_stream_failing_source_leaves_no_temp_file(directory_store):
    def broken_upload():
        yield b"first chunk"
        raise ConnectionResetError("client went away")

    with pytest.raises(ConnectionResetError):
        directory_store.put_stream(broken_upload())
    assert files_under(directory_store.root) == []


def test_blob_files_are_world_readable(directory_store):
    directory_store.put(b"public")
    [path] = files_under(directory_store.root)
    assert path.stat().st_mode & 0o777 == 0o644


def test_concurrent_threads_writing_same_blob_leave_one_good_file(directory_store):
    data = os.urandom(1 << 20)
    barrier = threading.Barrier(8)
    cids: list[str] = []

    def write() -> None:
        barrier.wait()
        cids.extend(directory_store.put(data) for _ in range(3))

    threads = [threading.Thread(target=write) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert set(cids) == {cid_of(data)}
    assert len(files_under(directory_store.root)) == 1
    assert directory_store.get(cid_of(data)) == data


def test_concurrent_processes_writing_same_blob_leave_one_good_file(directory_store):
    data = os.urandom(8 << 20)
    context = multiprocessing.get_context("spawn")
    writers = [context.Process(target=directory_store.put, args=(data,)) for _ in range(3)]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join(timeout=60)
    assert [writer.exitcode for writer in writers] == [0, 0, 0]
    [path] = files_under(directory_store.root)
    assert path.name == cid_of(data)
    assert directory_store.get(cid_of(data)) == data


# --- open_store ----------------------------------------------------------------------------------


def test_open_store_picks_back_end_from_target(tmp_path):
    assert isinstance(open_store(tmp_path / "a"), DirectoryStore)
    assert isinstance(open_store(f"file://{tmp_path / 'b'}"), DirectoryStore)
    assert isinstance(open_store("memory://"), MemoryStore)
    with open_store("http://127.0.0.1:9") as store:
        assert isinstance(store, HttpStore)


def test_open_store_passes_size_limit(tmp_path):
    store = open_store(tmp_path / "a", max_blob_bytes=10)
    with pytest.raises(BlobTooLargeError):
        store.put(b"x" * 11)


def test_open_store_refuses_unknown_scheme():
    with pytest.raises(StoreError, match="unsupported store URL"):
        open_store("ipfs://bafkrei")


def test_memory_stores_do_not_share_blobs():
    first, second = open_store("memory://"), open_store("memory://")
    cid = first.put(b"only in the first")
    assert not second.has(cid)
