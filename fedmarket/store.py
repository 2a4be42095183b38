"""Content-addressed blob storage: task specs, global models, updates and round reports.

Every store names a blob by its CID (see :mod:`fedmarket.cid`) and checks, on every read, that
the bytes still hash to it, so a damaged disk or a lying server can never hand back the wrong
model. Three back ends share the :class:`ContentStore` interface:

- :class:`DirectoryStore`: the embedded default, one file per blob, crash-safe writes.
- :class:`MemoryStore`: its in-memory twin for tests.
- :class:`HttpStore`: a client of the coordinator's store API (``/v1/blobs``).

:func:`open_store` picks one from a URL or a path, so settings can hold a single string.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import tempfile
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

import httpx

from fedmarket.cid import cid_from_digest, cid_of, digest_from_cid, digest_of, normalize_cid
from fedmarket.errors import (
    BlobNotFoundError,
    BlobTooLargeError,
    CorruptBlobError,
    InvalidCIDError,
    StoreError,
    StoreUnavailableError,
)
from fedmarket.files import atomic_output, fsync_directory
from fedmarket.uploads import UploadSigner

__all__ = [
    "DEFAULT_MAX_BLOB_BYTES",
    "ContentStore",
    "DirectoryStore",
    "HttpStore",
    "MemoryStore",
    "PendingBlob",
    "open_store",
]

DEFAULT_MAX_BLOB_BYTES = 64 * 1024 * 1024
"""64 MiB: far above the models fedmarket builds (5 M float32 parameters are 20 MB), low enough
that one upload cannot fill a coordinator's disk or memory."""

BlobData = bytes | bytearray | memoryview
_T = TypeVar("_T")


class ContentStore(ABC):
    """Put and get immutable blobs by CID; every read is verified against the CID.

    Implementations refuse blobs larger than ``max_blob_bytes`` before keeping any of them.
    Stores are context managers; :meth:`close` releases connections where a back end holds any.
    """

    max_blob_bytes: int

    @abstractmethod
    def put(self, data: BlobData) -> str:
        """Store ``data`` and return its CID; storing the same bytes twice is harmless."""

    @abstractmethod
    def get(self, cid: str) -> bytes:
        """The blob named ``cid``, verified: raises ``CorruptBlobError`` rather than return bad bytes."""

    @abstractmethod
    def has(self, cid: str) -> bool:
        """Whether the store holds a blob under ``cid`` (not verified: :meth:`get` does that)."""

    @abstractmethod
    def size(self, cid: str) -> int:
        """Size in bytes of the blob named ``cid``, without reading it."""

    def put_stream(self, chunks: Iterable[BlobData]) -> str:
        """Store a blob that arrives in pieces (an upload), refusing it as soon as it passes the limit."""
        return self.put(b"".join(_limited(chunks, limit=self.max_blob_bytes, where=repr(self))))

    def close(self) -> None:  # noqa: B027 - a hook with a default, not abstract
        """Release connections or handles; the default holds none."""

    def _admit(self, data: BlobData) -> bytes:
        """``data`` as bytes, or ``BlobTooLargeError`` before anything of it is kept or sent."""
        data = _as_bytes(data)
        _refuse_if_too_large(len(data), limit=self.max_blob_bytes, where=repr(self))
        return data

    def __enter__(self) -> ContentStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class DirectoryStore(ContentStore):
    """Blobs as files in a directory: the embedded default store.

    A blob lives at ``<root>/<first 2 hex digits of its sha256>/<cid>`` (the prefix directory keeps
    any one directory small; ``sha256sum`` of a file shows where it belongs). Writes go to a unique
    temporary file in ``root``, are fsynced, then renamed into place, so readers and concurrent
    writers (threads or processes) only ever see whole blobs. A crash mid-write can leave a
    ``.tmp-*`` file in ``root``, never a partial blob. POSIX only (directory fsync).
    """

    def __init__(self, path: str | os.PathLike[str], *, max_blob_bytes: int = DEFAULT_MAX_BLOB_BYTES) -> None:
        self.root = Path(path)
        self.max_blob_bytes = _positive_limit(max_blob_bytes)
        self.root.mkdir(parents=True, exist_ok=True)

    def __repr__(self) -> str:
        return f"DirectoryStore({str(self.root)!r})"

    def put(self, data: BlobData) -> str:
        data = self._admit(data)
        return self.put_stream((data,))

    def put_stream(self, chunks: Iterable[BlobData]) -> str:
        hasher = hashlib.sha256()
        with atomic_output(self.root, mode=0o644) as out:  # blobs are public content
            for chunk in _limited(chunks, limit=self.max_blob_bytes, where=repr(self)):
                hasher.update(chunk)
                out.file.write(chunk)
            cid = cid_from_digest(hasher.digest())
            out.target = self._path(cid)
            # Replacing an existing copy is harmless (same bytes) and repairs a corrupt one.
            out.target.parent.mkdir(exist_ok=True)
        return cid

    def begin_put(self, *, sha256: bytes | None = None, size: int | None = None) -> PendingBlob:
        """A blob received piece by piece (an upload): each piece goes to a temporary file in
        ``root`` while it is hashed, so no more than one piece is ever held in memory.
        :meth:`PendingBlob.commit` checks the hash and size, if given, and publishes it;
        :meth:`PendingBlob.abort` (or any failure) leaves nothing behind."""
        return PendingBlob(self, sha256=sha256, size=size)

    def get(self, cid: str) -> bytes:
        path = self._path(cid)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise BlobNotFoundError(cid, where=repr(self)) from None
        return _verified(cid, data, where=repr(self))

    def has(self, cid: str) -> bool:
        return self._path(cid).is_file()

    def size(self, cid: str) -> int:
        try:
            return self._path(cid).stat().st_size
        except FileNotFoundError:
            raise BlobNotFoundError(cid, where=repr(self)) from None

    def _path(self, cid: str) -> Path:
        digest = digest_from_cid(cid)  # also refuses anything that could escape the root
        return self.root / digest.hex()[:2] / cid_from_digest(digest)


