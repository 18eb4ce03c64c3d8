"""Where a webhook may go (issue 12, acceptance 5): loopback, metadata, private and unique-local
destinations are refused when a subscription is registered (`check_url`) and when a delivery is
sent (`build_client`), named directly or through a host name, unless the test allow-list names
them; a name that changes its answer between check and send is refused; redirects are not
followed. Names are answered by a stub resolver and receivers listen on 127.0.0.1: no test
touches any other network."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import logging
import os
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from service.settings import InvalidSettings, Settings, load_settings
from service.webhooks.egress import (
    HOST_NAME_REFUSED,
    MAX_URL_LENGTH,
    DestinationRefused,
    IPAddress,
    build_client,
    check_url,
)

# Each destination the issue names, and the relatives an attacker reaches for next.
NON_PUBLIC = [
    ("127.0.0.1", "loopback"),
    ("127.255.255.254", "loopback"),
    ("169.254.169.254", "link-local (cloud metadata)"),
    ("10.0.0.1", "private"),
    ("10.255.255.254", "private"),
    ("172.16.0.1", "private"),
    ("172.31.255.254", "private"),
    ("192.168.0.1", "private"),
    ("192.168.255.254", "private"),
    ("::1", "loopback"),
    ("fc00::1", "unique-local"),
    ("fd00:ec2::254", "unique-local"),  # the AWS metadata endpoint over IPv6
    ("fe80::1", "link-local"),
    ("::ffff:127.0.0.1", "loopback"),
    ("::ffff:169.254.169.254", "link-local (cloud metadata)"),
    ("::ffff:10.0.0.1", "private"),
    ("64:ff9b::a9fe:a9fe", "link-local (cloud metadata)"),  # NAT64 of 169.254.169.254
    ("2002:c0a8:101::1", "a 6to4 tunnel address"),  # 6to4 of 192.168.1.1
    ("100.64.0.1", "shared address space (CGNAT)"),
    ("0.0.0.0", "unspecified"),  # noqa: S104 (a destination, not a bind address)
    ("::", "unspecified"),
    ("224.0.0.1", "multicast"),
    ("ff02::1", "multicast"),
    ("255.255.255.255", "reserved"),
    ("192.0.2.10", "reserved for documentation"),
]
PUBLIC_V4 = "8.8.8.8"
PUBLIC_V6 = "2001:4860:4860::8888"


def _netloc(address: str, port: int | None = None) -> str:
    host = f"[{address}]" if ":" in address else address
    return host if port is None else f"{host}:{port}"


def _settings(*allowed: str, env: str = "development", proxy: str | None = None) -> Settings:
    return Settings(
        database_url=None,
        env=env,
        webhook_allowed_networks=list(allowed),
        webhook_egress_proxy=proxy,
    )


class StubResolver:
    """Answers each host name from a script: the n-th lookup gets the n-th answer (the last one
    repeats); a name without a script does not resolve. Records every lookup."""

    def __init__(self, **answers: Sequence[Sequence[str]]) -> None:
        self._answers = {name.replace("_", "."): list(script) for name, script in answers.items()}
        self.lookups: list[str] = []

    async def resolve(self, host: str, port: int) -> list[IPAddress]:
        self.lookups.append(host)
        script = self._answers.get(host)
        if not script:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        answer = script.pop(0) if len(script) > 1 else script[0]
        return [ipaddress.ip_address(address) for address in answer]


@dataclass
class Seen:
    method: str
    target: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    """An HTTP/1.1 server on 127.0.0.1 answering every request with `status` (and `headers`),
    recording connections, requests and the TLS server name asked for."""

    status: int = 204
    headers: dict[str, str] = field(default_factory=dict)
    tls: ssl.SSLContext | None = None
    port: int = 0
    connections: int = 0
    requests: list[Seen] = field(default_factory=list)
    server_names: list[str | None] = field(default_factory=list)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            request_line, *header_lines = head.decode("latin-1").split("\r\n")
            method, target, _ = request_line.split(" ", 2)
            headers = {}
            for line in header_lines:
                if line:
                    name, value = line.split(":", 1)
                    headers[name.strip().lower()] = value.strip()
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            self.requests.append(Seen(method, target, headers, body))
            extra = "".join(f"{name}: {value}\r\n" for name, value in self.headers.items())
            writer.write(
                f"HTTP/1.1 {self.status} Answer\r\ncontent-length: 0\r\n"
                f"connection: close\r\n{extra}\r\n".encode()
            )
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
            pass
        finally:
            writer.close()

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"


StartReceiver = Callable[..., Awaitable[Receiver]]


@pytest.fixture
async def start_receiver() -> AsyncIterator[StartReceiver]:
    servers: list[asyncio.Server] = []

    async def start(**options: object) -> Receiver:
        receiver = Receiver(**options)  # type: ignore[arg-type]
        if receiver.tls is not None:

            def note_server_name(_: object, name: str | None, __: object) -> None:
                receiver.server_names.append(name)

            receiver.tls.sni_callback = note_server_name
        server = await asyncio.start_server(receiver.handle, "127.0.0.1", 0, ssl=receiver.tls)
        servers.append(server)
        receiver.port = server.sockets[0].getsockname()[1]
        return receiver

    yield start
    for server in servers:
        server.close()
        await server.wait_closed()


@dataclass
class Certificates:
    ca_file: Path
    server: ssl.SSLContext


def _certificates(directory: Path, server_name: str) -> Certificates:
    """A throwaway CA, and a server certificate it signed for `server_name`."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "egress test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, server_name)]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(server_name)]), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    ca_file = directory / "ca.pem"
    ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    chain_file = directory / "server.pem"
    chain_file.write_bytes(
        leaf.public_bytes(serialization.Encoding.PEM)
        + key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(chain_file)
    return Certificates(ca_file, server)


# Registration: check_url


@pytest.mark.parametrize(("address", "why"), NON_PUBLIC)
async def test_check_url_refuses_a_non_public_address(address: str, why: str) -> None:
    with pytest.raises(DestinationRefused) as refused:
        await check_url(f"https://{_netloc(address)}/hook", _settings())

    assert refused.value.reason == f"the URL's address is {why}"


@pytest.mark.parametrize(("address", "why"), NON_PUBLIC)
async def test_check_url_refuses_a_name_resolving_to_a_non_public_address(
    address: str, why: str
) -> None:
    resolver = StubResolver(partner_example=[[address]])

    with pytest.raises(DestinationRefused) as refused:
        await check_url("https://partner.example/hook", _settings(), resolver=resolver)

    # The reason does not say what the name resolved to: registering URLs maps nothing inside.
    assert refused.value.reason == HOST_NAME_REFUSED
    assert address not in refused.value.reason
    assert resolver.lookups == ["partner.example"]


async def test_check_url_refuses_a_name_when_any_of_its_addresses_is_not_public() -> None:
    resolver = StubResolver(partner_example=[[PUBLIC_V4, PUBLIC_V6, "10.0.0.7"]])

    with pytest.raises(DestinationRefused) as refused:
        await check_url("https://partner.example/hook", _settings(), resolver=resolver)

    assert refused.value.reason == HOST_NAME_REFUSED


async def test_check_url_refuses_a_name_that_does_not_resolve_with_the_same_reason() -> None:
    resolver = StubResolver()

    with pytest.raises(DestinationRefused) as refused:
        await check_url("https://intranet.example/hook", _settings(), resolver=resolver)

    assert refused.value.reason == HOST_NAME_REFUSED
    assert resolver.lookups == ["intranet.example"]


async def test_check_url_passes_public_addresses_and_names_resolving_to_them() -> None:
    resolver = StubResolver(partner_example=[[PUBLIC_V4, PUBLIC_V6]])

    await check_url(
        "https://partner.example:8443/hooks/neglect?x=1", _settings(), resolver=resolver
    )
    await check_url(f"https://{PUBLIC_V4}/hook", _settings(), resolver=resolver)
    await check_url(f"https://[{PUBLIC_V6}]/hook", _settings(), resolver=resolver)

    # Address literals are checked as written, never looked up.
    assert resolver.lookups == ["partner.example"]


async def test_check_url_asks_the_system_resolver_by_default_and_refuses_localhost() -> None:
    # `localhost` comes from the hosts file: no network is asked.
    with pytest.raises(DestinationRefused) as refused:
        await check_url("https://localhost/hook", _settings())

    assert refused.value.reason == HOST_NAME_REFUSED


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        (f"http://{PUBLIC_V4}/hook", "the URL must be an https URL"),
        ("http://partner.example/hook", "the URL must be an https URL"),
        ("ftp://partner.example/hook", "the URL must be an https URL"),
        ("file:///etc/passwd", "the URL must be an https URL"),
        ("/hook", "the URL must be an https URL"),
        (
            "https://user:secret@partner.example/hook",
            "the URL must not hold a user name or password",
        ),
        ("https://token@partner.example/hook", "the URL must not hold a user name or password"),
        ("https://2130706433/hook", "the host must be a host name or an address in standard form"),
        ("https://127.1/hook", "the host must be a host name or an address in standard form"),
        ("https://0x7f.0.0.1/hook", "the host must be a host name or an address in standard form"),
        ("https://exa mple.org/hook", "the host is not a valid host name"),
        ("https://partner.example%2Finternal/hook", "the host is not a valid host name"),
        ("https://[::1/hook", "the URL is not valid"),
        (
            "https://partner.example/" + "a" * MAX_URL_LENGTH,
            f"the URL is longer than {MAX_URL_LENGTH} characters",
        ),
    ],
)
async def test_check_url_refuses_a_url_of_the_wrong_form(url: str, reason: str) -> None:
    resolver = StubResolver(partner_example=[[PUBLIC_V4]])

    with pytest.raises(DestinationRefused) as refused:
        await check_url(url, _settings(), resolver=resolver)

    assert refused.value.reason == reason


