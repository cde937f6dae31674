"""WebSockets (the Realtime API's ``/v1/realtime``) relayed unguarded to a model's upstream.

The Realtime API is a conversation of events over one WebSocket: audio and text both ways, tool
calls, interruptions. basguard makes no decision there (its answers are spoken as they are
generated, with no end to hold them back to), so the socket is passed through as the HTTP
passthrough passes embeddings (:mod:`proxy.services.passthrough`):

- the handshake is checked before anything is accepted: the tenant's key (``Authorization:
  Bearer``, or the ``openai-insecure-api-key.KEY`` subprotocol browsers use), the tenant's
  ``passthrough`` setting (family ``realtime``), the model (the ``model`` query parameter, else
  the tenant's ``default_model``). A refusal is an HTTP response carrying the OpenAI error
  envelope (the ASGI denial-response extension), as any other request's error is;
- the upstream's socket is opened next, with the upstream's key from the environment and the
  upstream's name for the model; an upstream that refuses the handshake is refused to the
  client through the one translation of upstream statuses (its body never reaches the client);
- only then is the client's handshake accepted, with the subprotocol the upstream chose; text
  and binary messages are relayed both ways as they come, one at a time per direction, so a
  slow reader slows its writer instead of filling memory (uvicorn pauses reading a client whose
  queue is full; aiohttp's and uvicorn's sends wait for their transport to drain);
- a close on either side closes the other with the same code (a code that cannot be sent, such
  as 1006 for a dropped connection, becomes 1000 towards the upstream and 1014, bad gateway,
  towards the client);
- message sizes are bounded both ways by ``websocket_max_message_bytes``; pings keep both
  sockets' liveness checked (uvicorn's towards the client, aiohttp's heartbeat upstream);
- a server stop closes open sessions at once with 1012 (service restart), which the OpenAI SDK
  and browsers treat as "reconnect": a realtime session can last half an hour, longer than any
  drain;
- a reload that takes a session's permission away (its key revoked, its tenant's passthrough
  setting no longer naming realtime) closes it with 1008 (policy violation) within
  ``REVOCATION_CHECK_SECONDS``: basguard sees no turns in the relayed events to check the key
  at, so each session looks for a new config on a timer (an identity check, nothing more, until
  one arrives).

Paths basguard guards are never relayed: the Responses API's WebSocket mode is guarded
(:mod:`proxy.http.responses_socket`), and a WebSocket to chat or legacy completions is refused, as
passing it unguarded would bypass the tenant's policy.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode

import aiohttp
from starlette.websockets import WebSocket, WebSocketDisconnect

from proxy.errors import EndpointNotAllowed, GatewayError, InvalidRequest
from proxy.runtime.state import RuntimeState, TenantRuntime
from proxy.services.passthrough import GUARDED_PATHS, Passthrough, headers_sent_up
from proxy.upstream.failures import TRANSPORT_ERRORS, transport_error, upstream_status_error
from proxy.upstream.target import UpstreamTarget

__all__ = ["INSECURE_KEY_PREFIX", "OpenedSocket", "WebSocketPassthrough", "presented_key"]

logger = logging.getLogger("basguard.passthrough")

INSECURE_KEY_PREFIX = "openai-insecure-api-key."
"""Browsers cannot set headers on a WebSocket: OpenAI's clients put the key in a subprotocol."""

_SENDABLE_CLOSE_CODES = frozenset({1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012,
                                   1013, 1014})
"""RFC 6455 §7.4: the codes an endpoint may send (1005, 1006 and 1015 only describe a close)."""
_BAD_GATEWAY = 1014
_POLICY_VIOLATION = 1008
REVOCATION_CHECK_SECONDS = 1.0
"""How often an open session looks for a reloaded config that may have revoked it: a revoked
key stops relaying within this long after the reload (a reload itself comes within
``reload_interval_seconds`` of the edit, or at once on SIGHUP)."""
_CLOSE_REASON_BYTES = 123  # a close frame's reason fits in 125 bytes with its code

Relay = Callable[[aiohttp.ClientWebSocketResponse, WebSocket], Coroutine[Any, Any, str | None]]
"""One direction of a session: the upstream's socket to the client's."""


def presented_key(headers: Mapping[str, str], subprotocols: Sequence[str]) -> str | None:
    """The ``Authorization`` value the client presented: its header, or the key a browser sent
    as a subprotocol (as ``Bearer KEY``, which :meth:`RuntimeState.authenticate` reads)."""
    authorization = headers.get("authorization")
    if authorization:
        return authorization
    for protocol in subprotocols:
        if protocol.startswith(INSECURE_KEY_PREFIX):
            return f"Bearer {protocol[len(INSECURE_KEY_PREFIX):]}"
    return None


