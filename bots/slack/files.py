"""Files attached to a Slack message: images, documents and videos downloaded for the
core, the rest named.

Private file URLs need the bot token, and the token goes only to Slack's own file hosts
(or the configured Web API host, a proxy or a test server): never to an external file's
URL. The bytes go to the core (which sends them to the model as data URLs). Neither the
token nor the URL is logged or put in a note. Nothing here raises: a file that cannot be
read becomes a note, and the message is answered all the same.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx
from slack_sdk.web.async_client import AsyncWebClient

from bots.slack.errors import error_kind
from core.images import ACCEPTED_MIMES, sniff_mime
from core.media.documents import looks_like_document
from core.types import Upload

__all__ = ["READABLE", "Attachments", "fetch_attachments", "token_allowed"]

log = logging.getLogger(__name__)
_LABELS = {"image/webp": "WebP"}


def _readable(mimes: Sequence[str]) -> str:
    names = [_LABELS.get(m, m.partition("/")[2].upper()) for m in mimes]
    return f"{', '.join(names[:-1])} and {names[-1]} images"


READABLE = _readable(ACCEPTED_MIMES) + (  # what the core reads, for people
    ", videos and documents (PDF, Word, PowerPoint, Excel, text, Markdown, CSV, HTML)")


@dataclass(frozen=True, slots=True)
class Attachments:
    """What came of a message's files: image bytes, and notes for the person."""

    images: tuple[bytes, ...] = ()
    notes: tuple[str, ...] = ()
    files: tuple[Upload, ...] = ()  # documents, read into text by the core
    skipped: tuple[str, ...] = ()  # names of files the model will not see


def _mb(size: int) -> str:
    return f"{size / (1024 * 1024):.1f} MB"


def token_allowed(url: str, api_url: str) -> bool:
    """Whether the bot token may go to ``url``: Slack's file hosts over HTTPS, or the
    configured Web API's own scheme, host and port."""
    try:
        target, api = urlsplit(url), urlsplit(api_url)
        host, port = target.hostname or "", target.port
    except ValueError:
        return False
    if target.scheme == "https" and port in (None, 443) and (
            host == "files.slack.com" or host.endswith(".slack.com")):
        return True
    return (target.scheme, host, port) == (api.scheme, api.hostname or "", api.port)


class _TooLarge(Exception):
    pass


class _Skip(Exception):
    """A file the model will not see; the message is the note for the person."""


async def _download(http: httpx.AsyncClient, url: str, token: str, limit: int) -> bytes:
    headers = {"Authorization": f"Bearer {token}"}
    # httpx drops the Authorization header on a redirect to another origin.
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
    try:
        resp = await client.files_info(file=str(file["id"]))
    except Exception as err:  # SlackApiError, timeouts, connection errors, bad JSON
        log.warning("files.info failed: %s", error_kind(err))
        name = file.get("name") or "a file"
        raise _Skip(f"I couldn't open *{name}*; please try sending it again.") from None
    info = resp.get("file")
    return info if isinstance(info, Mapping) else file


async def _image(file: Mapping[str, Any], name: str, *, http: httpx.AsyncClient, token: str,
                 api_url: str, max_bytes: int, audio: bool = False) -> bytes | Upload:
    """The image bytes (or the document) of one file, or ``_Skip`` with the reason for
    the person."""
    mime = str(file.get("mimetype") or "").lower()
    kind = str(file.get("pretty_type") or file.get("filetype") or "file")
    if file.get("is_external") or file.get("mode") == "external":
        raise _Skip(f"*{name}* ({kind}) is stored outside Slack, so I can't open it; "
                    "please upload it to Slack instead.")
    document = mime not in ACCEPTED_MIMES and looks_like_document(name, mime)
    # An audio clip (or audio file) goes to the speech model when one is set up.
    document = document or (audio and (mime.startswith("audio/")
                                       or file.get("subtype") == "slack_audio"))
    # A video (an upload, or a clip recorded in Slack) is sampled into frames by the core.
    document = document or mime.startswith("video/") or file.get("subtype") == "slack_video"
    if (mime not in ACCEPTED_MIMES and not document) or file.get("mode") == "snippet":
        raise _Skip(f"I can only read {READABLE}, so I skipped *{name}* ({kind}).")
    size = int(file.get("size") or 0)
    if size > max_bytes:
        raise _Skip(f"*{name}* is {_mb(size)}; I read files up to {_mb(max_bytes)}, "
                    "so I skipped it.")
    url = file.get("url_private_download") or file.get("url_private")
    if not isinstance(url, str) or not url:
        raise _Skip(f"I couldn't open *{name}*.")
    if not token_allowed(url, api_url):
        log.warning("file %s is not on a Slack file host; not downloaded", file.get("id"))
        raise _Skip(f"I couldn't open *{name}*: it is not stored in Slack.")
    try:
        data = await _download(http, url, token, max_bytes)
    except _TooLarge:
        raise _Skip(f"*{name}* is larger than {_mb(max_bytes)}, so I skipped it.") from None
    except httpx.HTTPError as err:
        # The URL and the token stay out of the log: only the failure's kind.
        status = err.response.status_code if isinstance(err, httpx.HTTPStatusError) \
            else type(err).__name__
        log.warning("could not download file %s: %s", file.get("id"), status)
        raise _Skip(f"I couldn't download *{name}*; please try sending it again.") from None
    if document:
        return Upload(name, data, mime)
    if sniff_mime(data) is None:
        raise _Skip(f"*{name}* is not an image I can read (I read {READABLE}), "
                    "so I skipped it.")
    return data


async def fetch_attachments(
    files: Sequence[Mapping[str, Any]], *, client: AsyncWebClient, http: httpx.AsyncClient,
    token: str, api_url: str, max_bytes: int, audio: bool = False,
) -> Attachments:
    """Download the images and documents (and with ``audio``, recordings) among
    ``files`` (size checked first); name the rest."""
    images: list[bytes] = []
    documents: list[Upload] = []
    notes: list[str] = []
    skipped: list[str] = []
    for raw in files:
        file: Mapping[str, Any] = raw if isinstance(raw, Mapping) else {}
        name = str(file.get("name") or file.get("title") or "a file")
        try:
            file = await _resolve(client, file)
            name = str(file.get("name") or file.get("title") or "a file")
            got = await _image(file, name, http=http, token=token, api_url=api_url,
                               max_bytes=max_bytes, audio=audio)
            if isinstance(got, Upload):
                documents.append(got)
            else:
                images.append(got)
        except _Skip as skip:
            skipped.append(name)
            notes.append(str(skip))
        except Exception as err:  # a garbled file object, an unexpected client error
            log.warning("could not read file %s: %s", file.get("id"), type(err).__name__)
            skipped.append(name)
            notes.append(f"I couldn't open *{name}*.")
    return Attachments(tuple(images), tuple(notes), files=tuple(documents), skipped=tuple(skipped))
