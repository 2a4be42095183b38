"""`fedmarket-coordinator`: the coordinator's command line.

    fedmarket-coordinator              # serve (the default): API, indexer, round orchestrators
    fedmarket-coordinator serve
    fedmarket-coordinator --help       # prints help; starts nothing
    fedmarket-coordinator --version

Settings come from the environment only (``FEDMARKET_*``, :class:`backend.settings.Settings`), so
the command and a container read the same; `--help` lists them. Serving itself is
:func:`backend.app.main` (also what ``python -m backend.app`` runs); this module parses the command
line, checks the settings, the deployments file and the chain first, so that a bad one is one line
rather than a traceback, and stamps the coordinator's own log lines with ISO 8601 UTC times.
"""

from __future__ import annotations

import logging
from typing import Annotated, NoReturn

import typer
from pydantic import ValidationError
from rich.console import Console

from backend.settings import Settings
from fedmarket.chain import MarketClient
from fedmarket.display import LOG_FORMAT, IsoFormatter, version_option
from fedmarket.errors import FedmarketError

errors = Console(stderr=True)


def _settings_help() -> str:
    """The FEDMARKET_* variables and their defaults, from Settings itself (one source)."""
    lines = []
    for name, field in Settings.model_fields.items():
        if name == "coordinator_key":
            default = "devnet: dev account #2; required otherwise"
        else:
            default = str(field.description) if field.default is None else str(field.default)
        lines.append(f"  FEDMARKET_{name.upper():<22} {default}")
    return "Settings, from the environment (default after each):\n\n\b\n" + "\n".join(lines)


app = typer.Typer(
    help="Run the fedmarket coordinator: task and blob API, event indexer, round orchestrators.",
    epilog=_settings_help(),
    add_completion=False,
    rich_markup_mode=None,
)


@app.callback(invoke_without_command=True)
def _root(
    ctx: typer.Context, version: Annotated[bool, version_option("fedmarket-coordinator")] = False
) -> None:
    """Run the fedmarket coordinator (`serve` when no command is given)."""
    if ctx.invoked_subcommand is None:
        serve()


@app.command()
def serve() -> None:
    """Serve until Ctrl-C, on FEDMARKET_HOST:FEDMARKET_PORT (default 127.0.0.1:8000)."""
    try:
        settings = Settings()
    except ValidationError as exc:
        problems = "; ".join(error["msg"].removeprefix("Value error, ") for error in exc.errors())
        _fail(f"the coordinator's settings are not valid: {problems}")
    try:  # what the app needs first, checked here so that its absence is one line, not a traceback
        MarketClient.connect(settings.rpc_url, settings.deployment_file)
    except FedmarketError as exc:  # no deployments file, another chain, node unreachable
        _fail(str(exc))
    handler = logging.StreamHandler()
    handler.setFormatter(IsoFormatter(LOG_FORMAT))
    logging.basicConfig(level=logging.INFO, handlers=[handler])  # before app.main's: that one is then a no-op
    from backend.app import main as serve_app  # torch, FastAPI: only once there is something to serve

    serve_app()


def _fail(message: str) -> NoReturn:
    errors.print(f"[red]error:[/red] {message}", soft_wrap=True)
    raise typer.Exit(1)


def main() -> None:
    """Console script `fedmarket-coordinator`."""
    app()


if __name__ == "__main__":
    main()
