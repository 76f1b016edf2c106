"""The built-in ``fetch_url`` tool: read a web page or PDF a person linked, safely.

Redirects are followed by hand so every hop's address is checked (``netguard``); the
connection goes to the checked address (``Host`` and TLS SNI keep the name). Bodies are
read up to a size limit within a time limit; HTML becomes readable text (trafilatura),
PDF becomes text (pypdf), and the result is cut to a token budget with a note saying so.
"""

from __future__ import annotations

import asyncio
import io
import ipaddress
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import Any
from urllib.parse import urljoin, urlsplit, urlunsplit

import httpx

from core.config import config_table
from core.errors import ConfigError
from core.tokens import EstimateCounter, TokenCounter
from core.tools.netguard import AddressPolicy, Refused, Resolver, system_resolver
from core.tools.registry import Tool, ToolContext, ToolError, ToolOutput

__all__ = ["FetchSettings", "fetch_settings", "fetch_url_tool"]

_SCHEMA = {
    "type": "object",
    "properties": {"url": {"type": "string", "description": "The http(s) URL to read."}},
    "required": ["url"],
}
_DESCRIPTION = ("Read a web page or PDF at an http(s) URL and return its main text. Use it "
                "when the person links to a page or asks about its content.")
_KEYS = {"allow_hosts", "max_bytes", "timeout_seconds", "max_tokens", "max_redirects"}


@dataclass(frozen=True)
class FetchSettings:
    """``[tools.fetch_url]``: what may be fetched, and how much."""

    policy: AddressPolicy = field(default_factory=AddressPolicy)
    max_bytes: int = 5_000_000
    timeout_seconds: float = 15.0
    max_tokens: int = 6_000
    max_redirects: int = 5


def fetch_settings(raw: Any, *, resolver: Resolver = system_resolver) -> FetchSettings:
    """Validate ``[tools.fetch_url]``; a ``ConfigError`` names what is wrong."""
    where = "[tools.fetch_url]"
    table = config_table(raw, where, _KEYS)
    hosts = table.get("allow_hosts", [])
    if not isinstance(hosts, list) or not all(isinstance(h, str) for h in hosts):
        raise ConfigError(f"{where}: allow_hosts must be a list of host names or CIDR ranges")
    try:
        policy = AddressPolicy.allowing(hosts, resolver)
    except ValueError as err:
        raise ConfigError(f"{where}: allow_hosts: {err}") from err
    values: dict[str, Any] = {}
    for key, least in (("max_bytes", 1024), ("max_tokens", 100), ("max_redirects", 0)):
        if key in table:
            value = table[key]
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise ConfigError(f"{where}: {key} must be an integer of at least {least}")
            values[key] = value
    if "timeout_seconds" in table:
        value = table["timeout_seconds"]
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            raise ConfigError(f"{where}: timeout_seconds must be a positive number")
        values["timeout_seconds"] = float(value)
    return FetchSettings(policy=policy, **values)


class _Text(HTMLParser):
    """Visible text of HTML, for pages the extractor finds nothing in."""

    def __init__(self) -> None:
        super().__init__()
        self.parts: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: Any) -> None:
        if tag in ("script", "style", "noscript", "template"):
            self._skip += 1

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style", "noscript", "template") and self._skip:
            self._skip -= 1

    def handle_data(self, data: str) -> None:
        if not self._skip and data.strip():
            self.parts.append(data.strip())


def html_text(html: str, url: str) -> str:
    """The readable text of an HTML page."""
    import trafilatura

    text = trafilatura.extract(html, url=url, include_comments=False, include_tables=True,
                               favor_recall=True)
    if text and text.strip():
        return str(text).strip()
    parser = _Text()
    parser.feed(html)
    return "\n".join(parser.parts)


def pdf_text(data: bytes) -> str:
    """The text of a PDF's pages."""
    from pypdf import PdfReader
    from pypdf.errors import PyPdfError

    try:
        reader = PdfReader(io.BytesIO(data))
        pages = [page.extract_text() or "" for page in reader.pages]
    except (PyPdfError, ValueError, KeyError, OSError) as err:
        raise ToolError(f"the PDF could not be read ({type(err).__name__})") from err
    return "\n\n".join(f"[page {i}]\n{text.strip()}" for i, text in enumerate(pages, 1)
                       if text.strip())


def cut_to_tokens(text: str, budget: int, counter: TokenCounter) -> str:
    """``text`` within ``budget`` tokens; a cut one ends with a note saying where."""
    total = counter.count(text)
    if total <= budget:
        return text
    keep = len(text) * budget // total
    while keep > 0 and counter.count(text[:keep]) > budget:
        keep = keep * 9 // 10
    shown = text[:keep]
    return (f"{shown}\n\n[cut here: about {counter.count(shown)} of {total} tokens shown, "
            f"{len(shown)} of {len(text)} characters; the rest of the document was not read]")


def _host_header(host: str, port: int | None, scheme: str) -> str:
    default = 443 if scheme == "https" else 80
    shown = f"[{host}]" if ":" in host else host
    return shown if port in (None, default) else f"{shown}:{port}"


