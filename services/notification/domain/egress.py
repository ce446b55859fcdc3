"""Where a webhook may go: the address rules of the egress guard. Pure: no socket, no DNS.

A subscriber names a URL and notification POSTs to it from inside the cluster. Unguarded, a
subscription makes Baton POST to its own database, Kafka, the cloud metadata service or anything
else on the internal network. So a webhook goes only to **https** on a host that is, or resolves
to, **public unicast addresses only** — every address the host has, in every textual form a
resolver accepts (`127.1`, `2130706433`, `0x7f000001`, `0177.0.0.1`, `[::ffff:127.0.0.1]`, ...) —
with no user info in the URL. An operator's allow-list (`BATON_WEBHOOK_ALLOWED_CIDRS`) lets
chosen internal receivers through, over plain http too; `BATON_WEBHOOK_ALLOW_HTTP` allows http
to public hosts.

The adapter resolves the host once, judges every answer here, and connects to exactly the
addresses judged (``app/egress.py``, ``adapters/egress.py``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_network
from urllib.parse import urlsplit

IPAddress = IPv4Address | IPv6Address
IPNetwork = IPv4Network | IPv6Network

# Why a URL is refused: a short code (shown by `baton webhooks check-url`, in the dead letter of
# a refused subscription) and a sentence.
MALFORMED = "malformed_url"
SCHEME = "scheme"
USERINFO = "userinfo"
PLAIN_HTTP = "http_not_allowed"
ZONE_ID = "zone_id"
UNSPECIFIED = "unspecified"
LOOPBACK = "loopback"
PRIVATE = "private"
LINK_LOCAL = "link_local"
CGNAT = "cgnat"
UNIQUE_LOCAL = "unique_local"
MULTICAST = "multicast"
RESERVED = "reserved"

MAX_URL_LENGTH = 2000


@dataclass(frozen=True)
class EgressPolicy:
    """What an operator allows beyond public https: ``allowed`` networks (any class, http too) and
    plain http to public hosts (``allow_http``)."""

    allowed: tuple[IPNetwork, ...] = ()
    allow_http: bool = False

    def allows(self, address: IPAddress) -> bool:
        candidates = [address, *_embedded_ipv4(address)]
        return any(a in net for a in candidates for net in self.allowed)


@dataclass(frozen=True)
class Target:
    """Where a URL points: ``host`` is lower-case; for an IP literal (any spelling) ``address`` is
    the address it means, and ``host`` its canonical text."""

    scheme: str
    host: str
    port: int
    address: IPAddress | None = None


@dataclass(frozen=True)
class Refused:
    """Why a URL is not sent to: ``reason`` is one of the codes above."""

    reason: str
    detail: str

    def __str__(self) -> str:
        return f"{self.reason}: {self.detail}"


# (network, reason, what it is), most specific first where blocks nest.
_V4_BLOCKS: tuple[tuple[IPv4Network, str, str], ...] = tuple(
    (IPv4Network(net), reason, what)
    for net, reason, what in (
        ("0.0.0.0/8", UNSPECIFIED, "an address of 'this network' (0.0.0.0/8)"),
        ("127.0.0.0/8", LOOPBACK, "a loopback address (127.0.0.0/8)"),
        ("10.0.0.0/8", PRIVATE, "a private address (RFC 1918)"),
        ("172.16.0.0/12", PRIVATE, "a private address (RFC 1918)"),
        ("192.168.0.0/16", PRIVATE, "a private address (RFC 1918)"),
        ("100.64.0.0/10", CGNAT, "a carrier-grade NAT address (100.64.0.0/10)"),
        ("169.254.0.0/16", LINK_LOCAL, "a link-local address (169.254.0.0/16: cloud metadata services)"),
        ("192.0.0.0/24", RESERVED, "a reserved address (IETF protocol assignments, 192.0.0.0/24)"),
        ("192.0.2.0/24", RESERVED, "a reserved address (documentation, TEST-NET-1)"),
        ("198.51.100.0/24", RESERVED, "a reserved address (documentation, TEST-NET-2)"),
        ("203.0.113.0/24", RESERVED, "a reserved address (documentation, TEST-NET-3)"),
        ("192.88.99.0/24", RESERVED, "a reserved address (6to4 relay anycast, deprecated)"),
        ("198.18.0.0/15", RESERVED, "a reserved address (benchmarking, 198.18.0.0/15)"),
        ("224.0.0.0/4", MULTICAST, "a multicast address (224.0.0.0/4)"),
        ("240.0.0.0/4", RESERVED, "a reserved address (240.0.0.0/4, broadcast)"),
    )
)

_V6_BLOCKS: tuple[tuple[IPv6Network, str, str], ...] = tuple(
    (IPv6Network(net), reason, what)
    for net, reason, what in (
        ("::/128", UNSPECIFIED, "the unspecified address (::)"),
        ("::1/128", LOOPBACK, "a loopback address (::1)"),
        ("64:ff9b:1::/48", RESERVED, "a reserved address (local-use NAT64, 64:ff9b:1::/48)"),
        ("100::/64", RESERVED, "a reserved address (discard-only, 100::/64)"),
        ("2001::/23", RESERVED, "a reserved address (IETF assignments: Teredo, benchmarking, 2001::/23)"),
        ("2001:db8::/32", RESERVED, "a reserved address (documentation, 2001:db8::/32)"),
        ("3fff::/20", RESERVED, "a reserved address (documentation, 3fff::/20)"),
        ("fc00::/7", UNIQUE_LOCAL, "a unique local address (fc00::/7)"),
        ("fe80::/10", LINK_LOCAL, "a link-local address (fe80::/10)"),
        ("fec0::/10", PRIVATE, "a site-local address (fec0::/10, deprecated)"),
        ("ff00::/8", MULTICAST, "a multicast address (ff00::/8)"),
    )
)
_GLOBAL_UNICAST = IPv6Network("2000::/3")
_IPV4_COMPATIBLE = IPv6Network("::/96")
_NAT64 = IPv6Network("64:ff9b::/96")


def _embedded_ipv4(address: IPAddress) -> list[IPv4Address]:
    """The IPv4 address an IPv6 address carries and reaches: IPv4-mapped, IPv4-compatible, NAT64
    (64:ff9b::/96) and 6to4 (2002::/16)."""
    if not isinstance(address, IPv6Address):
        return []
    if address.ipv4_mapped is not None:
        return [address.ipv4_mapped]
    if address in _IPV4_COMPATIBLE and int(address) > 1:
        return [IPv4Address(int(address) & 0xFFFFFFFF)]
    if address in _NAT64:
        return [IPv4Address(int(address) & 0xFFFFFFFF)]
    if address.sixtofour is not None:
        return [address.sixtofour]
    return []


def address_refusal(address: IPAddress, policy: EgressPolicy) -> Refused | None:
    """None when a webhook may be sent to ``address``: it is in the allow-list, or a public unicast
    address (an IPv6 address embedding an IPv4 one is judged by that one too)."""
    if isinstance(address, IPv6Address) and address.scope_id:
        return Refused(ZONE_ID, "a scoped IPv6 address (with a zone id) is never a public destination")
    if policy.allows(address):
        return None
    for embedded in _embedded_ipv4(address):
        if refused := address_refusal(embedded, policy):
            return Refused(refused.reason, f"{refused.detail} inside an IPv6 address")
    if isinstance(address, IPv4Address):
        for net4, reason, what in _V4_BLOCKS:
            if address in net4:
                return Refused(reason, what)
        return None
    if address.ipv4_mapped is not None or address in _NAT64 or address.sixtofour is not None:
        return None  # reaches the public IPv4 address it embeds
    if address in _IPV4_COMPATIBLE and int(address) > 1:
        return Refused(RESERVED, "an IPv4-compatible IPv6 address (::/96, deprecated)")
    for net6, reason, what in _V6_BLOCKS:
        if address in net6:
            return Refused(reason, what)
    if address not in _GLOBAL_UNICAST:
        return Refused(RESERVED, "an IPv6 address outside global unicast (2000::/3)")
    return None


_NAME = re.compile(r"[a-z0-9_-]+(\.[a-z0-9_-]+)*\.?")
_NUMERIC_LABEL = re.compile(r"[0-9]+|0x[0-9a-f]*")


def _ipv4_part(part: str) -> int | None:
    """One part of an IPv4 address as `inet_aton` reads it: decimal, 0x-hex or 0-octal."""
    if part.startswith("0x"):
        return int(part[2:] or "0", 16) if all(c in "0123456789abcdef" for c in part[2:]) else None
    if len(part) > 1 and part.startswith("0"):
        return int(part, 8) if all(c in "01234567" for c in part) else None
    return int(part) if part.isdigit() else None


def legacy_ipv4(host: str) -> IPv4Address | None:
    """The address a host means to `inet_aton` (and so to getaddrinfo): one to four parts, the last
    filling the remaining bytes — `127.1`, `2130706433`, `0x7f.0.0.1`, `0177.0.0.01`; None if it
    is not such a number."""
    parts = host.removesuffix(".").split(".")
    if not 1 <= len(parts) <= 4:
        return None
    numbers = [_ipv4_part(p) for p in parts]
    if any(n is None for n in numbers):
        return None
    head, last = [n for n in numbers[:-1] if n is not None], numbers[-1]
    assert last is not None
    if any(n > 255 for n in head) or last >= 256 ** (5 - len(parts)):
        return None
    value = last
    for i, n in enumerate(head):
        value += n << (8 * (3 - i))
    return IPv4Address(value)


def parse(url: str) -> Target | Refused:
    """The target of a webhook URL, or why it is refused without resolving anything: http(s) only,
    no user info, printable ASCII only (a backslash, a space or a non-ASCII host parse differently
    in different URL parsers), a valid port, and a host that is a name or an IP literal — a numeric
    host that is not a valid address in any form is refused rather than guessed at."""
    if not url or len(url) > MAX_URL_LENGTH:
        return Refused(MALFORMED, f"a URL of 1 to {MAX_URL_LENGTH} characters is needed")
    if any(not (" " < c < "\x7f") or c == "\\" for c in url):
        return Refused(MALFORMED, "only printable ASCII without spaces or backslashes (IDNs as xn--)")
    try:
        parts = urlsplit(url)
    except ValueError:
        return Refused(MALFORMED, "the URL cannot be parsed")
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        return Refused(SCHEME, f"only https:// (or http:// where allowed), not {scheme or 'no'} scheme")
    netloc = parts.netloc
    if "@" in netloc:
        return Refused(USERINFO, "a URL with user info (user@host) is refused")
    if netloc.startswith("["):
        host, bracket, rest = netloc[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            return Refused(MALFORMED, "an IPv6 literal must be [address] or [address]:port")
        port_text, literal = rest[1:], True
    else:
        host, _, port_text = netloc.partition(":")
        literal = False
        if ":" in port_text:
            return Refused(MALFORMED, "an IPv6 literal must be in brackets")
    default = 443 if scheme == "https" else 80
    if port_text and not (port_text.isdigit() and 1 <= int(port_text) <= 65535):
        return Refused(MALFORMED, "the port must be 1 to 65535")
    port = int(port_text) if port_text else default
    if literal:
        return _ipv6_literal(scheme, host.lower(), port)
    return target_of(scheme, host, port)


def target_of(scheme: str, host: str, port: int) -> Target | Refused:
    """The target of an unbracketed host: a DNS name, or an IPv4 address in any form `inet_aton`
    reads (a host whose last label is a number must be one)."""
    host = host.lower()
    if not host or not _NAME.fullmatch(host):
        return Refused(MALFORMED, "the host must be a DNS name or an IP address")
    if _NUMERIC_LABEL.fullmatch(host.removesuffix(".").rsplit(".", 1)[-1]):
        address = legacy_ipv4(host)
        if address is None:
            return Refused(MALFORMED, "a numeric host that is not a valid IPv4 address")
        return Target(scheme, str(address), port, address)
    return Target(scheme, host, port)


def _ipv6_literal(scheme: str, text: str, port: int) -> Target | Refused:
    address_text, zone_sign, _ = text.partition("%")
    try:
        address = IPv6Address(address_text)
    except ValueError:
        return Refused(MALFORMED, "the bracketed host is not an IPv6 address")
    if zone_sign:  # `[fe80::1%25eth0]`: judged by its address first, refused in any case
        return address_refusal(address, EgressPolicy()) or Refused(
            ZONE_ID, "a scoped IPv6 address (with a zone id) is never a public destination"
        )
    return Target(scheme, address.compressed, port, address)


def judge(target: Target, addresses: Sequence[IPAddress], policy: EgressPolicy) -> Refused | None:
    """None when a webhook may go to ``target`` at ``addresses`` (what its host is or resolved to):
    every one must be allowed — a host with one internal answer among public ones is refused, as the
    connection could go to any of them — and plain http needs ``allow_http`` or every address in
    the allow-list."""
    if not addresses:
        return Refused(MALFORMED, "the host has no address")
    for address in addresses:
        if refused := address_refusal(address, policy):
            where = "is" if target.address is not None else "resolves to"
            return Refused(refused.reason, f"the host {where} {refused.detail}")
    if target.scheme == "http" and not policy.allow_http and not all(policy.allows(a) for a in addresses):
        return Refused(
            PLAIN_HTTP,
            "plain http:// is refused: use https:// (or BATON_WEBHOOK_ALLOW_HTTP, or a host in "
            "BATON_WEBHOOK_ALLOWED_CIDRS)",
        )
    return None


def parse_networks(text: str) -> tuple[IPNetwork, ...]:
    """`10.1.0.0/16, 127.0.0.1/32, ::1/128` (commas or spaces) -> networks; a bare address is a /32
    or /128. Raises ValueError naming the item that is not a network."""
    networks = []
    for item in re.split(r"[,\s]+", text.strip()):
        if not item:
            continue
        try:
            networks.append(ip_network(item, strict=False))
        except ValueError:
            raise ValueError(f"{item!r} is not an IP network (CIDR)") from None
    return tuple(networks)
