"""/healthz: 200 when the database, the chain and the store answer; 503 naming what does not.
/v1/info: who this coordinator is."""

from __future__ import annotations

from fastapi.testclient import TestClient
from web3 import Web3

from backend.app import create_app
from fedmarket.chain import MarketClient
from fedmarket.cid import cid_of, digest_of
from fedmarket.deploy import deploy_market
from fedmarket.devnet import Anvil
from fedmarket.uploads import UploadSigner
from testkit.coordinator import digits_spec, task_terms
from testkit.market import MarketEnv, coordinator_settings


def test_healthz_reports_every_dependency_ok(coordinator_app):
    response = coordinator_app.http.get("/healthz")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok" and body["db"] == "ok" and body["store"] == "ok"
    assert body["chain"].startswith("ok (block ")
    assert coordinator_app.api.health()["status"] == "ok"


def test_info_names_the_coordinator_to_put_in_task_terms(coordinator_app, coordinator):
    info = coordinator_app.http.get("/v1/info").json()
    deployment = coordinator_app.env.deployment
    assert info == {
        "coordinator": coordinator.address,  # the devnet key: dev account #2
        "chain_id": deployment.chain_id,
        "market": coordinator_app.market.market_address,
        "token": coordinator_app.market.token_address,
        "deploy_block": deployment.deploy_block,
        "orchestrates": "tasks naming this coordinator that were posted through its POST /v1/tasks; any "
        "other task naming it gets no rounds started and no gas from it",
        "owner_allowlist": [],
        "relay_deadline_margin": 60,
        "max_blob_bytes": 64 * 2**20,
        "upload_quota_bytes_per_hour": 1024 * 2**20,
    }


def test_healthz_is_503_while_the_chain_is_unreachable(artifacts, deployer, coordinator, tmp_path):
    # A chain of its own, to stop under the running coordinator, with one task on it.
    with Anvil() as node:
        deployment = deploy_market(
            Web3(Web3.HTTPProvider(node.url)),
            deployer,
            token=artifacts["FMToken"],
            market=artifacts["TaskMarket"],
        )
        deployment_file = tmp_path / "deployments" / "local.json"
        deployment.write(deployment_file)
        terms = task_terms(digits_spec(), coordinator.address)
        task_id = (
            MarketClient.connect(node.url, deployment, private_key=deployer.key).create_task(terms).task_id
        )
        settings = coordinator_settings(
            MarketEnv(deployment, deployment_file, node.url),
            tmp_path / "coordinator",
            run_orchestrators=False,
        )
        with TestClient(create_app(settings)) as http:
            assert http.get("/healthz").status_code == 200
            assert http.get(f"/v1/tasks/{task_id}").json()["phase"] == "none"
            node.stop()
            response = http.get("/healthz")
            assert response.status_code == 503
            body = response.json()
            assert body["status"] == "degraded"
            assert body["chain"].startswith("error")
            assert body["db"] == "ok" and body["store"] == "ok"
            # Everything that does not need the chain still works: reads of the store.
            cid = http.app.state.services.store.put(b"still here")
            assert http.get(f"/v1/blobs/{cid}").content == b"still here"
            # An upload's uploader is checked on chain: refused as unavailable, nothing stored.
            headers = UploadSigner(deployer, deployment.chain_id, deployment.market, task_id).headers(
                digest_of(b"not now"), len(b"not now")
            )
            upload = http.post("/v1/blobs", content=b"not now", headers=headers)
            assert upload.status_code == 503 and upload.json()["error"] == "ChainUnavailable", upload.text
            assert not http.app.state.services.store.has(cid_of(b"not now"))
            assert [t["task_id"] for t in http.get("/v1/tasks").json()["tasks"]] == [task_id]
            # What needs the chain says so, as a 503 rather than a crash.
            response = http.get(f"/v1/tasks/{task_id}")
            assert response.status_code == 503, response.text
            assert response.json()["error"] == "ChainUnavailable"
