"""The coordinator's memory under stalled uploads (issue 11: 20 stalled 40 MiB bodies took it from
391 to 1,195 MiB).

Starts its own Anvil, deploys the market, runs the real coordinator process (`python -m
backend.cli`), posts a task through it, and opens `--uploads` uploads of `--size-mib` MiB signed by
the task's owner (a participant, so each is admitted and streamed): each sends its headers and
`--send-mib` MiB of its body, then stalls. Once the coordinator has received every byte sent, it
reports the coordinator's resident memory before and while they stall, and checks that nothing of
them was stored once the clients close.

    .venv/bin/python bench/store_memory.py            # 20 x 40 MiB, 20 MiB sent each -> reports/store_memory.json
    .venv/bin/python bench/store_memory.py --uploads 5 --out /tmp/m.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import socket
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # run as a script: the repository's packages
    sys.path.insert(0, str(REPO_ROOT))

from fedmarket.cid import cid_from_digest  # noqa: E402
from fedmarket.uploads import UploadSigner  # noqa: E402

MiB = 1024 * 1024
CHUNK = 1 * MiB


def rss_bytes(pid: int) -> int:
    """Resident memory of process `pid` (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def open_stalled_upload(url: str, signer: UploadSigner, blob: bytes, send: int) -> socket.socket:
    """A socket that sent a signed `POST /v1/blobs` for `blob`, then `send` bytes of it, and stalls."""
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=60)
    headers = signer.headers(hashlib.sha256(blob).digest(), len(blob))
    head = [
        "POST /v1/blobs HTTP/1.1",
        f"Host: {host}:{port}",
        "Content-Type: application/octet-stream",
        f"Content-Length: {len(blob)}",
        *(f"{name}: {value}" for name, value in headers.items()),
    ]
    sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode())
    view = memoryview(blob)
    for start in range(0, send, CHUNK):
        sock.sendall(view[start : min(send, start + CHUNK)])
    return sock


def partial_files(store_dir: Path) -> list[Path]:
    return sorted(store_dir.glob(".tmp-*")) if store_dir.exists() else []


def wait_until(condition, what: str, timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.2)


def received_everything(store_dir: Path, uploads: int, send: int) -> bool:
    """Whether the coordinator has written every byte the stalled clients sent (its temp files)."""
    files = partial_files(store_dir)
    try:
        return len(files) >= uploads and sum(f.stat().st_size for f in files) >= uploads * send
    except FileNotFoundError:
        return False


def stalled_blobs(count: int, size: int) -> list[bytes]:
    """`count` distinct blobs of `size` bytes (one random buffer, a different first 8 bytes each)."""
    base = os.urandom(size)
    return [i.to_bytes(8, "big") + base[8:] for i in range(count)]


