"""SSRF guard: address forms refused before any connection, every redirect hop re-validated, the connection made
to the validated address. DNS is a stub and the network an httpx.MockTransport: no traffic leaves the process."""

import httpx
import pytest

from ragtune.ingest.netguard import BlockedURLError, GuardedTransport, address_refusal, check_url, parse_ip

PUBLIC = "93.184.216.34"
DNS = {
    "public.example": [PUBLIC],
    "internal.example": ["10.0.0.5"],
    "meta.example": ["169.254.169.254"],
    "mixed.example": [PUBLIC, "192.168.1.1"],  # one bad answer refuses the name
    "mapped.example": ["::ffff:127.0.0.1"],
    "v6public.example": ["2606:4700:4700::1111"],
}


def stub_resolver(host, port):
    if host not in DNS:
        raise AssertionError(f"unexpected DNS lookup of {host}")
    return DNS[host]


REFUSED = [
    "http://127.0.0.1/", "http://127.8.9.10/", "http://127.0.0.1:80/",
    "http://2130706433/",  # decimal integer 127.0.0.1
    "http://0x7f000001/",  # hex integer
    "http://0x7f.0.0.1/",  # hex dotted
    "http://017700000001/",  # octal integer
    "http://127.1/",  # shorthand
    "http://[::1]/", "http://[::]/", "http://0.0.0.0/", "http://0/",
    "http://[::ffff:127.0.0.1]/", "http://[::ffff:7f00:1]/", "http://[::ffff:10.0.0.1]/",  # IPv4-mapped IPv6
    "http://[::127.0.0.1]/",  # IPv4-compatible IPv6
    "http://[64:ff9b::a9fe:a9fe]/",  # NAT64 of the metadata address
    "http://[2002:7f00:1::]/",  # 6to4 of loopback
    "http://10.1.2.3/", "http://172.16.0.1/", "http://172.31.255.255/", "http://192.168.0.1/",
    "http://3232235521/",  # 192.168.0.1 as an integer
    "http://100.64.0.1/", "http://100.127.255.254/",  # carrier-grade NAT
    "http://169.254.169.254/latest/meta-data/", "http://[fd00:ec2::254]/", "http://169.254.1.1/",
    "http://[fe80::1]/", "http://[fc00::1]/", "http://[fd12:3456::1]/",
    "http://224.0.0.1/", "http://[ff02::1]/", "http://255.255.255.255/", "http://240.0.0.1/",
    "http://internal.example/", "http://meta.example/", "http://mixed.example/", "http://mapped.example/",
    "file:///etc/passwd", "ftp://public.example/", "gopher://public.example/", "data:text/plain,hi",
    "http:///nohost",
]


@pytest.mark.parametrize("url", REFUSED)
def test_refused_forms(url):
    with pytest.raises(BlockedURLError):
        check_url(url, resolver=stub_resolver)


@pytest.mark.parametrize("url", ["http://public.example/", "https://public.example:8443/x",
                                 "http://v6public.example/", "http://93.184.216.34/", "http://[2606:4700::1]/"])
def test_public_addresses_pass(url):
    assert check_url(url, resolver=stub_resolver)


def test_localhost_through_the_system_resolver_is_refused():
    with pytest.raises(BlockedURLError, match="loopback"):
        check_url("http://localhost:8080/")


def test_integer_forms_parse_like_resolvers_do():
    assert str(parse_ip("2130706433")) == "127.0.0.1"
    assert str(parse_ip("0x7f.1")) == "127.0.0.1"
    assert str(parse_ip("0177.0.0.01")) == "127.0.0.1"
    assert parse_ip("example.com") is None and parse_ip("deadbeef") is None
    assert address_refusal(parse_ip("::ffff:169.254.169.254")).startswith("a cloud metadata address")


def test_allow_private_lifts_the_address_rule_not_the_scheme_rule():
    assert check_url("http://127.0.0.1:8080/", allow_private=True) == "127.0.0.1"
    assert check_url("http://internal.example/", allow_private=True, resolver=stub_resolver) == "10.0.0.5"
    with pytest.raises(BlockedURLError):
        check_url("file:///etc/passwd", allow_private=True)


def _mock(seen, routes):
    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        status, headers = routes.get(request.headers["host"], (200, {}))
        return httpx.Response(status, headers=headers, text="ok")
    return httpx.MockTransport(handler)


def test_redirect_from_public_to_private_is_refused_at_the_hop():
    seen = []
    inner = _mock(seen, {"public.example": (302, {"Location": "http://internal.example/admin"})})
    client = httpx.Client(transport=GuardedTransport(resolver=stub_resolver, inner=inner), follow_redirects=True)
    with pytest.raises(BlockedURLError, match="10.0.0.5"):
        client.get("http://public.example/start")
    assert [str(r.url) for r in seen] == [f"http://{PUBLIC}/start"]  # the private hop never left


def test_redirect_to_an_integer_form_and_to_file_scheme_are_refused():
    for location in ("http://2130706433/", "file:///etc/passwd", "http://[::ffff:a9fe:a9fe]/"):
        seen = []
        inner = _mock(seen, {"public.example": (301, {"Location": location})})
        client = httpx.Client(transport=GuardedTransport(resolver=stub_resolver, inner=inner), follow_redirects=True)
        with pytest.raises((BlockedURLError, httpx.UnsupportedProtocol)):
            client.get("http://public.example/")
        assert len(seen) == 1


def test_connection_goes_to_the_validated_address_with_host_and_sni_kept():
    """A rebinding resolver answers public first, private after: the request still goes to the first answer."""
    answers = iter([[PUBLIC], ["127.0.0.1"]])
    seen = []
    guard = GuardedTransport(resolver=lambda host, port: next(answers), inner=_mock(seen, {}))
    response = httpx.Client(transport=guard).get("https://rebind.example/page")
    assert response.status_code == 200
    sent = seen[0]
    assert sent.url.host == PUBLIC and sent.headers["host"] == "rebind.example"
    assert sent.extensions["sni_hostname"] == "rebind.example"
    assert str(response.request.url) == "https://rebind.example/page"