def _sendable(code: int | None, otherwise: int) -> int:
    if code is None:
        return otherwise
    return code if code in _SENDABLE_CLOSE_CODES or 3000 <= code <= 4999 else otherwise


def _reason(text: str | None) -> str:
    encoded = (text or "").encode()[:_CLOSE_REASON_BYTES]
    return encoded.decode(errors="ignore")


def _upstream_query(query: str, target: UpstreamTarget) -> str:
    """The client's query with ``model`` naming the upstream's model (the rest unchanged)."""
    pairs = [(name, value) for name, value in parse_qsl(query, keep_blank_values=True)
             if name != "model"]
    return urlencode([("model", target.model), *pairs])


@dataclass
class OpenedSocket:
    """An upstream socket opened for a tenant, not yet relayed."""

    tenant: TenantRuntime
    family: str
    target: UpstreamTarget
    upstream: aiohttp.ClientWebSocketResponse
    authorization: str | None
    """The key the client presented (see :func:`presented_key`), checked again on reload."""

    @property
    def subprotocol(self) -> str | None:
        """The subprotocol the upstream chose, which the client's handshake is accepted with."""
        return self.upstream.protocol

    def permission_lost(self, state: RuntimeState) -> str | None:
        """Why ``state`` (a reloaded config) no longer lets this session run, or None."""
        try:
            tenant = state.authenticate(self.authorization)
        except GatewayError as exc:
            return exc.message
        if tenant.name != self.tenant.name:
            return "the API key now belongs to another tenant"
        if not tenant.drop_in.passes(self.family):
            return f"{self.family} is no longer enabled for this tenant (its passthrough setting)"
        return None


class WebSocketPassthrough:
    """Opens upstream sockets for tenants and relays messages between the two."""

    def __init__(
        self, passthrough: Passthrough, *, max_message_bytes: int,
        on_forwarded: Callable[[str, str, str], None] | None = None,
        on_open: Callable[[str], Callable[[], None]] | None = None,
        upstream_to_client: Relay | None = None,
    ) -> None:
        self._passthrough = passthrough
        self.max_message_bytes = max_message_bytes
        self._on_forwarded = on_forwarded or (lambda tenant, family, outcome: None)
        self._on_open = on_open or (lambda tenant: lambda: None)
        """Told each session that opens; returns what to call when it closes."""
        self.upstream_to_client: Relay = upstream_to_client or _upstream_to_client
        """Relays the upstream's messages to the client until the upstream closes; returns what
        went wrong, if anything. Replaceable (a test breaks it to see a session's bug handled)."""

    async def open(
        self, state: RuntimeState, *, path: str, query: str, headers: Mapping[str, str],
        subprotocols: Sequence[str],
    ) -> OpenedSocket:
        """Check the client's handshake and open the upstream's socket.

        Raises the :class:`GatewayError` the client's handshake is refused with."""
        if path in GUARDED_PATHS:
            raise InvalidRequest(
                f"/v1/{path} is guarded over HTTP only (of the guarded endpoints, only "
                "/v1/responses has a WebSocket mode): relaying a WebSocket to it would bypass "
                "the tenant's policy", code="websocket_not_supported")
        family = Passthrough.check_path("GET", path)
        authorization = presented_key(headers, subprotocols)
        tenant = state.authenticate(authorization)
        if not tenant.drop_in.passes(family):
            raise EndpointNotAllowed(
                f"/v1/{path} is not enabled for this tenant (its passthrough setting)")
        model = dict(parse_qsl(query)).get("model")
        target = Passthrough.target(state, tenant, model)
        # The HTTP passthrough's allowlist: the handshake's own headers are aiohttp's to write,
        # and the client's origin is not the gateway's (the gateway is the upstream's client).
        sent_headers = headers_sent_up(headers) | target.identity_headers()
        # The key a browser sent as a subprotocol is the tenant's, not the upstream's.
        protocols = [p for p in subprotocols if not p.startswith(INSECURE_KEY_PREFIX)]
        url = target.url_for(path, _upstream_query(query, target))
        try:
            # The handshake is bounded like any upstream request; messages are not (a session
            # sits quiet while its user thinks): the heartbeat checks the upstream's liveness.
            async with asyncio.timeout(target.timeout_seconds):
                upstream = await self._passthrough.session().ws_connect(
                    url, protocols=protocols, headers=sent_headers,
                    max_msg_size=self.max_message_bytes,
                    timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=10.0),
                    # No per-message compression, as the OpenAI SDK connects by default.
                    heartbeat=30.0, compress=0,
                )
        except aiohttp.WSServerHandshakeError as exc:
            self._on_forwarded(tenant.name, family, f"{exc.status // 100}xx")
            status = exc.status if exc.status >= 400 else 502
            raise upstream_status_error(
                target, status, b"upstream did not upgrade to a WebSocket",
                exc.headers) from exc
        except TRANSPORT_ERRORS as exc:
            self._on_forwarded(tenant.name, family, "error")
            raise transport_error(target, exc) from exc
        self._on_forwarded(tenant.name, family, "1xx")
        return OpenedSocket(tenant, family, target, upstream, authorization)

    async def relay(
        self, client: WebSocket, opened: OpenedSocket, current: Callable[[], RuntimeState]
    ) -> None:
        """Accept the client's handshake, relay messages both ways until either side closes,
        then close the other side; or close both if a reload revokes the session (``current``
        is the config in force now)."""
        upstream = opened.upstream
        closed = self._on_open(opened.tenant.name)
        try:
            try:
                await client.accept(subprotocol=opened.subprotocol)
            except _GONE:
                return  # the client left during the upstream's handshake
            up = asyncio.create_task(_client_to_upstream(client, upstream))
            down = asyncio.create_task(self.upstream_to_client(upstream, client))
            revoked = asyncio.create_task(_until_revoked(opened, current))
            try:
                done, _ = await asyncio.wait((up, down, revoked),
                                             return_when=asyncio.FIRST_COMPLETED)
                if revoked in done:
                    await self._close_revoked(client, opened, revoked.result())
                else:
                    await self._close_other_side(client, opened, up if up in done else down, up)
            finally:
                for task in (up, down, revoked):
                    task.cancel()
                await asyncio.gather(up, down, revoked, return_exceptions=True)
        finally:
            if not upstream.closed:
                await upstream.close()
            closed()

    @staticmethod
    async def _close_revoked(client: WebSocket, opened: OpenedSocket, reason: str) -> None:
        logger.info("realtime session of tenant %r closed by a reload: %s",
                    opened.tenant.name, reason)
        with contextlib.suppress(*_GONE):
            await client.close(_POLICY_VIOLATION, _reason(reason))
        # The upstream's socket is closed (1000) by relay's cleanup.

    @staticmethod
    async def _close_other_side(
        client: WebSocket, opened: OpenedSocket, ended: asyncio.Task[object],
        up: asyncio.Task[object],
    ) -> None:
        upstream = opened.upstream
        outcome: object
        try:
            outcome = ended.result()
        except _GONE:
            if ended is not up:
                return  # the client went away: the upstream's socket is closed after this
            outcome = "took no more messages"
        if ended is up and isinstance(outcome, tuple):
            code, reason = outcome  # the client closed
            await upstream.close(code=_sendable(code, 1000), message=_reason(reason).encode())
            return
        if outcome is not None:
            logger.warning("realtime session for model %r: the upstream %s",
                           opened.target.public_name, outcome)
        code = _BAD_GATEWAY if outcome is not None else _sendable(upstream.close_code,
                                                                   _BAD_GATEWAY)
        with contextlib.suppress(*_GONE):
            await client.close(code)


