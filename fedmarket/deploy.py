"""Deploy FMToken + TaskMarket and read/write `deployments/<network>.json`.

The deployments file is everything a client needs to talk to the market: chain id, addresses,
ABIs and the deploy block (where an indexer starts). `ape run deploy` and the tests both go
through :func:`deploy_market`, so there is one deployment procedure.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import cast

from eth_account.signers.local import LocalAccount
from eth_typing import ABI
from web3 import Web3

from fedmarket.abi import RevertDecoder
from fedmarket.contracts import Artifact
from fedmarket.errors import DeploymentNotFoundError
from fedmarket.files import atomic_write
from fedmarket.transactions import TransactionSender, map_transport_errors

TOKEN_DECIMALS = 18
ONE_TOKEN = 10**TOKEN_DECIMALS
INITIAL_SUPPLY = 1_000_000_000 * ONE_TOKEN  # fixed supply, all minted to the deployer
DEFAULT_SETTLEMENT_GRACE = 3600  # seconds the coordinator has to settle before anyone may abort


@dataclass(frozen=True)
class Deployment:
    network: str
    chain_id: int
    token: str
    market: str
    deploy_block: int
    token_abi: list[dict]
    market_abi: list[dict]

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str) -> Deployment:
        return cls(**json.loads(text))

    def write(self, path: Path) -> None:
        """Atomic write, so a reader never sees half a file."""
        atomic_write(path, self.to_json().encode())

    @classmethod
    def load(cls, path: Path | str) -> Deployment:
        path = Path(path)
        if not path.is_file():
            raise DeploymentNotFoundError(
                f"no deployments file at {path}: deploy first (`make deploy` or `ape run deploy`)"
            )
        return cls.from_json(path.read_text())

    def token_contract(self, w3: Web3):
        return w3.eth.contract(address=Web3.to_checksum_address(self.token), abi=cast(ABI, self.token_abi))

    def market_contract(self, w3: Web3):
        return w3.eth.contract(address=Web3.to_checksum_address(self.market), abi=cast(ABI, self.market_abi))

    def revert_decoder(self) -> RevertDecoder:
        return RevertDecoder([self.market_abi, self.token_abi])


def deploy_market(
    w3: Web3,
    deployer: LocalAccount,
    *,
    token: Artifact,
    market: Artifact,
    network: str = "local",
    supply: int = INITIAL_SUPPLY,
    settlement_grace: int = DEFAULT_SETTLEMENT_GRACE,
    admin: str | None = None,
) -> Deployment:
    """Deploys the token (whole supply to the deployer) and the market; the deployer (or
    `admin`) may pause the market."""
    sender = TransactionSender(w3, deployer, decoder=RevertDecoder([token.abi, market.abi]))
    token_address, receipt = sender.deploy(token.abi, token.bytecode, deployer.address, supply)
    market_address, _ = sender.deploy(
        market.abi, market.bytecode, token_address, settlement_grace, admin or deployer.address
    )
    with map_transport_errors(w3, "reading the chain id"):
        chain_id = w3.eth.chain_id
    return Deployment(
        network=network,
        chain_id=chain_id,
        token=token_address,
        market=market_address,
        deploy_block=receipt["blockNumber"],
        token_abi=token.abi,
        market_abi=market.abi,
    )


def fund_accounts(
    w3: Web3,
    deployment: Deployment,
    funder: LocalAccount,
    recipients: Sequence[str],
    *,
    tokens: int,
    eth: int = 0,
) -> None:
    """Sends `tokens` (base units) and, when `eth` > 0, that much wei to each recipient."""
    sender = TransactionSender(w3, funder, decoder=deployment.revert_decoder())
    token = deployment.token_contract(w3)
    for recipient in recipients:
        if tokens:
            sender.transact(token.functions.transfer(recipient, tokens))
        if eth:
            sender.send_value(recipient, eth)
