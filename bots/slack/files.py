"""Files attached to a Slack message: images downloaded for the model, the rest named.

Private file URLs need the bot token; the bytes go to the core (which sends them to the
model as data URLs). Neither the token nor the URL is logged or put in a note.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

__all__ = ["Attachments", "fetch_attachments"]

log = logging.getLogger(__name__)
READABLE = "PNG, JPEG, GIF, WebP and BMP images"


@dataclass(frozen=True, slots=True)
class Attachments:
    """What came of a message's files: image bytes, and notes for the person."""

    images: tuple[bytes, ...] = ()
    notes: tuple[str, ...] = ()
    skipped: tuple[str, ...] = ()  # names of files the model will not see


def _mb(size: int) -> str:
    return f"{size / (1024 * 1024):.1f} MB"


class _TooLarge(Exception):
    pass


async def _download(http: httpx.AsyncClient, url: str, token: str, limit: int) -> bytes:
    headers = {"Authorization": f"Bearer {token}"}
    async with http.stream("GET", url, headers=headers, follow_redirects=True) as resp:
        resp.raise_for_status()
        if resp.headers.get("content-type", "").startswith("text/html"):
            # Slack answers a missing or wrong token with its sign-in page, not a 401.
            raise httpx.HTTPError("got a web page instead of the file")
        declared = int(resp.headers.get("content-length") or 0)
        if declared > limit:
            raise _TooLarge
        data = bytearray()
        async for chunk in resp.aiter_bytes():
            data += chunk
            if len(data) > limit:
                raise _TooLarge
        return bytes(data)


async def _resolve(client: AsyncWebClient, file: Mapping[str, Any]) -> Mapping[str, Any]:
    # Slack Connect shares arrive as stubs; files.info has the real object.
    if file.get("file_access") != "check_file_info" or not file.get("id"):
        return file
    resp = await client.files_info(file=str(file["id"]))
    info = resp.get("file")
    return info if isinstance(info, Mapping) else file


async def fetch_attachments(
    files: Sequence[Mapping[str, Any]], *, client: AsyncWebClient, http: httpx.AsyncClient,
    token: str, max_bytes: int,
) -> Attachments:
    """Download the images among ``files`` (size checked first); name the rest."""
    images: list[bytes] = []
    notes: list[str] = []
    skipped: list[str] = []
    for raw in files:
        try:
            file = await _resolve(client, raw)
        except SlackApiError as err:
            log.warning("files.info failed: %s", err.response.get("error"))
            file = raw
        name = str(file.get("name") or file.get("title") or "a file")
        mime = str(file.get("mimetype") or "")
        if not mime.startswith("image/"):
            kind = str(file.get("pretty_type") or file.get("filetype") or "file")
            skipped.append(name)
            notes.append(f"I can only read {READABLE}, so I skipped *{name}* ({kind}).")
            continue
        size = int(file.get("size") or 0)
        if size > max_bytes:
            skipped.append(name)
            notes.append(f"*{name}* is {_mb(size)}; I read images up to {_mb(max_bytes)}, "
                         "so I skipped it.")
            continue
        url = file.get("url_private_download") or file.get("url_private")
        if not isinstance(url, str) or not url:
            skipped.append(name)
            notes.append(f"I couldn't open *{name}*.")
            continue
        try:
            images.append(await _download(http, url, token, max_bytes))
        except _TooLarge:
            skipped.append(name)
            notes.append(f"*{name}* is larger than {_mb(max_bytes)}, so I skipped it.")
        except httpx.HTTPError as err:
            # The URL and the token stay out of the log: only the failure's kind.
            status = err.response.status_code if isinstance(err, httpx.HTTPStatusError) \
                else type(err).__name__
            log.warning("could not download file %s: %s", file.get("id"), status)
            skipped.append(name)
            notes.append(f"I couldn't download *{name}*; please try sending it again.")
    return Attachments(tuple(images), tuple(notes), tuple(skipped))
