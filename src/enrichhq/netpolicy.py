"""Which addresses enrichhq's providers may connect to: the public internet only, unless opened.

Page URLs, webhook URLs and company domains come from data (a config row, an imported CSV), so a
fetch could be pointed at the machine itself, the private network or a cloud's metadata service.
Every provider connection goes through `GuardedBackend`: the host is resolved once, each address
is checked, and the connection is made to the address that was checked — so a DNS answer that
changes between the check and the connect (rebinding) cannot pass, and neither can a redirect,
since every hop opens its own connection here.
"""

from __future__ import annotations

import functools
import ipaddress
import socket
import ssl
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import anyio
import httpcore
import httpx

from enrichhq import exceptions

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

OPEN_WORDS = frozenset({"1", "true", "yes", "all", "on"})
CLOSED_WORDS = frozenset({"", "0", "false", "no", "none", "off"})
HINT = "set ENRICHHQ_ALLOW_PRIVATE_NETWORKS (true, or networks such as 10.0.0.0/8) to allow it"


@dataclass(frozen=True)
class NetworkPolicy:
    """Public addresses always; private ones only when all are opened or their network is listed."""

    allow_all: bool = False
    allowed: tuple[Network, ...] = ()

    @classmethod
    def parse(cls, raw: str | None) -> NetworkPolicy:
        """ENRICHHQ_ALLOW_PRIVATE_NETWORKS: empty/false (closed), true (open), or CIDRs, comma-separated."""
        text = (raw or "").strip().lower()
        if text in CLOSED_WORDS:
            return cls()
        if text in OPEN_WORDS:
            return cls(allow_all=True)
        networks: list[Network] = []
        for part in (p.strip() for p in text.split(",")):
            if not part:
                continue
            try:
                networks.append(ipaddress.ip_network(part, strict=False))
            except ValueError:
                raise exceptions.ConfigError(
                    f"ENRICHHQ_ALLOW_PRIVATE_NETWORKS: {part!r} is not a network; "
                    "give true, false, or networks such as 10.0.0.0/8,192.168.1.0/24"
                ) from None
        return cls(allowed=tuple(networks))

    def refusal(self, address: Address) -> str | None:
        """Why a connection to this address is refused, or None when it may go."""
        address = embedded_ipv4(address)
        kind = kind_of(address)
        if kind is None or self.allow_all:
            return None
        if any(address.version == net.version and address in net for net in self.allowed):
            return None
        return kind


#: IPv6 prefixes whose addresses carry an IPv4 address in their last 32 bits: NAT64 (64:ff9b::/96,
#: RFC 6052; and the local-use 64:ff9b:1::/48 of RFC 8215), SIIT's IPv4-translated ::ffff:0:0:0/96
#: and the deprecated IPv4-compatible ::/96.
_CARRY_IPV4 = (
    ipaddress.IPv6Network("64:ff9b::/96"),
    ipaddress.IPv6Network("::ffff:0:0:0/96"),
    ipaddress.IPv6Network("64:ff9b:1::/48"),
    ipaddress.IPv6Network("::/96"),
)


def embedded_ipv4(address: Address) -> Address:
    """The IPv4 address an IPv6 one leads to (mapped, 6to4, Teredo, NAT64), else the address itself.

    A gateway translates such an address to its IPv4 one, so it is judged as that one:
    64:ff9b::a9fe:a9fe reaches 169.254.169.254 on a network with NAT64.
    """
    if not isinstance(address, ipaddress.IPv6Address):
        return address
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]  # the client's address; the server part is public by definition
    if any(address in net for net in _CARRY_IPV4) and int(address) > 1:  # ::, ::1 stay themselves
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return address


def kind_of(address: Address) -> str | None:
    """What kind of non-public address this is ('loopback', 'private', ...), or None if public."""
    if address.is_loopback:
        return "loopback"
    if address.is_link_local:
        return "link-local (cloud metadata lives here)"
    if address.is_multicast:
        return "multicast"
    if address.is_unspecified:
        return "unspecified"
    if address.is_private:
        return "private"
    if not address.is_global:
        return "reserved"
    return None


