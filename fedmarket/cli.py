"""`fedmarket`: commands for anyone, holding no key.

    fedmarket verify 1            # every round of task 1
    fedmarket verify 1 3          # round 3 only

`verify` recomputes each round's consensus, payouts, slashes and aggregate model from chain
events and store blobs alone (see :mod:`fedmarket.verify`) and exits 1 on any mismatch, 2 when
it cannot read what it needs. Settings: --rpc-url / FEDMARKET_RPC_URL, --deployment /
FEDMARKET_DEPLOYMENT_FILE, and --store (a coordinator URL, or a store directory).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from fedmarket.chain import MarketClient
from fedmarket.display import version_option
from fedmarket.errors import FedmarketError
from fedmarket.store import ContentStore, DirectoryStore, HttpStore
from fedmarket.verify import Finding, verify_task

app = typer.Typer(help="fedmarket for everyone: audit tasks from public data.", no_args_is_help=True)
console = Console()
errors = Console(stderr=True)


@app.callback()
def _root(version: Annotated[bool, version_option("fedmarket")] = False) -> None:
    """fedmarket for everyone: audit tasks from public data."""


def open_store(location: str) -> ContentStore:
    """An HTTP store for a URL, a directory store for a path."""
    if location.startswith(("http://", "https://")):
        return HttpStore(location)
    return DirectoryStore(Path(location))


@app.command()
def verify(
    task_id: int,
    round_no: Annotated[
        int | None, typer.Argument(metavar="[ROUND]", help="one round (default: all)")
    ] = None,
    rpc_url: Annotated[str, typer.Option("--rpc-url", envvar="FEDMARKET_RPC_URL")] = "http://127.0.0.1:8545",
    deployment: Annotated[Path, typer.Option("--deployment", envvar="FEDMARKET_DEPLOYMENT_FILE")] = Path(
        "deployments/local.json"
    ),
    store: Annotated[
        str,
        typer.Option(
            "--store", envvar="FEDMARKET_COORDINATOR_URL", help="coordinator URL or store directory"
        ),
    ] = "http://127.0.0.1:8000",
) -> None:
    """Recompute every round of TASK from chain events and store blobs; exit 1 on any mismatch."""
    try:
        market = MarketClient.connect(rpc_url, deployment)
        results = verify_task(market, open_store(store), task_id, [round_no] if round_no else None)
    except FedmarketError as exc:
        errors.print(f"[red]error:[/red] cannot verify task {task_id}: {exc}", soft_wrap=True)
        raise typer.Exit(2) from None
    table = Table("round", "status", "facts checked", "result")
    findings: list[Finding] = []
    for result in results:
        findings.extend(result.findings)
        verdict = (
            "[green]verified[/green]"
            if not result.findings
            else f"[red]{len(result.findings)} mismatch(es)[/red]"
        )
        table.add_row(
            str(result.round_no), result.status, str(result.checks), verdict if result.checks else "-"
        )
    console.print(table)
    for finding in findings:
        console.print(f"[red]mismatch[/red] {finding}")
    if findings:
        raise typer.Exit(1)
    console.print(f"[green]task {task_id}: every settled round checks out[/green]")


def main() -> None:
    logging.basicConfig(level=logging.WARNING)
    app()


if __name__ == "__main__":
    main()
