"""Plain words for why an HTTP exchange failed (refused, DNS, TLS, timeout) and where it went.

For the operator (stderr, logs, ``chatbridge check``), never for the person in a chat.
"""

from __future__ import annotations

import socket
import ssl

import aiohttp
import httpx

__all__ = ["describe", "shown_url"]


def shown_url(url: httpx.URL | str, *secrets: str | None) -> str:
    """``url`` without user info, query or fragment, and with any secret in its path masked."""
    parsed = httpx.URL(str(url))
    text = str(parsed.copy_with(username=None, password=None, query=None, fragment=None))
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "***")
    return text


def _causes(err: BaseException) -> list[BaseException]:
    found: list[BaseException] = []
    current: BaseException | None = err
    while current is not None and current not in found and len(found) < 10:
        found.append(current)
        current = current.__cause__ or current.__context__
    return found


def describe(err: BaseException, *, timeout: float | None = None) -> str:
    """Why ``err`` (an httpx, aiohttp or OS error) happened, in a few words: "connection refused",
    "DNS lookup failed", "TLS failed: …", "timed out connecting", …"""
    causes = _causes(err)
    for cause in list(causes):
        # aiohttp keeps the OS error it wraps as ``os_error``, not as the cause.
        if isinstance(cause, aiohttp.ClientConnectorError):
            causes.append(cause.os_error)
    for cause in causes:
        if isinstance(cause, aiohttp.ClientConnectorCertificateError):
            return f"TLS certificate not accepted ({cause.certificate_error})"
        if isinstance(cause, aiohttp.ClientConnectorDNSError):
            return "DNS lookup failed (no such host, or no DNS)"
        if isinstance(cause, aiohttp.ClientSSLError):
            return f"TLS failed ({cause.os_error})"
        if isinstance(cause, aiohttp.ClientConnectorError) and cause._conn_key.is_ssl \
                and isinstance(cause.os_error, ConnectionResetError):
            # Reset before any HTTP was exchanged over TLS: most often a plain-HTTP server.
            return "TLS failed (the server reset the connection in the handshake: plain HTTP?)"
        if isinstance(cause, ssl.SSLCertVerificationError):
            return f"TLS certificate not accepted ({cause.verify_message or cause.reason})"
        if isinstance(cause, ssl.SSLError):
            return f"TLS failed ({cause.reason or type(cause).__name__})"
        if isinstance(cause, socket.gaierror):
            return "DNS lookup failed (no such host, or no DNS)"
        if isinstance(cause, ConnectionRefusedError):
            return "connection refused (nothing listens on that port)"
        if isinstance(cause, ConnectionResetError):
            return "connection reset by the server"
    after = f" after {timeout:g} s" if timeout else ""
    if isinstance(err, httpx.ConnectTimeout | aiohttp.ConnectionTimeoutError):
        return "timed out connecting"
    if isinstance(err, httpx.ReadTimeout | aiohttp.SocketTimeoutError):
        return f"timed out waiting for the answer{after}"
    if isinstance(err, httpx.WriteTimeout):
        return "timed out sending the request"
    if isinstance(err, httpx.PoolTimeout):
        return "timed out waiting for a free connection"
    if isinstance(err, httpx.RemoteProtocolError | aiohttp.ServerDisconnectedError
                  | aiohttp.ClientPayloadError):
        return "the server closed the connection or spoke no HTTP"
    text = " ".join(str(err).split())
    for cause in causes:
        lowered = str(cause).lower()
        if "name or service not known" in lowered or "nodename nor servname" in lowered \
                or "name resolution" in lowered:
            return "DNS lookup failed (no such host, or no DNS)"
        if "certificate" in lowered or "ssl" in lowered:
            return f"TLS failed ({' '.join(str(cause).split())[:120]})"
        if "connection refused" in lowered or "errno 111" in lowered:
            return "connection refused (nothing listens on that port)"
    return f"{type(err).__name__}: {text[:160]}" if text else type(err).__name__
