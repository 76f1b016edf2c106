"""``fetch_url`` against loopback web servers, with DNS answers chosen by the test."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from core.errors import ConfigError
from core.tokens import EstimateCounter
from core.tools.fetch import fetch_settings, fetch_url_tool
from core.tools.registry import Tool, ToolContext, ToolError, ToolOutput
from tests.core.tools.webserver import WebServer

DNS = {"site.test": ["127.0.0.1"], "evil.test": ["10.1.2.3"], "mixed.test": ["93.184.215.14",
                                                                            "192.168.0.7"],
       "v6.test": ["::1"], "intranet.test": ["10.9.9.9"]}


async def resolver(host: str, port: int) -> list[str]:
    if host not in DNS:
        raise OSError(f"no such host {host}")
    return DNS[host]


@pytest.fixture
def web() -> Iterator[WebServer]:
    with WebServer() as server:
        yield server


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


def tool(http: httpx.AsyncClient, **raw: Any) -> Tool:
    raw.setdefault("allow_hosts", ["site.test"])
    return fetch_url_tool(http, fetch_settings(raw, resolver=resolver))


async def fetch(t: Tool, url: str) -> ToolOutput:
    out = await t.run({"url": url}, ToolContext(counter=EstimateCounter()))
    assert isinstance(out, ToolOutput)
    return out


async def test_html_becomes_readable_text(http: httpx.AsyncClient, web: WebServer) -> None:
    out = await fetch(tool(http), f"http://site.test:{web.port}/page")
    assert "hold hands while they sleep" in out.text
    assert "var x" not in out.text
    assert out.url == f"http://site.test:{web.port}/page"
    assert web.hits == [("/page", f"site.test:{web.port}")]  # the name, not the address


async def test_pdf_becomes_text(http: httpx.AsyncClient, web: WebServer) -> None:
    out = await fetch(tool(http), f"http://site.test:{web.port}/doc.pdf")
    assert "Hello from a PDF about otters." in out.text


async def test_redirect_chain_is_followed(http: httpx.AsyncClient, web: WebServer) -> None:
    base = f"http://site.test:{web.port}"
    web.redirects["/a"] = "/b"
    web.redirects["/b"] = f"{base}/page"
    out = await fetch(tool(http), f"{base}/a")
    assert "Sea otters" in out.text and out.text.startswith(f"URL: {base}/page")
    assert [p for p, _ in web.hits] == ["/a", "/b", "/page"]


async def test_too_many_redirects(http: httpx.AsyncClient, web: WebServer) -> None:
    web.redirects["/loop"] = "/loop"
    with pytest.raises(ToolError, match="more than 2 redirects"):
        await fetch(tool(http, max_redirects=2), f"http://site.test:{web.port}/loop")
    assert web.served("/loop") == 3


@pytest.mark.parametrize(("target", "why"), [
    ("http://127.0.0.1:{port}/page", "loopback"),
    ("http://[::1]:{port}/page", "loopback"),
    ("http://169.254.169.254/latest/meta-data/", "cloud metadata"),
    ("http://10.0.0.8/", "private"),
    ("http://2130706433:{port}/page", "loopback"),  # decimal 127.0.0.1
    ("http://0177.0.0.1:{port}/page", "loopback"),  # octal
    ("http://0x7f.1:{port}/page", "loopback"),  # hex, short form
    ("http://[::ffff:127.0.0.1]:{port}/page", "loopback"),
    ("http://evil.test/", "private"),  # a name whose DNS answer is private
    ("http://mixed.test/", "private"),  # one of its answers is private
    ("http://v6.test/", "loopback"),
    ("http://100.100.100.200/latest/meta-data/", "cloud metadata"),
    ("http://[fe80::1]/", "link-local"),
    ("http://224.0.0.1/", "multicast"),
])
async def test_redirects_to_inner_addresses_are_refused(
        http: httpx.AsyncClient, web: WebServer, target: str, why: str) -> None:
    web.redirects["/go"] = target.format(port=web.port)
    # (httpx itself rejects some odd forms in a Location header; refused all the same.)
    with pytest.raises(ToolError, match=f"{why}|refused: .* not valid"):
        await fetch(tool(http), f"http://site.test:{web.port}/go")
    assert [p for p, _ in web.hits] == ["/go"]  # the inner address was never asked
    # Asked for directly, the same is refused before any connection.
    with pytest.raises(ToolError, match="refused"):
        await fetch(tool(http), target.format(port=web.port))


async def test_allow_hosts_opens_an_intranet_host_or_range(http: httpx.AsyncClient,
                                                           web: WebServer) -> None:
    out = await fetch(tool(http, allow_hosts=["127.0.0.0/8"]), f"{web.url}/plain")
    assert out.text == "just text"
    DNS["wiki.intranet"] = ["127.0.0.1"]
    out = await fetch(tool(http, allow_hosts=["*.intranet"]),
                      f"http://wiki.intranet:{web.port}/plain")
    assert out.text == "just text"
    with pytest.raises(ToolError, match="private"):
        await fetch(tool(http, allow_hosts=["*.intranet"]), "http://intranet.test/")


async def test_huge_body_is_cut_at_the_size_limit(http: httpx.AsyncClient,
                                                  web: WebServer) -> None:
    out = await fetch(tool(http, max_bytes=200_000, max_tokens=100_000),
                      f"http://site.test:{web.port}/huge")
    assert "only the first 200000 bytes" in out.text
    assert len(out.text) < 210_000


async def test_slow_body_hits_the_time_limit(http: httpx.AsyncClient, web: WebServer) -> None:
    with pytest.raises(ToolError, match=r"took longer than 0\.5 s"):
        await fetch(tool(http, timeout_seconds=0.5), f"http://site.test:{web.port}/slow")


async def test_long_text_is_cut_to_the_token_budget(http: httpx.AsyncClient,
                                                    web: WebServer) -> None:
    out = await fetch(tool(http, max_tokens=500), f"http://site.test:{web.port}/long")
    assert "[cut here:" in out.text
    assert EstimateCounter().count(out.text) < 600


async def test_unreadable_types_and_schemes(http: httpx.AsyncClient, web: WebServer) -> None:
    with pytest.raises(ToolError, match="image/png"):
        await fetch(tool(http), f"http://site.test:{web.port}/image")
    with pytest.raises(ToolError, match="only http and https"):
        await fetch(tool(http), "file:///etc/passwd")
    with pytest.raises(ToolError, match="HTTP 404"):
        await fetch(tool(http), f"http://site.test:{web.port}/missing")
    with pytest.raises(ToolError, match="could not be resolved"):
        await fetch(tool(http), "http://nowhere.test/")


def test_bad_settings_stop_start_up() -> None:
    with pytest.raises(ConfigError, match="allow_hosts"):
        fetch_settings({"allow_hosts": ["exa mple"]})
    with pytest.raises(ConfigError, match="unknown setting"):
        fetch_settings({"allowed_hosts": []})
    with pytest.raises(ConfigError, match="max_bytes"):
        fetch_settings({"max_bytes": 5})


def _self_signed(tmp_path: Path, name: str) -> tuple[Path, Path]:
    """A certificate for ``name`` (its own CA) and its key, as PEM files."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.now(UTC)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(days=1)).not_valid_after(now + timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


async def test_https_connects_to_the_checked_address_and_verifies_the_name(
        tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path, "site.test")
    with WebServer() as web:
        server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        server_ctx.load_cert_chain(cert, key)
        web.wrap(server_ctx)
        client_ctx = ssl.create_default_context(cafile=str(cert))
        async with httpx.AsyncClient(verify=client_ctx) as http:
            out = await fetch(tool(http), f"https://site.test:{web.port}/plain")
            assert out.text == "just text"
            DNS["other.test"] = ["127.0.0.1"]
            with pytest.raises(ToolError, match="could not fetch"):  # a name the cert lacks
                await fetch(tool(http, allow_hosts=["other.test"]),
                            f"https://other.test:{web.port}/plain")