class Fetcher:
    """Fetches one URL under a ``FetchSettings``, over the entry point's pooled client."""

    def __init__(self, http: httpx.AsyncClient, settings: FetchSettings) -> None:
        self._http = http
        self._settings = settings

    async def _hop(self, url: str) -> httpx.Request:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https"):
            raise ToolError(f"only http and https URLs can be read, not {parts.scheme!r}")
        if parts.username or parts.password:
            raise ToolError("URLs with a user name or password are not fetched")
        host = parts.hostname or ""
        try:
            port = parts.port
        except ValueError as err:
            raise ToolError("the URL's port is not valid") from err
        try:
            ip = await self._settings.policy.address(host, port or
                                                     (443 if parts.scheme == "https" else 80))
        except Refused as err:
            raise ToolError(f"refused: {err}") from err
        netloc = f"[{ip}]" if isinstance(ip, ipaddress.IPv6Address) else str(ip)
        if port is not None:
            netloc += f":{port}"
        target = urlunsplit((parts.scheme, netloc, parts.path or "/", parts.query, ""))
        # Connection: close, because pooled connections are keyed by the address: one
        # made (and verified) for one name must not carry a request for another.
        headers = {"Host": _host_header(host, port, parts.scheme), "Connection": "close",
                   "User-Agent": "chatbridge-fetch/1 (+reads links people send)",
                   "Accept": "text/html,application/xhtml+xml,application/pdf,text/plain;q=0.9,"
                             "*/*;q=0.5"}
        extensions = {"sni_hostname": host} if parts.scheme == "https" else {}
        return self._http.build_request("GET", target, headers=headers, extensions=extensions,
                                        timeout=httpx.Timeout(self._settings.timeout_seconds))

    async def fetch(self, url: str) -> tuple[str, str, bytes, bool]:
        """Final URL, content type, body (up to the size limit) and whether it was cut."""
        limit = self._settings.max_bytes
        for _ in range(self._settings.max_redirects + 1):
            request = await self._hop(url)
            try:
                response = await self._http.send(request, stream=True, follow_redirects=False)
            except httpx.RemoteProtocolError as err:
                if "location" in str(err).lower():  # httpx refuses e.g. an octal IP there
                    raise ToolError(f"refused: {url} redirected to an address that is not "
                                    "valid (an odd-format IP?); not followed") from err
                raise ToolError(f"could not fetch {url}: {type(err).__name__}") from err
            except httpx.HTTPError as err:
                raise ToolError(f"could not fetch {url}: {type(err).__name__}") from err
            try:
                if response.is_redirect:
                    location = response.headers.get("location", "")
                    if not location:
                        raise ToolError(f"{url} redirected without a Location")
                    url = urljoin(url, location)
                    continue
                if response.status_code >= 400:
                    raise ToolError(f"{url} answered HTTP {response.status_code}")
                body = bytearray()
                cut = False
                async for piece in response.aiter_bytes():
                    body += piece
                    if len(body) > limit:
                        cut = True
                        del body[limit:]
                        break
                return url, response.headers.get("content-type", ""), bytes(body), cut
            except httpx.HTTPError as err:
                raise ToolError(f"reading {url} failed: {type(err).__name__}") from err
            finally:
                await response.aclose()
        raise ToolError(f"more than {self._settings.max_redirects} redirects")


def fetch_url_tool(http: httpx.AsyncClient, settings: FetchSettings) -> Tool:
    """The ``fetch_url`` tool over ``http``."""
    fetcher = Fetcher(http, settings)

    async def run(args: Mapping[str, Any], ctx: ToolContext) -> ToolOutput:
        url = str(args["url"]).strip()
        began = time.monotonic()
        try:
            async with asyncio.timeout(settings.timeout_seconds):
                final, ctype, body, cut = await fetcher.fetch(url)
        except TimeoutError as err:
            raise ToolError(f"{url} took longer than {settings.timeout_seconds:g} s "
                            f"(gave up after {time.monotonic() - began:.1f} s)") from err
        kind = ctype.split(";", 1)[0].strip().lower()
        if kind == "application/pdf" or body.startswith(b"%PDF-"):
            if cut:
                raise ToolError(f"the PDF is larger than {settings.max_bytes} bytes")
            text = await asyncio.to_thread(pdf_text, body)
        elif kind in ("text/html", "application/xhtml+xml") or body[:200].lstrip().lower(
                ).startswith((b"<!doctype html", b"<html")):
            html = body.decode(_charset(ctype), "replace")
            text = await asyncio.to_thread(html_text, html, final)
        elif kind.startswith("text/") or kind in ("application/json", "application/xml", ""):
            text = body.decode(_charset(ctype), "replace")
        else:
            raise ToolError(f"{final} is {kind}, which cannot be read as text")
        if not text.strip():
            text = "(the page has no readable text)"
        counter = ctx.counter or EstimateCounter()
        text = cut_to_tokens(text, settings.max_tokens, counter)
        if cut:
            text += f"\n\n[only the first {settings.max_bytes} bytes of the page were read]"
        head = f"URL: {final}\n\n" if final != url else ""
        return ToolOutput(head + text, final)

    def label(args: Mapping[str, Any]) -> str:
        host = urlsplit(str(args.get("url", ""))).hostname or "the link"
        return f"Reading {host}…"

    return Tool("fetch_url", _DESCRIPTION, run, _SCHEMA, label=label)


def _charset(ctype: str) -> str:
    for part in ctype.split(";")[1:]:
        name, _, value = part.strip().partition("=")
        if name.lower() == "charset" and value:
            try:
                "".encode(value.strip('"'))
                return value.strip('"')
            except LookupError:
                break
    return "utf-8"
