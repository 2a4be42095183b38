"""Serving the app: uvicorn with the coordinator's connection bounds.

uvicorn closes idle keep-alive connections (`timeout_keep_alive`) and answers 503 past
`limit_concurrency` open connections, but a connection that never finishes sending its request
headers is kept forever (slowloris). :class:`BoundedH11Protocol` gives every request
`header_timeout` seconds to send its headers, from the moment the connection opens or the
previous response ends; a request body is bounded by the upload route's own read timeouts.
"""

from __future__ import annotations

import asyncio

import h11
import uvicorn
from fastapi import FastAPI
from uvicorn.protocols.http.h11_impl import H11Protocol

from backend.settings import Settings


class BoundedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol, closing connections that take over `header_timeout` s to send headers."""

    header_timeout: float = 10.0  # set per server by :func:`uvicorn_config`

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._header_timer: asyncio.TimerHandle | None = None
        self._arm_header_timer()

    def _arm_header_timer(self) -> None:
        self._cancel_header_timer()
        self._header_timer = self.loop.call_later(self.header_timeout, self._headers_too_slow)

    def _cancel_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_too_slow(self) -> None:
        self._header_timer = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self.transport.close()  # nothing to answer: no whole request arrived

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE:  # the request line and headers are in
            self._cancel_header_timer()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing() and self.conn.their_state is h11.IDLE:
            self._arm_header_timer()  # the next request on this connection gets the same bound

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_header_timer()
        super().connection_lost(exc)


def uvicorn_config(app: FastAPI, settings: Settings, **options) -> uvicorn.Config:
    """The uvicorn config the coordinator serves with: its host and port, and its connection bounds."""
    protocol = type(
        "CoordinatorH11Protocol", (BoundedH11Protocol,), {"header_timeout": settings.header_timeout}
    )
    return uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        http=protocol,
        timeout_keep_alive=settings.timeout_keep_alive,
        limit_concurrency=settings.limit_concurrency,
        **options,
    )