class PendingBlob:
    """A blob being written to a :class:`DirectoryStore` (see :meth:`DirectoryStore.begin_put`)."""

    def __init__(self, store: DirectoryStore, *, sha256: bytes | None, size: int | None) -> None:
        limit = store.max_blob_bytes
        if size is not None:
            _refuse_if_too_large(size, limit=limit, where=repr(store))
        self.store, self.expected_sha256, self.expected_size = store, sha256, size
        self.limit = limit if size is None else size
        self.received = 0
        self._hasher = hashlib.sha256()
        fd, name = tempfile.mkstemp(dir=store.root, prefix=".tmp-")
        self.temp = Path(name)
        self._file: BinaryIO | None = os.fdopen(fd, "wb")

    def write(self, chunk: BlobData) -> None:
        """Adds a piece; BlobTooLargeError (and nothing kept) past the limit or the announced size."""
        if self._file is None:
            raise StoreError("write to a blob that was committed or aborted")
        self.received += len(chunk)
        if self.received > self.limit:
            self.abort()
            if self.expected_size is not None and self.received <= self.store.max_blob_bytes:
                raise StoreError(f"the upload sent more than the {self.expected_size} bytes it announced")
            raise BlobTooLargeError(limit=self.store.max_blob_bytes, where=repr(self.store))
        self._hasher.update(chunk)
        self._file.write(chunk)

    def commit(self) -> str:
        """Publishes the blob under its CID once its bytes are durable; CorruptBlobError (and
        nothing kept) when they do not hash to the announced sha256, StoreError when fewer bytes
        than announced arrived."""
        if self._file is None:
            raise StoreError("commit of a blob that was committed or aborted")
        digest = self._hasher.digest()
        try:
            if self.expected_size is not None and self.received != self.expected_size:
                raise StoreError(f"the upload announced {self.expected_size} bytes and sent {self.received}")
            if self.expected_sha256 is not None and digest != self.expected_sha256:
                raise CorruptBlobError(
                    cid_from_digest(self.expected_sha256),
                    actual_cid=cid_from_digest(digest),
                    where="the upload",
                )
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            self._file = None
            cid = cid_from_digest(digest)
            target = self.store._path(cid)
            target.parent.mkdir(exist_ok=True)
            self.temp.chmod(0o644)  # blobs are public content; mkstemp creates files 0600
            os.replace(self.temp, target)
        except BaseException:
            self.abort()
            raise
        fsync_directory(target.parent)
        return cid

    def abort(self) -> None:
        """Drops what was received (idempotent)."""
        if self._file is not None:
            self._file.close()
            self._file = None
        self.temp.unlink(missing_ok=True)


class MemoryStore(ContentStore):
    """In-memory twin of :class:`DirectoryStore` for tests: same limits, same errors, same checks."""

    def __init__(self, *, max_blob_bytes: int = DEFAULT_MAX_BLOB_BYTES) -> None:
        self.max_blob_bytes = _positive_limit(max_blob_bytes)
        self._blobs: dict[bytes, bytes] = {}

    def __repr__(self) -> str:
        return f"MemoryStore(<{len(self._blobs)} blobs>)"

    def put(self, data: BlobData) -> str:
        data = self._admit(data)
        digest = digest_of(data)
        self._blobs[digest] = data
        return cid_from_digest(digest)

    def get(self, cid: str) -> bytes:
        data = self._blobs.get(digest_from_cid(cid))
        if data is None:
            raise BlobNotFoundError(cid, where=repr(self))
        return _verified(cid, data, where=repr(self))

    def has(self, cid: str) -> bool:
        return digest_from_cid(cid) in self._blobs

    def size(self, cid: str) -> int:
        data = self._blobs.get(digest_from_cid(cid))
        if data is None:
            raise BlobNotFoundError(cid, where=repr(self))
        return len(data)


