"""The webhook egress guard: hostile URLs in every spelling are refused with the right reason, names
are judged by every address they resolve to (a fake resolver stands in for DNS), public https passes."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address, ip_address

import pytest

from services.notification.app.egress import Allowed, EgressGuard, Unresolved
from services.notification.domain import egress
from services.notification.domain.egress import EgressPolicy, Refused, Target, parse_networks
from tests.unit.fakes.notification import FakeResolver

pytestmark = pytest.mark.unit

# What the fake DNS answers: internal service names, a metadata alias, a name with one internal
# answer among public ones, an AAAA answer carrying an IPv4-mapped private address.
DNS = {
    "postgres": [["10.0.3.7"]],
    "kafka.baton.svc": [["10.96.0.12"]],
    "kafka.baton.svc.cluster.local": [["10.96.0.12"]],
    "localhost": [["127.0.0.1", "::1"]],
    "metadata.google.internal": [["169.254.169.254"]],
    "mixed.example.com": [["93.184.216.34", "127.0.0.1"]],
    "mapped.example.com": [["::ffff:10.0.0.1"]],
    "cgnat.example.com": [["100.100.100.200"]],
    "ula.example.com": [["fd00:ec2::254"]],
    "linklocal6.example.com": [["fe80::a9fe:a9fe"]],
    "nat64.example.com": [["64:ff9b::a9fe:a9fe"]],
    "hooks.example.com": [["93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946"]],
}

HOSTILE = [
    # loopback in every spelling a resolver accepts
    ("https://127.0.0.1/hook", "loopback"),
    ("http://127.0.0.1:8080/hook", "loopback"),
    ("https://127.1/", "loopback"),
    ("https://127.0.1/", "loopback"),
    ("https://2130706433/", "loopback"),
    ("https://0x7f000001/", "loopback"),
    ("https://0X7F.0.0.1/", "loopback"),
    ("https://0x7f.0x0.0x0.0x1/", "loopback"),
    ("https://0177.0.0.1/", "loopback"),
    ("https://017700000001/", "loopback"),
    ("https://127.0.0.1./", "loopback"),
    ("https://127.255.255.254/", "loopback"),
    ("https://[::1]/", "loopback"),
    ("https://[0:0:0:0:0:0:0:1]:8443/", "loopback"),
    ("https://[::ffff:127.0.0.1]/", "loopback"),
    ("https://[::ffff:7f00:1]/", "loopback"),
    ("https://[::127.0.0.1]/", "loopback"),
    ("https://[64:ff9b::127.0.0.1]/", "loopback"),
    ("https://[2002:7f00:1::]/", "loopback"),
    ("https://[::1%25lo]/", "loopback"),
    ("https://localhost/", "loopback"),
    ("https://evil@127.0.0.1/", "userinfo"),
    # unspecified
    ("https://0.0.0.0/", "unspecified"),
    ("https://0/", "unspecified"),
    ("https://[::]/", "unspecified"),
    # link-local and cloud metadata
    ("https://169.254.169.254/latest/meta-data/", "link_local"),
    ("https://0xa9fea9fe/", "link_local"),
    ("https://[::ffff:169.254.169.254]/", "link_local"),
    ("https://[fe80::1]/", "link_local"),
    ("https://[fe80::1%25eth0]/", "link_local"),
    ("https://metadata.google.internal/computeMetadata/v1/", "link_local"),
    ("https://linklocal6.example.com/", "link_local"),
    ("https://nat64.example.com/", "link_local"),
    # private, CGNAT, unique local
    ("https://10.0.0.1/", "private"),
    ("https://012.0.0.1/", "private"),
    ("https://172.16.5.4/", "private"),
    ("https://172.31.255.255/", "private"),
    ("https://192.168.1.1/", "private"),
    ("https://3232235777/", "private"),
    ("https://[fec0::1]/", "private"),
    ("https://postgres:5432/", "private"),
    ("https://kafka.baton.svc:9092/", "private"),
    ("https://kafka.baton.svc.cluster.local:9092/", "private"),
    ("https://mapped.example.com/", "private"),
    ("https://100.64.0.1/", "cgnat"),
    ("https://100.127.255.254/", "cgnat"),
    ("https://cgnat.example.com/", "cgnat"),
    ("https://[fc00::1]/", "unique_local"),
    ("https://[fd12:3456::1]/", "unique_local"),
    ("https://ula.example.com/", "unique_local"),
    # multicast, reserved, benchmark, documentation, broadcast
    ("https://224.0.0.1/", "multicast"),
    ("https://239.255.255.250:1900/", "multicast"),
    ("https://[ff02::1]/", "multicast"),
    ("https://255.255.255.255/", "reserved"),
    ("https://240.0.0.1/", "reserved"),
    ("https://198.18.0.1/", "reserved"),
    ("https://192.0.2.1/", "reserved"),
    ("https://192.0.0.8/", "reserved"),
    ("https://[2001:db8::1]/", "reserved"),
    ("https://[2001:2::1]/", "reserved"),
    ("https://[2001::1]/", "reserved"),
    ("https://[::8.8.8.8]/", "reserved"),
    ("https://[100::1]/", "reserved"),
    ("https://[4000::1]/", "reserved"),
    # one internal answer among public ones is enough
    ("https://mixed.example.com/", "loopback"),
    # the URL itself
    ("https://user:password@hooks.example.com/", "userinfo"),
    ("https://@hooks.example.com/", "userinfo"),
    ("ftp://hooks.example.com/", "scheme"),
    ("file:///etc/passwd", "scheme"),
    ("gopher://127.0.0.1:6379/_INFO", "scheme"),
    ("//hooks.example.com/", "scheme"),
    ("http://hooks.example.com/", "http_not_allowed"),
    ("https://[2001:4860:4860::8888%25eth0]/", "zone_id"),
    ("https://1.2.3.4.5/", "malformed_url"),
    ("https://256.1.1.1/", "malformed_url"),
    ("https://08.0.0.1/", "malformed_url"),
    ("https://[127.0.0.1]/", "malformed_url"),
    ("https://::1/", "malformed_url"),
    ("http://hooks.example.com\\@127.0.0.1/", "malformed_url"),
    ("https://hooks.example.com /", "malformed_url"),
    ("https://①②⑦.0.0.1/", "malformed_url"),
    ("https://hooks.example.com:0/", "malformed_url"),
    ("https://hooks.example.com:65536/", "malformed_url"),
    ("https://hooks.example.com:443abc/", "malformed_url"),
    ("https:///hook", "malformed_url"),
    ("https://hooks%2eexample.com/", "malformed_url"),
]


def guard(policy: EgressPolicy | None = None) -> EgressGuard:
    return EgressGuard(policy or EgressPolicy(), FakeResolver({h: list(a) for h, a in DNS.items()}))


@pytest.mark.parametrize(("url", "reason"), HOSTILE)
async def test_a_hostile_url_is_refused_with_its_reason(url: str, reason: str) -> None:
    verdict = await guard().check(url)
    assert isinstance(verdict, Refused), verdict
    assert verdict.reason == reason, verdict


def test_the_matrix_covers_at_least_forty_hostile_urls_of_every_reason() -> None:
    assert len(HOSTILE) >= 40
    reasons = {reason for _, reason in HOSTILE}
    assert reasons >= {
        "loopback",
        "private",
        "link_local",
        "cgnat",
        "unique_local",
        "multicast",
        "unspecified",
        "reserved",
        "userinfo",
        "scheme",
        "http_not_allowed",
        "zone_id",
        "malformed_url",
    }


@pytest.mark.parametrize(
    "url",
    [
        "https://hooks.example.com/baton?x=1",
        "https://hooks.example.com:8443/baton",
        "https://HOOKS.Example.COM/baton",
        "https://hooks.example.com./baton",
        "https://93.184.216.34/hook",
        "https://[2606:4700:4700::1111]/hook",
        "https://[::ffff:8.8.8.8]/hook",
        "https://[64:ff9b::808:808]/hook",
        "https://0x08080808/hook",
    ],
)
async def test_public_https_is_allowed(url: str) -> None:
    assert isinstance(await guard().check(url), Allowed)


async def test_the_allow_list_lets_chosen_internal_receivers_through_over_http_too() -> None:
    policy = EgressPolicy(allowed=parse_networks("127.0.0.1/32, 10.20.0.0/16"))

    assert isinstance(await guard(policy).check("http://127.0.0.1:9999/hook"), Allowed)
    assert isinstance(await guard(policy).check("https://[::ffff:127.0.0.1]:9999/hook"), Allowed)
    assert isinstance(await guard(policy).check("https://10.20.3.4/hook"), Allowed)
    still = await guard(policy).check("https://127.0.0.2/hook")
    assert isinstance(still, Refused) and still.reason == "loopback"
    both = await guard(policy).check("https://localhost/hook")
    assert isinstance(both, Refused) and both.reason == "loopback", "::1 is not on the list"
    public_http = await guard(policy).check("http://hooks.example.com/hook")
    assert isinstance(public_http, Refused) and public_http.reason == "http_not_allowed"


async def test_allowing_http_allows_it_to_public_hosts_only() -> None:
    policy = EgressPolicy(allow_http=True)
    assert isinstance(await guard(policy).check("http://hooks.example.com/hook"), Allowed)
    internal = await guard(policy).check("http://10.0.0.1/hook")
    assert isinstance(internal, Refused) and internal.reason == "private"


async def test_a_name_that_does_not_resolve_is_unresolved_not_allowed() -> None:
    verdict = await guard().check("https://nowhere.example.org/")
    assert isinstance(verdict, Unresolved) and str(verdict).startswith("dns:")


async def test_an_ip_literal_is_judged_without_asking_the_resolver() -> None:
    resolver = FakeResolver()
    await EgressGuard(EgressPolicy(), resolver).check("https://0x7f000001/")
    assert resolver.asked == []


async def test_a_refusal_of_a_name_never_shows_the_address_it_resolved_to() -> None:
    verdict = await guard().check("https://kafka.baton.svc:9092/")
    assert isinstance(verdict, Refused) and "10.96" not in str(verdict)


@pytest.mark.parametrize(
    ("host", "address"),
    [
        ("127.0.0.1", "127.0.0.1"),
        ("127.1", "127.0.0.1"),
        ("10.1.2", "10.1.0.2"),
        ("2130706433", "127.0.0.1"),
        ("0x7f000001", "127.0.0.1"),
        ("0x7f.1", "127.0.0.1"),
        ("0177.0.0.1", "127.0.0.1"),
        ("0", "0.0.0.0"),
        ("0x", "0.0.0.0"),
        ("255.255.255.255", "255.255.255.255"),
        ("4294967295", "255.255.255.255"),
        ("127.0.0.1.", "127.0.0.1"),
    ],
)
def test_legacy_ipv4_reads_every_form_inet_aton_reads(host: str, address: str) -> None:
    assert egress.legacy_ipv4(host) == IPv4Address(address)


@pytest.mark.parametrize("host", ["4294967296", "256.0.0.1", "1.2.3.4.5", "08", "0x1g", "1..2", ""])
def test_legacy_ipv4_refuses_what_is_no_address(host: str) -> None:
    assert egress.legacy_ipv4(host) is None


def test_parse_reads_scheme_host_port_and_the_address_of_a_literal() -> None:
    assert egress.parse("https://Hooks.Example.com/x") == Target("https", "hooks.example.com", 443)
    assert egress.parse("http://hooks.example.com:8080") == Target("http", "hooks.example.com", 8080)
    assert egress.parse("https://0x7f000001:444/") == Target(
        "https", "127.0.0.1", 444, IPv4Address("127.0.0.1")
    )
    assert egress.parse("https://[0::1]/") == Target("https", "::1", 443, IPv6Address("::1"))


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("8.8.8.8", None),
        ("2606:4700::1111", None),
        ("127.0.0.1", "loopback"),
        ("10.255.255.255", "private"),
        ("172.15.255.255", None),
        ("172.32.0.0", None),
        ("100.63.255.255", None),
        ("100.64.0.0", "cgnat"),
        ("169.254.0.1", "link_local"),
        ("198.17.255.255", None),
        ("198.19.255.255", "reserved"),
        ("::ffff:10.0.0.1", "private"),
        ("::ffff:1.1.1.1", None),
        ("2002:0a00:0001::1", "private"),
        ("2002:0808:0808::1", None),
        ("fe80::1%eth0", "zone_id"),
    ],
)
def test_address_rules(address: str, reason: str | None) -> None:
    refused = egress.address_refusal(ip_address(address), EgressPolicy())
    assert (refused.reason if refused else None) == reason


def test_networks_are_read_from_commas_or_spaces_and_a_bad_one_is_named() -> None:
    assert [str(n) for n in parse_networks(" 127.0.0.1/32,10.0.0.1/8  ::1 ")] == [
        "127.0.0.1/32",
        "10.0.0.0/8",
        "::1/128",
    ]
    with pytest.raises(ValueError, match="'nope'"):
        parse_networks("127.0.0.1/32,nope")
