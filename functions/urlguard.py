"""Where doclane may send a request on someone else's say-so (webhook URLs):
a guard against server-side request forgery.

A webhook URL is input: whoever registers one makes doclane POST to it from
inside the network. Without a check that reaches the cloud metadata service
(169.254.169.254), the database on loopback or any host of the private
network. So a URL is refused unless

- its scheme is http or https and it carries no user:password@,
- every address its host resolves to is a public unicast address: not
  loopback, link-local (169.254/16, fe80::/10), private (RFC 1918, fc00::/7,
  100.64/10), unspecified, multicast, reserved or documentation ranges,

or its host, or the network of each of its addresses, is on the allow-list
(DOCLANE_WEBHOOK_ALLOW: comma-separated IPs, CIDRs and host names; `*.example`
or `.example` for a domain and its subdomains).

The check runs at registration (POST /webhooks answers 400 with the reason)
and again right before each delivery, because a name may resolve elsewhere
by then (DNS rebinding): `resolve` gives the checked addresses and the sender
connects to one of those, never resolving the name a second time.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from typing import Callable, Iterable

import httpx

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str, int], Iterable[str]]
SCHEMES = ("http", "https")
_SHARED = ipaddress.IPv4Network("100.64.0.0/10")  # carrier-grade NAT: inside a provider's network


class UnsafeUrl(ValueError):
    """The URL may not be called: the message says why and what would allow it."""


@dataclass(frozen=True)
class AllowList:
    networks: tuple[IPNetwork, ...] = ()
    hosts: frozenset[str] = frozenset()  # exact names, and ".example" for a domain with its subdomains

    @classmethod
    def parse(cls, spec: str | None) -> "AllowList":
        """`127.0.0.1, 10.0.0.0/8, ::1, hooks.internal, *.corp.example`; ValueError names a bad entry."""
        networks: list[IPNetwork] = []
        hosts: set[str] = set()
        for raw in (spec or "").split(","):
            entry = raw.strip().lower()
            if not entry:
                continue
            try:
                networks.append(ipaddress.ip_network(entry.strip("[]"), strict=False))
                continue
            except ValueError:
                pass
            name = entry[1:] if entry.startswith("*.") else entry
            label = name.lstrip(".")
            if not label or "/" in name or ":" in name or " " in name:
                raise ValueError(f"{raw.strip()!r} is neither an IP address, a CIDR network nor a host name")
            hosts.add(name)
        return cls(tuple(networks), frozenset(hosts))

    def allows_host(self, host: str) -> bool:
        host = host.lower().rstrip(".")
        return host in self.hosts or any(
            entry.startswith(".") and (host == entry[1:] or host.endswith(entry)) for entry in self.hosts)

    def allows_address(self, address: IPAddress) -> bool:
        return any(address.version == net.version and address in net for net in self.networks)


@dataclass(frozen=True)
class Target:
    """A URL that passed the check, with the addresses it was checked at."""

    url: httpx.URL
    addresses: tuple[str, ...]  # empty when the host name itself is allow-listed


def _unmapped(address: IPAddress) -> IPAddress:
    """::ffff:127.0.0.1 is 127.0.0.1: judged (and allow-listed) as IPv4."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def forbidden_reason(address: IPAddress) -> str | None:
    """Why an address is not a public unicast one, or None if it is."""
    address = _unmapped(address)
    if address.is_unspecified:
        return "the unspecified address"
    if address.is_loopback:
        return "a loopback address"
    if address.is_link_local:
        return "a link-local address (169.254.0.0/16 and fe80::/10 hold cloud metadata services)"
    if address.is_multicast:
        return "a multicast address"
    if address.is_reserved:
        return "a reserved address"
    if address.is_private or (isinstance(address, ipaddress.IPv4Address) and address in _SHARED):
        return "a private address"
    if not address.is_global:  # documentation, benchmarking and other special-purpose ranges
        return "a non-global address"
    return None


def system_resolver(host: str, port: int) -> list[str]:
    """Every address `host` has now (A and AAAA), as the socket layer would connect."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]).split("%")[0] for info in infos))


def parse(url: str) -> httpx.URL:
    """The URL as the HTTP client will read it, refused when malformed, not
    http(s), or carrying credentials (they would leak into logs and pages)."""
    if not isinstance(url, str) or not url.strip():
        raise UnsafeUrl("the webhook URL is empty")
    try:
        parsed = httpx.URL(url.strip())
    except (httpx.InvalidURL, TypeError, ValueError) as exc:
        raise UnsafeUrl(f"{url!r} is not a valid URL: {exc}") from None
    if parsed.scheme not in SCHEMES:
        raise UnsafeUrl(f"webhook URL {url!r} must start with http:// or https://")
    if parsed.userinfo:
        raise UnsafeUrl("a webhook URL may not carry credentials (user:password@); "
                        "receivers verify the webhook-signature header instead")
    if not parsed.host:
        raise UnsafeUrl(f"webhook URL {url!r} has no host")
    return parsed


def check(url: str, allow: AllowList | str | None = None, *, resolve: Resolver = system_resolver) -> Target:
    """Check `url` now; UnsafeUrl says why it may not be called."""
    allow = allow if isinstance(allow, AllowList) else AllowList.parse(allow)
    parsed = parse(url)
    host = parsed.host
    if allow.allows_host(host):
        return Target(parsed, ())
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        literal: IPAddress | None = ipaddress.ip_address(host)
    except ValueError:
        literal = None
    if literal is not None:
        addresses = [str(literal)]
    else:
        try:
            addresses = list(resolve(host, port))
        except (OSError, UnicodeError) as exc:
            raise UnsafeUrl(f"the host {host!r} does not resolve ({exc}); a webhook's host must resolve "
                            "to a public address") from None
        if not addresses:
            raise UnsafeUrl(f"the host {host!r} has no address")
    for text in addresses:
        address = _unmapped(ipaddress.ip_address(text))
        reason = forbidden_reason(address)
        if reason and not allow.allows_address(address):
            where = host if literal is not None else f"{host} ({address})"
            raise UnsafeUrl(f"webhook URL {url!r} points at {where}, {reason}; doclane does not call internal "
                            f"addresses unless DOCLANE_WEBHOOK_ALLOW lists the host or its network "
                            f"(e.g. DOCLANE_WEBHOOK_ALLOW={address if address.version == 4 else f'[{address}]'})")
    return Target(parsed, tuple(addresses))


def pinned_request(target: Target) -> tuple[httpx.URL, dict[str, str], dict[str, str]]:
    """The URL, extra headers and httpx extensions that reach the host at the
    checked address: the name is not resolved again (so a second, different
    answer cannot redirect the request), while the Host header, TLS SNI and
    certificate check still use the name."""
    url = target.url
    if not target.addresses:
        return url, {}, {}
    address = target.addresses[0]
    host_header = url.netloc.decode("ascii")
    pinned = url.copy_with(host=address)
    extensions = {"sni_hostname": url.host} if url.scheme == "https" else {}
    return pinned, {"host": host_header}, extensions