class HttpStore(ContentStore):
    """Client of a coordinator's store API; trusts nothing the server says.

    ``POST {base}/v1/blobs`` uploads (the server must answer the CID computed here),
    ``GET {base}/v1/blobs/{cid}`` downloads (streamed, size-limited while reading, verified),
    ``HEAD {base}/v1/blobs/{cid}`` answers :meth:`has` and :meth:`size`.

    Connection errors, timeouts and 5xx answers are retried ``retries`` times with exponential
    backoff (``backoff``, then twice that, ...); every request is idempotent, uploads included,
    because a blob's name is its content. A 4xx is never retried: 404 raises
    ``BlobNotFoundError``, 413 ``BlobTooLargeError``; a 429 with ``Retry-After`` (the store is
    busy) is retried like a 5xx. ``transport`` swaps the network for an ``httpx`` transport (e.g.
    ``httpx.MockTransport`` in tests).

    A coordinator takes uploads only from a task's participants: ``signer``
    (:class:`fedmarket.uploads.UploadSigner`) signs each put in this process, and only the
    signature travels. :meth:`signed_by` gives a signing view on the same connection.
    """

    def __init__(
        self,
        base_url: str,
        *,
        timeout: float = 30.0,
        retries: int = 3,
        backoff: float = 0.2,
        max_blob_bytes: int = DEFAULT_MAX_BLOB_BYTES,
        transport: httpx.BaseTransport | None = None,
        signer: UploadSigner | None = None,
    ) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise StoreError(f"HttpStore needs an http:// or https:// URL, got {base_url!r}")
        if retries < 0 or backoff < 0 or timeout <= 0:
            raise ValueError("HttpStore needs retries >= 0, backoff >= 0 and timeout > 0")
        self.base_url = base_url.rstrip("/")
        self.retries = retries
        self.backoff = backoff
        self.max_blob_bytes = _positive_limit(max_blob_bytes)
        self.signer = signer
        self._client = httpx.Client(base_url=self.base_url, timeout=timeout, transport=transport)
        self._owns_client = True

    def __repr__(self) -> str:
        return f"HttpStore({self.base_url!r})"

    def signed_by(self, signer: UploadSigner | None) -> HttpStore:
        """This store, its uploads signed by `signer`, over the same connection (closing the view
        leaves the connection to this store)."""
        view = copy.copy(self)
        view.signer, view._owns_client = signer, False
        return view

    def close(self) -> None:
        if self._owns_client:
            self._client.close()

    def put(self, data: BlobData) -> str:
        data = self._admit(data)
        cid = cid_of(data)

        def accept(response: httpx.Response) -> str:
            self._raise_for_status(response, cid)
            answer = _json_object(response, where=repr(self))
            if not _names_cid(answer.get("cid"), cid) or answer.get("size") != len(data):
                raise CorruptBlobError(cid, actual_cid=str(answer.get("cid")), where=repr(self))
            return cid

        headers = {"content-type": "application/octet-stream"}
        if self.signer is not None:
            headers.update(self.signer.headers(digest_of(data), len(data)))
        return self._send("POST", "/v1/blobs", accept, content=data, headers=headers)

    def get(self, cid: str) -> bytes:
        path = _blob_path(cid)

        def download(response: httpx.Response) -> bytes:
            self._raise_for_status(response, cid)
            declared = _content_length(response)
            if declared is not None:
                _refuse_if_too_large(declared, limit=self.max_blob_bytes, where=repr(self))
            data = b"".join(_limited(response.iter_bytes(), limit=self.max_blob_bytes, where=repr(self)))
            return _verified(cid, data, where=repr(self))

        return self._send("GET", path, download)

    def has(self, cid: str) -> bool:
        return self._head(cid) is not None

    def size(self, cid: str) -> int:
        size = self._head(cid)
        if size is None:
            raise BlobNotFoundError(cid, where=repr(self))
        return size

    def _head(self, cid: str) -> int | None:
        """Size from a HEAD request, or None when the server does not hold the blob."""

        def read_size(response: httpx.Response) -> int | None:
            if response.status_code == 404:
                return None
            self._raise_for_status(response, cid)
            size = _content_length(response)
            if size is None:
                raise StoreError(f"{self!r} answered HEAD for {cid} without a Content-Length")
            return size

        return self._send("HEAD", _blob_path(cid), read_size)

    def _send(self, method: str, path: str, handle: Callable[[httpx.Response], _T], **request: Any) -> _T:
        """Send a request and hand the open response to ``handle``, retrying transient failures."""
        attempts = self.retries + 1
        reason = ""
        for attempt in range(attempts):
            if attempt:
                time.sleep(self.backoff * 2 ** (attempt - 1))
            try:
                with self._client.stream(method, path, **request) as response:
                    busy = response.status_code == 429 and "retry-after" in response.headers
                    if response.status_code < 500 and not busy:
                        return handle(response)
                    reason = f"{method} {path} answered HTTP {response.status_code}"
            except httpx.TransportError as exc:  # connect/read errors and timeouts, also mid-download
                reason = f"{method} {path}: {type(exc).__name__}: {exc}"
        raise StoreUnavailableError(where=self.base_url, attempts=attempts, reason=reason)

    def _raise_for_status(self, response: httpx.Response, cid: str) -> None:
        status = response.status_code
        if 200 <= status < 300:
            return
        if status == 404:
            raise BlobNotFoundError(cid, where=repr(self))
        if status == 413:
            raise BlobTooLargeError(limit=None, where=repr(self))
        if status in (401, 403) and response.request.method == "POST":
            detail = response.read()[:500].decode("utf-8", "replace")
            who = (
                f"signed by {self.signer.address}" if self.signer else "unsigned: pass HttpStore(signer=...)"
            )
            raise StoreError(f"{self!r} refused the upload of {cid} ({who}): HTTP {status} {detail}")
        detail = response.read()[:500].decode("utf-8", "replace")
        raise StoreError(f"{self!r} refused {response.request.method} for {cid}: HTTP {status} {detail}")


