"""`ape run deploy`: deploy FMToken + TaskMarket and write deployments/<network>.json.

    ape run deploy                                   # local foundry: connects to Anvil on :8545 or starts one
    ape run deploy --network ethereum:local:foundry --fund 5

On the local network the deployer is Anvil's first dev account and `--fund N` gives the next N
dev accounts 100,000 FMT each (they already hold devnet ETH). On any other network the deployer
key comes from $FEDMARKET_DEPLOYER_KEY. ape compiles the contracts; the deployment itself goes
through `fedmarket.deploy.deploy_market`, the same procedure the tests and the demo use.
"""

from __future__ import annotations

import os
from pathlib import Path

import click
from ape import networks, project
from ape.cli import ConnectedProviderCommand
from eth_account import Account

from fedmarket.contracts import Artifact
from fedmarket.deploy import ONE_TOKEN, deploy_market, fund_accounts
from fedmarket.devnet import dev_account

DEPLOYMENTS_DIR = Path(__file__).resolve().parents[1] / "deployments"


def _artifact(name: str) -> Artifact:
    contract_type = getattr(project, name).contract_type
    abi = [entry.model_dump(mode="json", by_alias=True, exclude_none=True) for entry in contract_type.abi]
    return Artifact(name, abi, contract_type.deployment_bytecode.bytecode)


@click.command(cls=ConnectedProviderCommand)
@click.option(
    "--fund", default=0, show_default=True, help="Dev accounts to fund with tokens (local network only)."
)
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=None,
    help="Deployments file (default deployments/<network>.json).",
)
def cli(fund: int, out: Path | None) -> None:
    provider = networks.provider
    network = provider.network.name
    w3 = provider.web3
    if network == "local":
        deployer = dev_account(0)
    else:
        key = os.environ.get("FEDMARKET_DEPLOYER_KEY")
        if not key:
            raise click.UsageError(f"set FEDMARKET_DEPLOYER_KEY to deploy on {network!r}")
        deployer = Account.from_key(key)

    deployment = deploy_market(
        w3, deployer, token=_artifact("FMToken"), market=_artifact("TaskMarket"), network=network
    )
    path = out or DEPLOYMENTS_DIR / f"{network}.json"
    deployment.write(path)
    click.echo(f"chain id    {deployment.chain_id}")
    click.echo(f"FMToken     {deployment.token}")
    click.echo(f"TaskMarket  {deployment.market}")
    click.echo(f"deploy block {deployment.deploy_block}; written to {path}")

    if fund:
        if network != "local":
            raise click.UsageError("--fund only works on the local devnet")
        recipients = [dev_account(i).address for i in range(1, fund + 1)]
        fund_accounts(w3, deployment, deployer, recipients, tokens=100_000 * ONE_TOKEN)
        for address in recipients:
            click.echo(f"funded      {address} with 100000 FMT")
