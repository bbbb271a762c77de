"""SSRF guard for website sources: only http(s) to public addresses (unless `allow_private`), every request —
each redirect hop included — checked before any connection, and the connection made to the address that was
checked (the name is resolved once; Host header and TLS SNI still carry the name, so DNS rebinding cannot
swap in another address between the check and the connect)."""

from __future__ import annotations

import ipaddress
import re
import socket
from typing import Callable, Iterable

import httpx

from ..errors import SourceError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
# A resolver maps (host, port) to the addresses a connection could go to; tests pass a stub.
Resolver = Callable[[str, int], list[str]]

ALLOWED_SCHEMES = ("http", "https")

_NETS = [(ipaddress.ip_network(n), why) for n, why in [
    ("0.0.0.0/8", "an unspecified ('this network') address"),
    ("127.0.0.0/8", "a loopback address"),
    ("10.0.0.0/8", "a private address"),
    ("172.16.0.0/12", "a private address"),
    ("192.168.0.0/16", "a private address"),
    ("100.64.0.0/10", "a carrier-grade NAT address"),
    ("169.254.0.0/16", "a link-local address"),
    ("192.0.0.0/24", "an IETF protocol address"),
    ("198.18.0.0/15", "a benchmarking address"),
    ("224.0.0.0/4", "a multicast address"),
    ("240.0.0.0/4", "a reserved address"),
    ("::/128", "an unspecified address"),
    ("::1/128", "a loopback address"),
    ("fc00::/7", "a private (unique-local) address"),
    ("fe80::/10", "a link-local address"),
    ("fec0::/10", "a site-local address"),
    ("ff00::/8", "a multicast address"),
]]
_METADATA = {ipaddress.ip_address(a) for a in ("169.254.169.254", "fd00:ec2::254", "100.100.100.200")}
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_V4_COMPAT = ipaddress.ip_network("::/96")
_INT_FORM = re.compile(r"^(0x[0-9a-f]+|[0-9]+)(\.(0x[0-9a-f]+|[0-9]+)){0,3}$", re.I)


class BlockedURLError(SourceError):
    """A URL the guard refuses: wrong scheme, or an address that is not public (and allow_private is off)."""


def system_resolver(host: str, port: int) -> list[str]:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise SourceError(f"cannot resolve host {host!r}: {exc}") from None
    seen: dict[str, None] = {}
    for info in infos:
        seen.setdefault(str(info[4][0]).split("%", 1)[0], None)
    return list(seen)


def parse_ip(host: str) -> IPAddress | None:
    """The address a host string names literally — dotted, IPv6 in brackets, and the integer forms that
    resolvers also accept (2130706433, 0x7f000001, 0177.0.0.1, 127.1) — or None for a domain name."""
    host = host.strip().rstrip(".")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        return ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        pass
    if _INT_FORM.match(host):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return None
    return None


def _embedded_v4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address hidden in an IPv6 one: mapped, 6to4, Teredo, NAT64 or IPv4-compatible forms."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
    if ip in _NAT64 or (ip in _V4_COMPAT and int(ip) > 1):
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def address_refusal(ip: IPAddress) -> str | None:
    """Why `ip` may not be fetched without allow_private, or None when it is a public address."""
    if isinstance(ip, ipaddress.IPv6Address):
        inner = _embedded_v4(ip)
        if inner is not None:
            why = address_refusal(inner)
            return f"{why} (inside the IPv6 address {ip})" if why else None
    if ip in _METADATA:
        return "a cloud metadata address"
    for net, why in _NETS:
        if ip.version == net.version and ip in net:
            return why
    if ip.is_multicast:
        return "a multicast address"
    if not ip.is_global:
        return "not a public address"
    return None


def check_url(url: str | httpx.URL, allow_private: bool = False, resolver: Resolver | None = None) -> str:
    """Validate one URL and return the address to connect to; raise BlockedURLError (or SourceError when the
    host does not resolve). Every address the name resolves to must pass: one bad answer refuses the URL."""
    if isinstance(url, str):
        try:
            url = httpx.URL(url)
        except (httpx.InvalidURL, UnicodeError) as exc:
            raise BlockedURLError(f"refused invalid URL: {exc}") from None
    if url.scheme not in ALLOWED_SCHEMES:
        raise BlockedURLError(f"refused {url.scheme or 'scheme-less'} URL: only http and https are fetched")
    host = url.host
    if not host:
        raise BlockedURLError("refused URL without a host")
    port = url.port or (443 if url.scheme == "https" else 80)
    literal = parse_ip(host)
    addresses = [literal] if literal is not None else [_as_ip(a) for a in (resolver or system_resolver)(host, port)]
    if not addresses:
        raise SourceError(f"cannot resolve host {host!r}")
    if not allow_private:
        for ip in addresses:
            why = address_refusal(ip)
            if why:
                what = f"it resolves to {ip}, {why}" if literal is None else (
                    why if str(ip) == host.strip("[]") else f"that is {ip}, {why}")
                raise BlockedURLError(f"refused {host}: {what}; use --allow-private (setting allow_private) "
                                      "for intranet sites")
    return str(addresses[0])


def _as_ip(text: str) -> IPAddress:
    ip = parse_ip(text)
    if ip is None:
        raise SourceError(f"resolver returned a non-address {text!r}")
    return ip


class GuardedTransport(httpx.BaseTransport):
    """An httpx transport that validates each request's URL and sends it to the validated address, keeping the
    Host header and TLS SNI / certificate check on the name. With follow_redirects each hop comes back here."""

    def __init__(self, allow_private: bool = False, resolver: Resolver | None = None,
                 inner: httpx.BaseTransport | None = None) -> None:
        self.allow_private = allow_private
        self.resolver = resolver
        self.inner = inner or httpx.HTTPTransport(trust_env=False, retries=0)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        address = check_url(request.url, self.allow_private, self.resolver)
        host = request.url.host
        if parse_ip(host) is not None and str(parse_ip(host)) == address:
            target = request
        else:
            extensions = dict(request.extensions)
            if request.url.scheme == "https":
                extensions["sni_hostname"] = host
            headers = httpx.Headers(request.headers)
            headers.setdefault("Host", request.url.netloc.decode("ascii"))
            target = httpx.Request(request.method, request.url.copy_with(host=address), headers=headers,
                                   stream=request.stream, extensions=extensions)
        response = self.inner.handle_request(target)
        response.request = request
        return response

    def close(self) -> None:
        self.inner.close()


def guarded_client(allow_private: bool = False, resolver: Resolver | None = None, timeout: float = 30.0,
                   user_agent: str = "ragtune", inner: httpx.BaseTransport | None = None) -> httpx.Client:
    """An httpx.Client that cannot reach what the guard refuses. Redirects are not followed here (the crawler
    follows them itself, one guarded request per hop); proxies from the environment are ignored, since a proxy
    would connect on our behalf to an address we never checked."""
    return httpx.Client(transport=GuardedTransport(allow_private, resolver, inner), follow_redirects=False,
                        trust_env=False, timeout=timeout, headers={"User-Agent": user_agent})


def refused(urls: Iterable[str], allow_private: bool = False, resolver: Resolver | None = None) -> dict[str, str]:
    """url → reason for each URL the guard refuses (a convenience for checks and tests)."""
    out = {}
    for url in urls:
        try:
            check_url(url, allow_private, resolver)
        except SourceError as exc:
            out[url] = str(exc)
    return out