def open_store(
    target: str | os.PathLike[str], *, max_blob_bytes: int = DEFAULT_MAX_BLOB_BYTES
) -> ContentStore:
    """The store a setting names: ``http(s)://...`` -> :class:`HttpStore`, ``memory://`` -> a new
    empty :class:`MemoryStore`, ``file://PATH`` or a plain path -> :class:`DirectoryStore`."""
    text = os.fspath(target)
    if text.startswith(("http://", "https://")):
        return HttpStore(text, max_blob_bytes=max_blob_bytes)
    if text.startswith("memory://"):
        return MemoryStore(max_blob_bytes=max_blob_bytes)
    if text.startswith("file://"):
        text = text.removeprefix("file://")
    elif "://" in text:
        raise StoreError(f"unsupported store URL {text!r}: use http(s)://..., memory://, or a directory path")
    return DirectoryStore(text, max_blob_bytes=max_blob_bytes)


# --- helpers shared by the back ends -------------------------------------------------------------


def _as_bytes(data: BlobData) -> bytes:
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"a blob is bytes, got {type(data).__name__}")
    return bytes(data)


def _positive_limit(limit: int) -> int:
    if limit <= 0:
        raise ValueError(f"max_blob_bytes must be positive, got {limit}")
    return limit


def _refuse_if_too_large(size: int, *, limit: int, where: str) -> None:
    if size > limit:
        raise BlobTooLargeError(limit=limit, size=size, where=where)


def _limited(chunks: Iterable[BlobData], *, limit: int, where: str) -> Iterator[bytes]:
    """Pass chunks through, raising ``BlobTooLargeError`` as soon as their total passes ``limit``."""
    total = 0
    for chunk in chunks:
        chunk = _as_bytes(chunk)
        total += len(chunk)
        if total > limit:
            raise BlobTooLargeError(limit=limit, where=where)
        yield chunk


def _verified(cid: str, data: bytes, *, where: str) -> bytes:
    actual = digest_of(data)
    if actual != digest_from_cid(cid):
        raise CorruptBlobError(cid, actual_cid=cid_from_digest(actual), where=where)
    return data


def _blob_path(cid: str) -> str:
    return f"/v1/blobs/{normalize_cid(cid)}"


def _content_length(response: httpx.Response) -> int | None:
    value = response.headers.get("content-length")
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        raise StoreError(f"server sent a malformed Content-Length {value!r}") from None


def _names_cid(value: object, cid: str) -> bool:
    """Whether a server's answer names ``cid`` (in any spelling of it)."""
    try:
        return isinstance(value, str) and normalize_cid(value) == cid
    except InvalidCIDError:
        return False


def _json_object(response: httpx.Response, *, where: str) -> dict[str, Any]:
    try:
        answer = json.loads(response.read())
    except ValueError:
        answer = None
    if not isinstance(answer, dict):
        raise StoreError(f"{where} answered an upload without a JSON object {{'cid', 'size'}}")
    return answer