# The allow-list


@pytest.fixture
def environment(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No NEGLECT_ variable of the machine running the tests leaks into `load_settings`."""
    for name in list(os.environ):
        if name.startswith("NEGLECT_"):
            monkeypatch.delenv(name)
    return monkeypatch


@pytest.mark.parametrize(
    ("address", "network"),
    [
        ("127.0.0.1", "127.0.0.1/32"),
        ("::ffff:127.0.0.1", "127.0.0.0/8"),
        ("169.254.169.254", "169.254.169.254/32"),
        ("10.1.2.3", "10.0.0.0/8"),
        ("172.20.0.5", "172.16.0.0/12"),
        ("192.168.7.7", "192.168.0.0/16"),
        ("::1", "::1/128"),
        ("fd12:3456::1", "fc00::/7"),
    ],
)
async def test_check_url_admits_what_the_allow_list_names(address: str, network: str) -> None:
    resolver = StubResolver(receiver_test=[[address]])
    settings = _settings(network)

    await check_url(f"https://{_netloc(address, 8443)}/hook", settings, resolver=resolver)
    await check_url("https://receiver.test:8443/hook", settings, resolver=resolver)
    # Plain http too, to an allow-listed host only.
    await check_url(f"http://{_netloc(address, 8080)}/hook", settings, resolver=resolver)

    assert resolver.lookups == ["receiver.test"]


async def test_the_allow_list_admits_nothing_beyond_its_networks() -> None:
    settings = _settings("127.0.0.1/32")
    resolver = StubResolver(receiver_test=[["127.0.0.1", "127.0.0.2"]])

    for address in ["127.0.0.2", "169.254.169.254", "10.0.0.1", "::1"]:
        with pytest.raises(DestinationRefused):
            await check_url(f"https://{_netloc(address)}/hook", settings)
    with pytest.raises(DestinationRefused) as refused:
        await check_url("https://receiver.test/hook", settings, resolver=resolver)

    assert refused.value.reason == HOST_NAME_REFUSED


async def test_the_allow_list_does_not_admit_plain_http_to_a_public_host() -> None:
    with pytest.raises(DestinationRefused) as refused:
        await check_url(f"http://{PUBLIC_V4}/hook", _settings("127.0.0.1/32"))

    assert refused.value.reason == "the URL must be an https URL"


async def test_production_settings_admit_loopback_networks_only(
    environment: pytest.MonkeyPatch,
) -> None:
    environment.setenv("NEGLECT_ENV", "production")
    environment.setenv("NEGLECT_WEBHOOK_ALLOWED_NETWORKS", '["127.0.0.1/32", "::1/128"]')
    admitted = load_settings().webhook_allowed_networks
    environment.setenv("NEGLECT_WEBHOOK_ALLOWED_NETWORKS", '["127.0.0.1/32", "10.0.0.0/8"]')

    with pytest.raises(InvalidSettings) as invalid:
        load_settings()

    assert [str(network) for network in admitted] == ["127.0.0.1/32", "::1/128"]
    assert str(invalid.value) == (
        "NEGLECT_WEBHOOK_ALLOWED_NETWORKS is for development and the test suite; "
        "production admits loopback networks only (within 127.0.0.0/8, or ::1/128)"
    )


async def test_production_drops_what_is_not_loopback_from_an_unvalidated_allow_list() -> None:
    settings = _settings("10.0.0.0/8", "127.0.0.1/32").model_copy(update={"env": "production"})

    await check_url("https://127.0.0.1/hook", settings)
    with pytest.raises(DestinationRefused) as refused:
        await check_url("https://10.1.2.3/hook", settings)
    async with build_client(settings) as client:
        with pytest.raises(DestinationRefused):
            await client.post("https://10.1.2.3/hook")

    assert refused.value.reason == "the URL's address is private"


async def test_a_production_client_with_an_allow_list_says_so_in_the_log(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="service.webhooks.egress"):
        async with build_client(_settings("127.0.0.1/32", env="production")):
            pass
        async with build_client(_settings(env="production")):
            pass

    assert [record.getMessage() for record in caplog.records] == [
        "NEGLECT_WEBHOOK_ALLOWED_NETWORKS is set in production: webhooks may reach 127.0.0.1/32"
    ]


async def test_without_an_allow_list_plain_http_is_refused_before_any_lookup() -> None:
    resolver = StubResolver(partner_example=[[PUBLIC_V4]])

    with pytest.raises(DestinationRefused) as at_registration:
        await check_url("http://partner.example/hook", _settings(), resolver=resolver)
    async with build_client(_settings(), resolver=resolver) as client:
        with pytest.raises(DestinationRefused) as at_send:
            await client.post("http://partner.example/hook", content=b"{}")

    assert at_registration.value.reason == at_send.value.reason == "the URL must be an https URL"
    assert resolver.lookups == []


async def test_a_network_with_host_bits_set_is_refused_by_name(
    environment: pytest.MonkeyPatch,
) -> None:
    environment.setenv("NEGLECT_ENV", "development")
    environment.setenv("NEGLECT_WEBHOOK_ALLOWED_NETWORKS", '["127.0.0.1/32", "10.0.0.1/8"]')

    with pytest.raises(InvalidSettings) as invalid:
        load_settings()

    assert str(invalid.value).startswith("NEGLECT_WEBHOOK_ALLOWED_NETWORKS[1]: ")


@pytest.mark.parametrize(
    "proxy", ["socks5://proxy.internal:1080", "proxy.internal:3128", "http://p:pw@proxy/a/b"]
)
async def test_an_egress_proxy_that_is_not_an_http_proxy_url_is_refused_unrepeated(
    environment: pytest.MonkeyPatch, proxy: str
) -> None:
    environment.setenv("NEGLECT_WEBHOOK_EGRESS_PROXY", proxy)

    with pytest.raises(InvalidSettings) as invalid:
        load_settings()

    assert str(invalid.value).startswith("NEGLECT_WEBHOOK_EGRESS_PROXY: must be")
    assert proxy not in str(invalid.value)


# Sending: build_client


@pytest.mark.parametrize(("address", "why"), NON_PUBLIC)
async def test_sending_refuses_a_non_public_address(address: str, why: str) -> None:
    async with build_client(_settings()) as client:
        with pytest.raises(DestinationRefused) as refused:
            await client.post(f"https://{_netloc(address)}/hook", content=b"{}")

    assert refused.value.reason == f"the URL's address is {why}"


@pytest.mark.parametrize(("address", "why"), NON_PUBLIC)
async def test_sending_refuses_a_name_resolving_to_a_non_public_address(
    address: str, why: str
) -> None:
    resolver = StubResolver(partner_example=[[address]])

    async with build_client(_settings(), resolver=resolver) as client:
        with pytest.raises(DestinationRefused) as refused:
            await client.post("https://partner.example/hook", content=b"{}")

    assert refused.value.reason == HOST_NAME_REFUSED
    assert resolver.lookups == ["partner.example"]


async def test_sending_refuses_a_loopback_receiver_that_is_not_allow_listed(
    start_receiver: StartReceiver,
) -> None:
    receiver = await start_receiver()
    resolver = StubResolver(receiver_test=[["127.0.0.1"]])

    async with build_client(_settings(), resolver=resolver) as client:
        with pytest.raises(DestinationRefused):
            await client.post(f"https://127.0.0.1:{receiver.port}/hook", content=b"{}")
        with pytest.raises(DestinationRefused):
            await client.post(f"https://receiver.test:{receiver.port}/hook", content=b"{}")

    assert receiver.connections == 0


async def test_sending_refuses_a_name_that_rebinds_to_loopback_after_the_check(
    start_receiver: StartReceiver,
) -> None:
    receiver = await start_receiver()
    # Public when registered; loopback, where something listens, when the delivery goes out.
    resolver = StubResolver(partner_example=[[PUBLIC_V4], ["127.0.0.1"]])
    url = f"https://partner.example:{receiver.port}/hook"
    await check_url(url, _settings(), resolver=resolver)

    async with build_client(_settings(), resolver=resolver) as client:
        with pytest.raises(DestinationRefused) as refused:
            await client.post(url, content=b"{}")

    assert refused.value.reason == HOST_NAME_REFUSED
    assert resolver.lookups == ["partner.example", "partner.example"]
    assert receiver.connections == 0


async def test_sending_refuses_a_name_when_any_of_its_addresses_is_not_public() -> None:
    resolver = StubResolver(partner_example=[[PUBLIC_V4, "169.254.169.254"]])

    async with build_client(_settings(), resolver=resolver) as client:
        with pytest.raises(DestinationRefused):
            await client.post("https://partner.example/hook", content=b"{}")

    assert resolver.lookups == ["partner.example"]


async def test_sending_refuses_plain_http_and_a_user_name_before_any_lookup() -> None:
    resolver = StubResolver(partner_example=[[PUBLIC_V4]])

    async with build_client(_settings("127.0.0.1/32"), resolver=resolver) as client:
        with pytest.raises(DestinationRefused) as plain:
            await client.post("http://partner.example/hook", content=b"{}")
        with pytest.raises(DestinationRefused) as userinfo:
            await client.post("https://user:secret@partner.example/hook", content=b"{}")

    assert plain.value.reason == "the URL must be an https URL"
    assert userinfo.value.reason == "the URL must not hold a user name or password"
    # Plain http was refused once the name was found public; the user name before any lookup.
    assert resolver.lookups == ["partner.example"]


async def test_sending_to_a_name_that_does_not_resolve_is_a_connect_error() -> None:
    resolver = StubResolver()

    async with build_client(_settings(), resolver=resolver) as client:
        # The network's fault, not the URL's: the delivery is retried.
        with pytest.raises(httpx.ConnectError):
            await client.post("https://partner.example/hook", content=b"{}")

    assert resolver.lookups == ["partner.example"]


class HangingResolver:
    async def resolve(self, host: str, port: int) -> list[IPAddress]:
        await asyncio.Event().wait()
        raise AssertionError("never answers")


async def test_a_lookup_that_hangs_at_send_time_is_a_connect_timeout() -> None:
    async with build_client(_settings(), resolver=HangingResolver()) as client:
        # Bounded by the request's connect timeout, like the connection it is part of.
        with pytest.raises(httpx.ConnectTimeout) as timed_out:
            await client.post("https://partner.example/hook", content=b"{}", timeout=0.2)

    assert "partner.example" in str(timed_out.value)


async def test_an_allow_listed_receiver_is_reached_by_name_in_one_lookup_with_its_host_header(
    start_receiver: StartReceiver,
) -> None:
    receiver = await start_receiver(status=204)
    # Were the address looked up again after the check, the second answer would be used.
    resolver = StubResolver(receiver_test=[["127.0.0.1"], ["10.0.0.1"]])

    async with build_client(_settings("127.0.0.1/32"), resolver=resolver) as client:
        response = await client.post(
            f"http://receiver.test:{receiver.port}/hooks/neglect", content=b'{"type":"x"}'
        )

    assert response.status_code == 204
    assert resolver.lookups == ["receiver.test"]
    assert [(seen.method, seen.target, seen.body) for seen in receiver.requests] == [
        ("POST", "/hooks/neglect", b'{"type":"x"}')
    ]
    assert receiver.requests[0].headers["host"] == f"receiver.test:{receiver.port}"


async def test_redirects_are_not_followed(start_receiver: StartReceiver) -> None:
    elsewhere = await start_receiver(status=204)
    redirecting = await start_receiver(
        status=302, headers={"location": f"{elsewhere.url}/elsewhere"}
    )

    async with build_client(_settings("127.0.0.1/32")) as client:
        response = await client.post(f"{redirecting.url}/hook", content=b"{}")

    assert response.status_code == 302
    assert len(redirecting.requests) == 1
    assert elsewhere.connections == 0


async def test_a_redirect_followed_on_request_is_checked_like_any_url(
    start_receiver: StartReceiver,
) -> None:
    redirecting = await start_receiver(
        status=307, headers={"location": "http://169.254.169.254/latest/meta-data/"}
    )

    async with build_client(_settings("127.0.0.1/32")) as client:
        with pytest.raises(DestinationRefused) as refused:
            await client.post(f"{redirecting.url}/hook", content=b"{}", follow_redirects=True)

    assert refused.value.reason == "the URL's address is link-local (cloud metadata)"
    assert len(redirecting.requests) == 1


async def test_tls_on_the_pinned_address_is_verified_for_the_original_name(
    start_receiver: StartReceiver, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    certificates = _certificates(tmp_path, "receiver.test")
    monkeypatch.setenv("SSL_CERT_FILE", str(certificates.ca_file))
    receiver = await start_receiver(status=200, tls=certificates.server)
    resolver = StubResolver(receiver_test=[["127.0.0.1"]])

    async with build_client(_settings("127.0.0.1/32"), resolver=resolver) as client:
        response = await client.post(f"https://receiver.test:{receiver.port}/hook", content=b"{}")

    assert response.status_code == 200
    assert receiver.server_names == ["receiver.test"]
    assert receiver.requests[0].headers["host"] == f"receiver.test:{receiver.port}"


async def test_tls_refuses_a_certificate_for_another_name_on_the_pinned_address(
    start_receiver: StartReceiver, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    certificates = _certificates(tmp_path, "impostor.test")
    monkeypatch.setenv("SSL_CERT_FILE", str(certificates.ca_file))
    receiver = await start_receiver(status=200, tls=certificates.server)
    resolver = StubResolver(receiver_test=[["127.0.0.1"]])

    async with build_client(_settings("127.0.0.1/32"), resolver=resolver) as client:
        with pytest.raises(httpx.ConnectError, match="certificate"):
            await client.post(f"https://receiver.test:{receiver.port}/hook", content=b"{}")

    assert receiver.server_names == ["receiver.test"]
    assert receiver.requests == []


# Through an egress proxy


async def test_through_the_proxy_a_name_resolving_to_a_private_address_is_refused(
    start_receiver: StartReceiver,
) -> None:
    proxy = await start_receiver(status=403)
    resolver = StubResolver(partner_example=[["10.0.0.9"]])
    settings = _settings(env="production", proxy=proxy.url)

    async with build_client(settings, resolver=resolver) as client:
        with pytest.raises(DestinationRefused) as refused:
            await client.post("https://partner.example/hook", content=b"{}")
        with pytest.raises(DestinationRefused):
            await client.post("https://169.254.169.254/hook", content=b"{}")

    assert refused.value.reason == HOST_NAME_REFUSED
    assert proxy.connections == 0


async def test_through_the_proxy_the_proxy_connects_to_the_original_name(
    start_receiver: StartReceiver,
) -> None:
    # The proxy answers 403 to the CONNECT: nothing goes further than loopback.
    proxy = await start_receiver(status=403)
    resolver = StubResolver(partner_example=[[PUBLIC_V4]])
    settings = _settings(env="production", proxy=proxy.url)

    async with build_client(settings, resolver=resolver) as client:
        with pytest.raises(httpx.ProxyError):
            await client.post("https://partner.example/hook", content=b"{}")

    assert resolver.lookups == ["partner.example"]
    assert [(seen.method, seen.target) for seen in proxy.requests] == [
        ("CONNECT", "partner.example:443")
    ]
