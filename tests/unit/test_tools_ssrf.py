"""The fetch SSRF guard: which addresses are refused, and what the allow-list lets through.

Only IP literals and numeric host forms are used: they resolve locally, nothing is connected to.
"""

from __future__ import annotations

import ipaddress

import pytest

from fusiongraph.tools.fetch import FetchError, is_allowed, is_blocked_ip, vet_url
from fusiongraph.tools.settings import FetchSettings


@pytest.mark.parametrize(
    "ip",
    [
        "127.0.0.1",
        "127.5.5.5",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",
        "100.64.0.1",
        "0.0.0.0",
        "224.0.0.1",
        "255.255.255.255",
        "240.0.0.1",
        "::1",
        "::",
        "fe80::1",
        "fc00::1",
        "fec0::1",  # site-local (RFC 3879), global to Python's ipaddress
        "feff:ffff::1",
        "3fff::1",  # documentation (RFC 9637), global to Python 3.11's ipaddress
        "ff02::1",
        "::ffff:127.0.0.1",
        "::ffff:10.0.0.1",
        "2002:7f00:1::",  # 6to4 around 127.0.0.1
        "64:ff9b::a9fe:a9fe",  # NAT64 around 169.254.169.254
    ],
)
def test_blocked_addresses(ip: str) -> None:
    assert is_blocked_ip(ip)


@pytest.mark.parametrize(
    "ip", ["93.184.216.34", "8.8.8.8", "2606:4700:4700::1111", "::ffff:8.8.8.8"]
)
def test_public_addresses(ip: str) -> None:
    assert not is_blocked_ip(ipaddress.ip_address(ip))


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/",
        "http://10.0.0.5:8080/admin",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]/",
        "http://[::ffff:127.0.0.1]/",
        "http://0.0.0.0/",
        "http://224.0.0.1/",
        "http://2130706433/",  # decimal 127.0.0.1
        "http://0177.0.0.1/",  # octal
        "http://0x7f.0.0.1/",  # hex
        "http://0x7f000001/",
        "https://127.1/",  # short form
        "http://127.0.0.1.:80/",  # trailing dot
    ],
)
async def test_private_targets_refused(url: str) -> None:
    with pytest.raises(FetchError) as err:
        await vet_url(url, FetchSettings())
    assert err.value.reason == "blocked_address"


@pytest.mark.parametrize(
    "url",
    [
        "file:///etc/passwd",
        "ftp://127.0.0.1/",
        "gopher://127.0.0.1:70/",
        "javascript:alert(1)",
        "http://",
        "http:///path",
        "http://127.0.0.1:99999/",
        "not a url",
    ],
)
async def test_bad_urls_refused(url: str) -> None:
    with pytest.raises(FetchError) as err:
        await vet_url(url, FetchSettings())
    assert err.value.reason == "bad_url"


async def test_public_ip_literal_passes() -> None:
    target = await vet_url("https://93.184.216.34:8443/a/b?c=d#frag", FetchSettings())
    assert target.ips == ("93.184.216.34",)
    assert target.request_url("93.184.216.34") == "https://93.184.216.34:8443/a/b?c=d"
    assert target.host_header == "93.184.216.34:8443"


@pytest.mark.parametrize(
    ("allow", "url"),
    [
        (["127.0.0.1"], "http://127.0.0.1:8000/"),
        (["127.0.0.0/8"], "http://127.9.9.9/"),
        (["127.0.0.1"], "http://2130706433/"),  # matched on the resolved IP
        (["127.0.0.1"], "http://[::ffff:127.0.0.1]/"),
        (["::1"], "http://[::1]/"),
        (["10.0.0.0/8"], "http://10.20.30.40/"),
    ],
)
async def test_allow_list_lets_through(allow: list[str], url: str) -> None:
    await vet_url(url, FetchSettings(allow_private=allow))


@pytest.mark.parametrize(
    ("allow", "url"),
    [
        (["127.0.0.1"], "http://127.0.0.2/"),
        (["10.0.0.0/8"], "http://127.0.0.1/"),
        (["127.0.0.1"], "http://[::1]/"),
        (["example.internal"], "http://127.0.0.1/"),
    ],
)
async def test_allow_list_is_exact(allow: list[str], url: str) -> None:
    with pytest.raises(FetchError) as err:
        await vet_url(url, FetchSettings(allow_private=allow))
    assert err.value.reason == "blocked_address"


def test_allow_by_host_name() -> None:
    assert is_allowed("Intranet.Local", "10.0.0.1", ["intranet.local"])
    assert not is_allowed("other.local", "10.0.0.1", ["intranet.local"])
    assert not is_allowed("x", "10.0.0.1", ["not-an-ip/99", ""])


def test_ipv6_host_header_and_request_url() -> None:
    from fusiongraph.tools.fetch import Target

    t = Target(
        url="http://[::1]:81/", scheme="http", host="::1", port=81, ips=("::1",), path_and_query="/"
    )
    assert t.host_header == "[::1]:81"
    assert t.request_url("::1") == "http://[::1]:81/"