def measure(
    url: str, pid: int, store_dir: Path, signer: UploadSigner, *, uploads: int, size: int, send: int
) -> dict:
    """Opens the stalled uploads against a running coordinator and returns the figures."""
    blobs = stalled_blobs(uploads, size)
    cids = {cid_from_digest(hashlib.sha256(blob).digest()) for blob in blobs}
    before = rss_bytes(pid)
    with ExitStack() as sockets:
        for blob in blobs:
            sockets.enter_context(open_stalled_upload(url, signer, blob, send))
        wait_until(
            lambda: received_everything(store_dir, uploads, send), "the coordinator to receive the bodies"
        )
        during = rss_bytes(pid)
        partial = len(partial_files(store_dir))
    wait_until(lambda: not partial_files(store_dir), "the coordinator to drop the stalled uploads")
    kept = [p for p in store_dir.rglob("*") if p.is_file() and p.name in cids]
    return {
        "uploads": uploads,
        "upload_mib": size / MiB,
        "sent_mib_each": send / MiB,
        "rss_before_mib": round(before / MiB, 1),
        "rss_stalled_mib": round(during / MiB, 1),
        "rss_growth_mib": round((during - before) / MiB, 1),
        "partial_files_while_stalled": partial,
        "partial_files_after_close": len(partial_files(store_dir)),
        "stalled_blobs_stored": len(kept),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--uploads", type=int, default=20)
    parser.add_argument("--size-mib", type=int, default=40)
    parser.add_argument("--send-mib", type=int, default=20, help="MiB of each body sent before it stalls")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "reports" / "store_memory.json")
    args = parser.parse_args(argv)

    from web3 import Web3

    from fedmarket.client import CoordinatorClient
    from fedmarket.contracts import compile_contracts
    from fedmarket.deploy import ONE_TOKEN, deploy_market, fund_accounts
    from fedmarket.devnet import Anvil, dev_account, free_port
    from fedmarket.processes import COORDINATOR_COMMAND, ProcessGroup, wait_until_healthy
    from fedmarket.protocol import TaskTerms
    from fedmarket.spec import mlp_spec

    size, send = args.size_mib * MiB, args.send_mib * MiB
    artifacts = compile_contracts()
    deployer, owner = dev_account(0), dev_account(1)
    with tempfile.TemporaryDirectory(prefix="store-memory-") as tmp, Anvil() as node:
        work = Path(tmp)
        w3 = Web3(Web3.HTTPProvider(node.url))
        deployment = deploy_market(w3, deployer, token=artifacts["FMToken"], market=artifacts["TaskMarket"])
        fund_accounts(w3, deployment, deployer, [owner.address], tokens=10_000 * ONE_TOKEN)
        deployment.write(work / "local.json")
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        env = {
            **os.environ, "PYTHONPATH": str(REPO_ROOT), "FEDMARKET_RPC_URL": node.url,
            "FEDMARKET_DEPLOYMENT_FILE": str(work / "local.json"), "FEDMARKET_DATA_DIR": str(work / "coordinator"),
            "FEDMARKET_PORT": str(port), "FEDMARKET_RUN_ORCHESTRATORS": "false",
            # Every stalled upload admitted and held while measured: the bound under test is memory.
            "FEDMARKET_MAX_UPLOADS_PER_ADDRESS": str(args.uploads),
            "FEDMARKET_MAX_CONCURRENT_UPLOADS": str(args.uploads),
            "FEDMARKET_UPLOAD_QUOTA_BYTES_PER_HOUR": str(args.uploads * size + MiB),
            "FEDMARKET_UPLOAD_READ_TIMEOUT": "600",
        }  # fmt: skip
        log = work / "coordinator.log"
        with ProcessGroup(env) as group:
            proc = group.start(COORDINATOR_COMMAND, log=log)
            wait_until_healthy(url, proc, log, timeout=120)
            market = _market(node.url, deployment, owner)
            spec = mlp_spec(name="store-memory", input_dim=4, num_classes=2, hidden=(4,))
            terms = TaskTerms(
                spec_hash=spec.spec_hash(), coordinator=dev_account(2).address, rounds=1, min_trainers=1,
                max_trainers=4, slash_bps=5_000, commit_window=600, reveal_window=300,
                reward_pool=100 * ONE_TOKEN, min_stake=ONE_TOKEN, min_validators=1, max_validators=4,
                validator_share_bps=1_000, score_window=300, score_reveal_window=300,
                min_validator_stake=ONE_TOKEN,
            )  # fmt: skip
            with CoordinatorClient(url) as api:
                task_id = api.post_task(spec=spec, terms=terms, owner_key=owner.key, market=market)["task_id"]
            signer = UploadSigner.for_market(market, task_id)
            result = measure(
                url,
                proc.pid,
                work / "coordinator" / "blobs",
                signer,
                uploads=args.uploads,
                size=size,
                send=send,
            )
    result["command"] = " ".join(["bench/store_memory.py", *(argv if argv is not None else sys.argv[1:])])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    ok = result["rss_growth_mib"] < 100 and result["partial_files_after_close"] == 0
    print(f"coordinator RSS grew {result['rss_growth_mib']} MiB with {args.uploads} stalled uploads: "
          + ("under" if ok else "NOT under") + " the 100 MiB bar")  # fmt: skip
    return 0 if ok else 1


def _market(rpc_url, deployment, account):
    from fedmarket.chain import MarketClient

    return MarketClient.connect(rpc_url, deployment, private_key=account.key)


if __name__ == "__main__":
    raise SystemExit(main())
