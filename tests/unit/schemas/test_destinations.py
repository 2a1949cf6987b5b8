"""The SSRF guard: non-public destinations are refused unless allow-listed."""

from __future__ import annotations

from ipaddress import ip_address

import pytest

from schemas.destinations import Address, DestinationRefused, check_destination


def _resolver(*addresses: str):  # type: ignore[no-untyped-def]
    def resolve(host: str, port: int) -> list[Address]:
        return [ip_address(a) for a in addresses]
    return resolve


@pytest.mark.parametrize("url, kind", [
    ("http://127.0.0.1:8080/hook", "loopback"),
    ("http://10.1.2.3/hook", "private"),
    ("http://169.254.169.254/latest/meta-data", "link-local"),
    ("http://224.0.0.1/hook", "multicast"),
    ("http://0.0.0.0/hook", "unspecified"),
    ("http://[::1]/hook", "loopback"),
    ("http://[::ffff:127.0.0.1]/hook", "loopback"),
    ("http://[fe80::1]/hook", "link-local"),
    ("http://100.64.0.1/hook", "non-global"),
])
def test_non_public_addresses_are_refused(url: str, kind: str) -> None:
    with pytest.raises(DestinationRefused, match=rf"\({kind}\)"):
        check_destination(url)


def test_a_name_is_refused_when_any_of_its_addresses_is_private() -> None:
    resolve = _resolver("93.184.216.34", "192.168.1.10")

    with pytest.raises(DestinationRefused, match=r"192.168.1.10 \(private\)"):
        check_destination("https://hooks.example.com/x", resolve=resolve)


def test_public_destinations_pass_and_return_the_addresses_to_connect_to() -> None:
    resolve = _resolver("93.184.216.34")

    assert check_destination("https://hooks.example.com/x", resolve=resolve) == [
        ip_address("93.184.216.34")]


def test_the_allow_list_admits_hosts_and_networks() -> None:
    local = _resolver("10.0.0.7")

    assert check_destination("http://127.0.0.1:9/h", ["127.0.0.1"])
    assert check_destination("http://hooks.internal/h", ["hooks.internal"], resolve=local)
    assert check_destination("http://other.internal/h", ["10.0.0.0/8"], resolve=local)
    with pytest.raises(DestinationRefused):
        check_destination("http://127.0.0.2/h", ["127.0.0.1"])


@pytest.mark.parametrize("url", ["ftp://example.com/x", "http:///nohost", "file:///etc/passwd",
                                 "http://example.com:99999/x"])
def test_malformed_urls_are_refused(url: str) -> None:
    with pytest.raises(DestinationRefused):
        check_destination(url, resolve=_resolver("93.184.216.34"))


def test_a_name_that_does_not_resolve_is_refused() -> None:
    with pytest.raises(DestinationRefused, match="does not resolve"):
        check_destination("http://no-such-host.invalid/x")
