"""The network policy's decisions, without any I/O."""

from __future__ import annotations

import ipaddress

import pytest

from enrichhq import exceptions, netpolicy
from enrichhq.netpolicy import NetworkPolicy

CLOSED = NetworkPolicy()


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("127.0.0.1", "loopback"),
        ("::1", "loopback"),
        ("10.0.0.1", "private"),
        ("172.16.5.4", "private"),
        ("192.168.1.1", "private"),
        ("169.254.169.254", "link-local (cloud metadata lives here)"),
        ("fe80::1", "link-local (cloud metadata lives here)"),
        ("224.0.0.1", "multicast"),
        ("0.0.0.0", "unspecified"),
        ("100.64.0.1", "reserved"),
        ("::ffff:127.0.0.1", "loopback"),
        ("::ffff:169.254.169.254", "link-local (cloud metadata lives here)"),
        ("fd00::1", "private"),
        ("64:ff9b::a9fe:a9fe", "link-local (cloud metadata lives here)"),  # NAT64 of 169.254.169.254
        ("64:ff9b::7f00:1", "loopback"),
        ("64:ff9b:1::a00:1", "private"),
        ("2002:a9fe:a9fe::", "link-local (cloud metadata lives here)"),  # 6to4
        ("::7f00:1", "loopback"),  # IPv4-compatible
        ("::ffff:0:7f00:1", "loopback"),  # IPv4-translated (SIIT)
        ("2001:0:4136:e378:8000:63bf:80ff:fffe", "loopback"),  # Teredo, client 127.0.0.1
    ],
)
def test_non_public_addresses_are_refused_by_default(address: str, kind: str) -> None:
    assert CLOSED.refusal(ipaddress.ip_address(address)) == kind


@pytest.mark.parametrize(
    "address", ["93.184.216.34", "1.1.1.1", "2606:4700:4700::1111", "64:ff9b::5db8:d822", "2002:5db8:d822::"]
)
def test_public_addresses_pass(address: str) -> None:
    assert CLOSED.refusal(ipaddress.ip_address(address)) is None


def test_true_opens_every_address() -> None:
    policy = NetworkPolicy.parse("true")
    assert policy.allow_all
    assert policy.refusal(ipaddress.ip_address("169.254.169.254")) is None


@pytest.mark.parametrize("raw", ["", "false", "0", " no ", None])
def test_empty_or_false_keeps_it_closed(raw: str | None) -> None:
    assert NetworkPolicy.parse(raw) == CLOSED


def test_listed_networks_open_only_themselves() -> None:
    policy = NetworkPolicy.parse("10.0.0.0/8, 127.0.0.1/32")
    assert policy.refusal(ipaddress.ip_address("10.2.3.4")) is None
    assert policy.refusal(ipaddress.ip_address("127.0.0.1")) is None
    assert policy.refusal(ipaddress.ip_address("127.0.0.2")) == "loopback"
    assert policy.refusal(ipaddress.ip_address("192.168.0.1")) == "private"


def test_a_bad_network_says_what_to_write() -> None:
    with pytest.raises(exceptions.ConfigError, match=r"'10\.0\.0\.0/33' is not a network"):
        NetworkPolicy.parse("10.0.0.0/33")


@pytest.mark.parametrize(
    ("host", "expected"), [("[::1]", "::1"), ("10.1.2.3", "10.1.2.3"), ("example.com", None)]
)
def test_literal_address(host: str, expected: str | None) -> None:
    found = netpolicy.literal_address(host)
    assert (None if found is None else str(found)) == expected


def test_refusal_is_a_provider_error_that_is_not_retried_and_says_how_to_open() -> None:
    error = netpolicy.NetworkRefused("metadata.internal", "169.254.169.254", "link-local")
    assert isinstance(error, exceptions.ProviderError)
    assert not error.retryable
    assert str(error) == (
        "refused to connect to metadata.internal (169.254.169.254): a link-local address; " + netpolicy.HINT
    )
