"""Translate HTTP failures of model endpoints into core errors."""

from __future__ import annotations

import email.utils
import errno
import functools
import json
import re
import time
from collections.abc import Mapping
from datetime import UTC
from typing import Any
from urllib.parse import quote

from core.errors import (
    ModelAuthError,
    ModelBadRequest,
    ModelError,
    ModelRateLimited,
    ModelRefused,
    ModelUnavailable,
)

__all__ = [
    "error_from_body", "error_from_status", "local_resource_fault", "redact",
    "retry_after_seconds",
]

_MODERATION = {
    "data_inspection_failed", "datainspectionfailed", "ipinfringementsuspect",
    "customroleblocked", "faqruleblocked", "content_filter",
}
_KEYLIKE = re.compile(r"\b(sk|xox[abprs]|xapp)-[A-Za-z0-9*._-]{6,}")


# A secret's distinctive part: any run of this many of its characters is masked, so an
# error that echoes part of a key (without its "sk-" prefix, or cut short) shows none of it.
MIN_SECRET_RUN = 8


@functools.lru_cache(maxsize=32)
def _secret_runs(secrets: tuple[str, ...]) -> frozenset[str]:
    runs: set[str] = set()
    for secret in secrets:
        # "123456789:AAH…" (a Telegram token): the bot id before the colon is public.
        for part in secret.split(":"):
            if len(part) >= MIN_SECRET_RUN and not part.isdigit():
                runs.update(part[i:i + MIN_SECRET_RUN]
                            for i in range(len(part) - MIN_SECRET_RUN + 1))
    return frozenset(runs)


def _mask_runs(text: str, runs: frozenset[str]) -> str:
    """``text`` with every stretch covered by a run of ``runs`` replaced by ``***``."""
    size = MIN_SECRET_RUN
    spans: list[list[int]] = []
    for i in range(len(text) - size + 1):
        if text[i:i + size] in runs:
            if spans and i <= spans[-1][1]:
                spans[-1][1] = i + size
            else:
                spans.append([i, i + size])
    if not spans:
        return text
    out, last = [], 0
    for start, end in spans:
        out += [text[last:start], "***"]
        last = end
    out.append(text[last:])
    return "".join(out)


def redact(text: str, *secrets: str | None) -> str:
    """Remove secrets, any run of 8 or more of a secret's characters, and anything shaped
    like an API key from ``text``."""
    given = tuple(s for s in secrets if s and len(s) >= 4)
    for secret in given:
        # Also as a URL carries it: httpx logs a Telegram file URL with the token's
        # ":" as %3A.
        for form in {secret, quote(secret, safe="")}:
            text = text.replace(form, "***")
    runs = _secret_runs(given)
    if runs:
        text = _mask_runs(text, runs)
    return _KEYLIKE.sub("***", text)


# errno values that mean this host, not the server, ran out of something: descriptors
# (process, system), socket buffers, memory, local ports.
_LOCAL_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM,
                           errno.EADDRNOTAVAIL})


def local_resource_fault(err: BaseException) -> str | None:
    """Why ``err`` (an aiohttp or OS error) never reached the server, if it is a local
    shortage (this process's limits, not the model's).

    aiohttp keeps the ``OSError`` of a failed ``socket()``/``connect()`` (EMFILE…) as the
    ``os_error`` of a ``ClientConnectorError``; other layers chain it as the cause.
    """
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in _LOCAL_ERRNOS:
            return f"{errno.errorcode.get(current.errno, current.errno)}: {current.strerror}"
        wrapped = getattr(current, "os_error", None)
        current = wrapped if isinstance(wrapped, OSError) and id(wrapped) not in seen \
            else current.__cause__ or current.__context__
    return None


def retry_after_seconds(headers: Mapping[str, str]) -> float | None:
    """The server's retry hint: ``retry-after-ms``, then ``Retry-After`` seconds or date."""
    raw_ms = headers.get("retry-after-ms")
    if raw_ms:
        try:
            return max(float(raw_ms) / 1000, 0.0)
        except ValueError:
            pass
    raw = headers.get("retry-after")
    if not raw:
        return None
    try:
        return max(float(raw), 0.0)
    except ValueError:
        pass
    try:
        parsed = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError, IndexError):
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return max(parsed.timestamp() - time.time(), 0.0)


def _code_and_message(body: Any) -> tuple[str, str]:
    if not isinstance(body, dict):
        return "", ""
    error = body.get("error")
    inner: dict[str, Any] = error if isinstance(error, dict) else body
    code = str(inner.get("code") or inner.get("type") or "")
    message = str(inner.get("message") or "")
    return code, message.strip()


def error_from_body(
    status: int, body: Any, *, retry_after: float | None = None, model: str = "",
    secrets: tuple[str | None, ...] = (),
) -> ModelError:
    """The core error for an HTTP status and an (OpenAI or DashScope) error body."""
    code, message = _code_and_message(body)
    detail = redact(f"HTTP {status} {code}: {message}".strip(), *secrets)
    lowered = code.lower().replace(".", "")
    if lowered in _MODERATION or "data_inspection" in lowered:
        return ModelRefused(detail, status_code=status, code=code)
    if status in (401, 403) or lowered in ("arrearage", "invalidapikey", "invalid_api_key"):
        user = None
        if lowered == "arrearage":
            user = "The model account is not in good standing (arrears); check the billing."
        return ModelAuthError(detail, status_code=status, code=code, user_message=user)
    if status == 429:
        return ModelRateLimited(detail, status_code=status, code=code, retry_after=retry_after)
    if status in (408, 409) or status >= 500:
        return ModelUnavailable(detail, status_code=status, code=code, retry_after=retry_after)
    if status == 404:
        return ModelBadRequest(
            detail, status_code=status, code=code,
            user_message=f"The model {model!r} was not found at the endpoint; "
            "check CHATBRIDGE_MODEL and CHATBRIDGE_MODEL_BASE_URL.",
        )
    shown = redact(message, *secrets)
    return ModelBadRequest(detail, status_code=status, code=code,
                           user_message=f"The model refused the request: {shown}"
                           if message else None)


def error_from_status(
    status: int, headers: Mapping[str, str], raw: bytes, *, model: str = "",
    secrets: tuple[str | None, ...] = (),
) -> ModelError:
    """Translate an error response: its status, headers (case-insensitive) and body."""
    try:
        body: Any = json.loads(raw)
    except ValueError:
        body = {"message": raw[:200].decode("utf-8", "replace")}
    return error_from_body(
        status, body, retry_after=retry_after_seconds(headers), model=model, secrets=secrets,
    )
