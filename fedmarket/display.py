"""How fedmarket's commands speak to people: FMT amounts, times, durations, log lines, the version.

Every command (trainer, validator, coordinator, ``fedmarket``, the demo) formats through here, so
an amount or a time reads the same everywhere. Human messages show FMT (``1,000.0000 FMT``);
JSON outputs keep exact base units as decimal strings, as the round report does. Times are ISO
8601 in UTC (``2025-05-01T12:00:00Z``).
"""

from __future__ import annotations

import importlib.metadata
import logging
import tomllib
from datetime import UTC, datetime
from decimal import ROUND_DOWN, Decimal, InvalidOperation
from pathlib import Path

import typer

from fedmarket.deploy import ONE_TOKEN

__all__ = [
    "LOG_FORMAT",
    "IsoFormatter",
    "duration",
    "fmt",
    "iso_time",
    "package_version",
    "parse_tokens",
    "tokens",
    "version_option",
]

_DIGITS = Decimal("0.0001")  # FMT shown to 4 decimals
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def tokens(amount: int) -> str:
    """Base units as FMT, 4 decimals, rounded down (a message never shows more than there is);
    a positive amount too small to show reads ``<0.0001``, not zero."""
    if 0 < amount < ONE_TOKEN // 10_000:
        return "<0.0001"
    value = (Decimal(amount) / ONE_TOKEN).quantize(_DIGITS, rounding=ROUND_DOWN)
    return f"{value:,.4f}"


def fmt(amount: int) -> str:
    """``tokens(amount)`` with its unit: ``12.5000 FMT``."""
    return f"{tokens(amount)} FMT"


def parse_tokens(text: str | float) -> int:
    """An FMT amount a person typed (``12.5``) in base units, exactly (no float rounding)."""
    try:
        value = Decimal(str(text)) * ONE_TOKEN
    except InvalidOperation:
        raise ValueError(f"{text!r} is not an FMT amount") from None
    if value < 0:
        raise ValueError(f"{text!r} is negative: an FMT amount is 0 or more")
    if value != value.to_integral_value():
        raise ValueError(f"{text!r} has more than 18 decimals: 1 FMT is 10^18 base units")
    return int(value)


def iso_time(timestamp: float) -> str:
    """A Unix time (a block timestamp, a log record) as ISO 8601 UTC to the second."""
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def duration(seconds: float) -> str:
    """A span a person reads: ``42 s``, ``3 min 5 s``, ``2 h 10 min``."""
    whole = max(0, round(seconds))
    if whole < 60:
        return f"{whole} s"
    minutes, secs = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes} min {secs} s" if secs else f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if minutes else f"{hours} h"


class IsoFormatter(logging.Formatter):
    """Log records stamped in ISO 8601 UTC with milliseconds (``2025-05-01T12:00:00.123Z``)."""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802
        stamp = datetime.fromtimestamp(record.created, UTC)
        return stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{stamp.microsecond // 1000:03d}Z"


def package_version() -> str:
    """The installed package's version; from a source tree that was never installed, the version
    pyproject.toml declares; ``unknown`` if neither can be read."""
    try:
        return importlib.metadata.version("fedmarket")
    except importlib.metadata.PackageNotFoundError:
        pass
    try:
        project = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())
        return f"{project['project']['version']}+source"
    except (OSError, KeyError, tomllib.TOMLDecodeError):
        return "unknown"


def version_option(prog: str):
    """A typer ``--version`` option for a command group's callback: prints ``prog <version>`` and
    exits before anything else runs (no chain, no server)."""

    def show(value: bool) -> None:
        if value:
            typer.echo(f"{prog} {package_version()}")
            raise typer.Exit()

    return typer.Option("--version", callback=show, is_eager=True, help="Print the version and exit.")