def literal_address(host: str) -> Address | None:
    """The host as an IP address when it is one (brackets of an IPv6 URL host allowed)."""
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


class NetworkRefused(exceptions.ProviderError):
    """A connection the network policy does not allow: never retried, the company fails with it."""

    def __init__(self, host: str, address: str, kind: str) -> None:
        shown = host if host == address else f"{host} ({address})"
        super().__init__(f"refused to connect to {shown}: a {kind} address; {HINT}", retryable=False)


class GuardedBackend(httpcore.AsyncNetworkBackend):
    """httpcore's network backend, connecting only to addresses the policy allows."""

    def __init__(self, policy: NetworkPolicy) -> None:
        self.policy = policy
        self.inner = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface, passed on as it is
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        """Resolve, check every address, connect to the first allowed one that answers."""
        addresses = await self._resolve(host, port, timeout)
        allowed: list[str] = []
        refused: tuple[str, str] | None = None
        for address in addresses:
            kind = self.policy.refusal(ipaddress.ip_address(address))
            if kind is None:
                allowed.append(address)
            elif refused is None:
                refused = (address, kind)
        if not allowed:
            if refused is None:
                raise httpcore.ConnectError(f"{host} has no address")
            raise NetworkRefused(host, *refused)
        last: Exception | None = None
        for address in allowed:
            try:
                return await self.inner.connect_tcp(
                    address, port, timeout=timeout, local_address=local_address, socket_options=socket_options
                )
            except httpcore.ConnectError as exc:  # the next address may answer
                last = exc
        assert last is not None
        raise last

    async def _resolve(self, host: str, port: int, limit_s: float | None) -> list[str]:
        literal = literal_address(host)
        if literal is not None:
            return [str(literal)]
        try:
            with anyio.fail_after(limit_s):
                infos = await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except TimeoutError as exc:
            raise httpcore.ConnectTimeout(f"looking up {host} took longer than {limit_s}s") from exc
        except OSError as exc:
            raise httpcore.ConnectError(f"cannot resolve {host}: {exc}") from exc
        seen: dict[str, None] = {}
        for info in infos:
            seen.setdefault(str(info[4][0]).split("%", 1)[0], None)
        return list(seen)

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface, passed on as it is
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        """Unix sockets are local by definition: refused unless everything is open."""
        if not self.policy.allow_all:
            raise NetworkRefused(path, path, "local (unix socket)")
        return await self.inner.connect_unix_socket(path, timeout=timeout, socket_options=socket_options)

    async def sleep(self, seconds: float) -> None:
        """Delegated to anyio."""
        await self.inner.sleep(seconds)


class GuardedTransport(httpx.AsyncHTTPTransport):
    """httpx's transport with the guarded backend under its connection pool.

    httpx offers no way to pass a network backend, so the pool is rebuilt with the same options;
    httpx is pinned to its minor version for this, and tests/unit/test_netpolicy proves it holds.
    Proxies from the environment are not used: they would be checked instead of the target.
    """

    def __init__(self, policy: NetworkPolicy, limits: httpx.Limits) -> None:
        context = _ssl_context()
        super().__init__(verify=context, limits=limits, trust_env=False)
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=context,
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=GuardedBackend(policy),
        )


@functools.cache
def _ssl_context() -> ssl.SSLContext:
    """One verifying TLS context for every provider client: loading the CA bundle costs ~75 ms each time."""
    return httpx.create_ssl_context(trust_env=False)


def client(
    policy: NetworkPolicy, *, timeout: float, concurrency: int, headers: Mapping[str, str] | None = None
) -> httpx.AsyncClient:
    """An httpx client whose every connection (redirects included) obeys the policy."""
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    return httpx.AsyncClient(
        timeout=timeout, transport=GuardedTransport(policy, limits), trust_env=False, headers=headers
    )
