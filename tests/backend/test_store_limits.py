"""The store's bounds on the real coordinator process (`python -m backend.cli`, uvicorn and all),
reproducing what the audit saw: 20 stalled 40 MiB uploads took the process from 391 to 1,195
MiB, 300 slowloris connections were never closed, and uploads were read whole before anything
was checked. The full measurement is `bench/store_memory.py` (20 uploads); here, 5."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from bench.store_memory import MiB, measure, open_stalled_upload, partial_files, stalled_blobs, wait_until
from fedmarket.chain import MarketClient
from fedmarket.cid import cid_from_digest
from fedmarket.client import CoordinatorClient
from fedmarket.devnet import free_port
from fedmarket.processes import COORDINATOR_COMMAND, ProcessGroup, wait_until_healthy
from fedmarket.uploads import UploadSigner
from testkit.coordinator import digits_spec, files_under, task_terms
from testkit.market import coordinator_env


@contextmanager
def coordinator_process(env, data_dir: Path, log: Path, **settings) -> Iterator[tuple[str, int]]:
    """The coordinator as a process on `env`'s market, with FEDMARKET_<NAME> settings; (url, pid)."""
    port = free_port()
    environ = coordinator_env(env, data_dir, port)
    environ.update({f"FEDMARKET_{name.upper()}": str(value) for name, value in settings.items()})
    environ["FEDMARKET_RUN_ORCHESTRATORS"] = "false"
    with ProcessGroup(environ) as group:
        proc = group.start(COORDINATOR_COMMAND, log=log)
        url = f"http://127.0.0.1:{port}"
        wait_until_healthy(url, proc, log, timeout=120)
        yield url, proc.pid


def owners_signer(url: str, env, owner, coordinator) -> UploadSigner:
    """Posts a task through the coordinator; the owner's signer for its uploads."""
    market = MarketClient.connect(env.rpc_url, env.deployment, private_key=owner.key)
    spec = digits_spec()
    with CoordinatorClient(url) as api:
        posted = api.post_task(
            spec=spec, terms=task_terms(spec, coordinator.address), owner_key=owner.key, market=market
        )
    return UploadSigner.for_market(market, posted["task_id"])


def response_of(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (b"" if it closed without a word)."""
    sock.settimeout(60)  # a safety net: the server is expected to close long before
    answer = b""
    while chunk := sock.recv(65536):
        answer += chunk
    return answer


def test_stalled_uploads_do_not_grow_the_coordinators_memory(fresh_market, owner, coordinator, tmp_path):
    data_dir, uploads = tmp_path / "coordinator", 5
    with coordinator_process(
        fresh_market, data_dir, tmp_path / "coordinator.log",
        max_uploads_per_address=uploads, upload_quota_bytes_per_hour=(uploads + 1) * 40 * MiB,
        upload_read_timeout=600,
    ) as (url, pid):  # fmt: skip
        signer = owners_signer(url, fresh_market, owner, coordinator)
        result = measure(url, pid, data_dir / "blobs", signer, uploads=uploads, size=40 * MiB, send=20 * MiB)
        assert result["partial_files_while_stalled"] == uploads  # each admitted and streaming to disk
        assert result["rss_growth_mib"] < 100, result  # the audit saw about 40 MiB per stalled upload
        assert result["partial_files_after_close"] == 0 and result["stalled_blobs_stored"] == 0

        # The address's uploads in flight are capped: one more while they stall is refused at once.
        with ExitStack() as sockets:
            blobs = stalled_blobs(uploads + 1, 1 * MiB)
            for blob in blobs[:uploads]:
                sockets.enter_context(open_stalled_upload(url, signer, blob, 1024))
            wait_until(lambda: len(partial_files(data_dir / "blobs")) == uploads, "the stalled uploads")
            with open_stalled_upload(url, signer, blobs[-1], 0) as extra:
                answer = response_of(extra)
        assert answer.startswith(b"HTTP/1.1 429") and b"TooManyUploads" in answer, answer[:300]


def test_slow_clients_are_cut_off_and_refusals_come_before_the_body(
    fresh_market, owner, coordinator, tmp_path
):
    data_dir = tmp_path / "coordinator"
    with coordinator_process(
        fresh_market, data_dir, tmp_path / "coordinator.log", header_timeout=1, upload_read_timeout=1
    ) as (url, _pid):
        signer = owners_signer(url, fresh_market, owner, coordinator)
        host, port = url.removeprefix("http://").split(":")

        # Slowloris: headers that never end. The audit's 300 such connections were never closed.
        with socket.create_connection((host, int(port))) as slow:
            slow.sendall(b"POST /v1/blobs HTTP/1.1\r\nHost: x\r\nX-Fedmarket-Task: 1\r\n")
            assert response_of(slow) == b""  # closed by the server, nothing answered

        # A stalled body: 408 and the connection closed, the partial upload dropped.
        [blob] = stalled_blobs(1, 4 * MiB)
        with open_stalled_upload(url, signer, blob, 1 * MiB) as stalled:
            answer = response_of(stalled)
        assert answer.startswith(b"HTTP/1.1 408") and b"UploadTimeout" in answer, answer[:300]
        wait_until(lambda: not partial_files(data_dir / "blobs"), "the partial upload to be dropped")

        # Unsigned, 40 MiB announced: refused from the headers, before a byte of the body is sent.
        with socket.create_connection((host, int(port))) as stranger:
            stranger.sendall(b"POST /v1/blobs HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % (40 * MiB))
            answer = response_of(stranger)
        assert answer.startswith(b"HTTP/1.1 401") and b"UploadNotAuthorized" in answer, answer[:300]
        [spec] = files_under(data_dir / "blobs")  # the task's, stored by the coordinator: nothing else
        assert spec.name == signer_spec_cid(signer, fresh_market)


def signer_spec_cid(signer: UploadSigner, env) -> str:
    market = MarketClient.connect(env.rpc_url, env.deployment)
    return cid_from_digest(market.task(signer.task_id).terms.spec_hash)