_GONE = (WebSocketDisconnect, OSError, aiohttp.ClientError, RuntimeError)
"""What sending to a socket whose connection went away raises (starlette raises RuntimeError
for a send after the close)."""


async def _until_revoked(opened: OpenedSocket, current: Callable[[], RuntimeState]) -> str:
    """Wait until a config in force no longer lets ``opened`` run; returns why."""
    checked: RuntimeState | None = None  # the first look also covers a reload mid-handshake
    while True:
        state = current()
        if state is not checked:
            checked = state
            reason = opened.permission_lost(state)
            if reason is not None:
                return reason
        await asyncio.sleep(REVOCATION_CHECK_SECONDS)


async def _client_to_upstream(
    client: WebSocket, upstream: aiohttp.ClientWebSocketResponse
) -> tuple[int | None, str | None]:
    """Forward the client's messages; returns the client's close code and reason."""
    while True:
        message = await client.receive()
        if message["type"] == "websocket.disconnect":
            return message.get("code"), message.get("reason")
        text = message.get("text")
        if text is not None:
            await upstream.send_str(text)
        else:
            await upstream.send_bytes(message.get("bytes") or b"")


async def _upstream_to_client(
    upstream: aiohttp.ClientWebSocketResponse, client: WebSocket
) -> str | None:
    """Forward the upstream's messages until it closes; what went wrong if it broke off."""
    async for message in upstream:
        if message.type is aiohttp.WSMsgType.TEXT:
            await client.send_text(message.data)
        elif message.type is aiohttp.WSMsgType.BINARY:
            await client.send_bytes(message.data)
        elif message.type is aiohttp.WSMsgType.ERROR:
            # A message over the size limit, a protocol error: aiohttp has closed the socket.
            return f"failed: {type(message.data).__name__}"
    if upstream.close_code in (None, 1006):
        return "broke off without a close frame"
    return None
