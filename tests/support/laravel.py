"""A real Laravel application for the tests: ``tests/laravel_app`` on Debian's Laravel 8.

The app is our own (no Composer, no vendor/): ``bootstrap/app.php`` loads the framework with
Debian's autoloader (``Illuminate/autoload.php`` on PHP's include_path, from the
``php-laravel-framework`` package). It is served by ``php -S`` with several workers on a free
loopback port, and reached at a host name (``http://localhost:<port>``), as deployments reach
theirs. It publishes to the test's Redis with Laravel's default prefix and writes one JSON line
per ``/broadcasting/auth`` to its record of whom it authenticated (``records()``).

``LaravelPage`` is one browser's view of the app: its own cookie jar, the CSRF token of the
page, and the Cookie header the browser would send on the Socket.IO handshake.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import os
import shutil
import socket
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from yarl import URL

from tests.conftest import _wait_listening, stop_process

APP_DIR = Path(__file__).resolve().parents[1] / "laravel_app"
# What Debian's php-laravel-framework installs on PHP's include_path.
FRAMEWORK_AUTOLOADER = Path("/usr/share/php/Illuminate/autoload.php")
# config/database.php: Str::slug(APP_NAME, '_') . '_database_' with APP_NAME=Laravel.
REDIS_PREFIX = "laravel_database_"
# config/auth.php: the app's fixed users.
USERS = {1: {"id": 1, "name": "Ayşe Yılmaz"}, 2: {"id": 2, "name": "Mehmet Demir"},
         3: {"id": 3, "name": "Zeynep Kaya"}}
TOKENS = {1: "token-of-ayse", 2: "token-of-mehmet", 3: "token-of-zeynep"}


def missing() -> str | None:
    """Why the app cannot run here, or None."""
    php = shutil.which("php")
    if php is None:
        return "php is not installed (`apt-get install php-cli`; `scripts/setup --test` does it)"
    if not FRAMEWORK_AUTOLOADER.exists():
        return ("Laravel is not installed (`apt-get install php-laravel-framework`; "
                "`scripts/setup --test` does it)")
    modules = subprocess.run([php, "-m"], capture_output=True, text=True, check=False).stdout
    if "redis" not in modules.split():
        return "phpredis is not installed (`apt-get install php-redis`)"
    return None


class LaravelApp:
    """``php -S`` serving the app; ``url`` is the host-name address, ``ip_url`` the IP one."""

    def __init__(self, storage: Path, redis_url: str, port: int, workers: int = 4) -> None:
        self.storage = storage
        self.port = port
        self.url = f"http://localhost:{port}"
        self.ip_url = f"http://127.0.0.1:{port}"
        self.record_file = storage / "broadcast-auth.log"
        parts = urlsplit(redis_url)
        self.env = {
            **os.environ,
            "PHP_CLI_SERVER_WORKERS": str(workers),
            "APP_STORAGE_PATH": str(storage),
            "REDIS_HOST": parts.hostname or "127.0.0.1",
            "REDIS_PORT": str(parts.port or 6379),
            "REDIS_DB": parts.path.strip("/") or "0",
        }
        if parts.password:
            self.env["REDIS_PASSWORD"] = parts.password
        self.log = storage / "php-server.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        # "localhost" must be this machine's loopback, where php listens.
        addresses = {info[4][0] for info in socket.getaddrinfo("localhost", self.port,
                                                                socket.AF_INET)}
        assert addresses == {"127.0.0.1"}, f"localhost resolves to {addresses}"
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                ["php", "-S", f"127.0.0.1:{self.port}", "-t", str(APP_DIR / "public"),
                 str(APP_DIR / "public" / "index.php")],
                cwd=APP_DIR, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                # Its own process group: the workers it forks outlive a SIGTERM to it alone.
                start_new_session=True)
        try:
            _wait_listening(self.proc, self.port, "php -S")
        except RuntimeError as exc:
            self.stop()
            raise RuntimeError(f"{exc}\n{self.log.read_text()[-2000:]}") from None

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc, group=True)
            self.proc = None

    def records(self) -> list[dict[str, Any]]:
        """Every /broadcasting/auth the app answered, as it saw it (oldest first)."""
        if not self.record_file.exists():
            return []
        return [json.loads(line) for line in self.record_file.read_text().splitlines()]

    async def record_of(self, socket_id: str, channel: str,
                        timeout: float = 5.0) -> dict[str, Any]:
        """The app's record of the auth request for ``socket_id`` on ``channel``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            found = [r for r in self.records()
                     if r["socket_id"] == socket_id and r["channel"] == channel]
            if found:
                assert len(found) == 1, found
                return found[0]
            if loop.time() > deadline:
                raise AssertionError(f"the app recorded no auth of {socket_id} on {channel}; "
                                     f"it recorded: {self.records()}")
            await asyncio.sleep(0.01)


class LaravelPage:
    """One browser tab's page of the app: a session of its own (guest until ``login``)."""

    def __init__(self, app: LaravelApp) -> None:
        self.app = app
        # A browser keeps its own cookies (this page's alone); unsafe=True: of an IP host too,
        # whichever address the app is reached at.
        self.http = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
        self.csrf = ""
        self.session = ""
        self.user: int | None = None

    async def _page(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        headers = {"Accept": "application/json", "X-CSRF-TOKEN": self.csrf,
                   **kwargs.pop("headers", {})}
        async with self.http.request(method, self.app.url + path, headers=headers,
                                     **kwargs) as response:
            body = await response.json(content_type=None)
            assert response.status == 200, (response.status, body)
            return body

    async def open(self) -> LaravelPage:
        """GET the page: the session cookie and the CSRF token of its <meta> tag."""
        page = await self._page("GET", "/page")
        self.csrf, self.session = page["csrf"], page["session"]
        return self

    async def login(self, user: int) -> LaravelPage:
        page = await self._page("POST", f"/login/{user}")
        assert page["user"] == user
        self.csrf, self.session, self.user = page["csrf"], page["session"], user
        return self

    @property
    def cookie(self) -> str:
        """The Cookie header this browser sends to the app's host (and so to the Echo server's
        on the same host): the session and XSRF-TOKEN cookies."""
        cookies = self.http.cookie_jar.filter_cookies(URL(self.app.url))
        assert "laravel_session" in cookies, cookies
        return "; ".join(f"{name}={morsel.value}" for name, morsel in cookies.items())

    def echo_options(self) -> dict[str, Any]:
        """What the page gives its Echo client: the CSRF token (Echo's ``csrfToken``, sent as
        X-CSRF-TOKEN) and the browser's cookies on the handshake."""
        return {"csrf_token": self.csrf, "extra_headers": {"Cookie": self.cookie}}

    async def dispatch(self, path: str, body: dict[str, Any], *,
                       socket_id: str | None = None) -> None:
        """A POST from the page (axios: X-CSRF-TOKEN, X-Socket-ID) that makes the app
        broadcast; ``to_others`` in ``body`` is broadcast(...)->toOthers()."""
        headers = {"X-Socket-ID": socket_id} if socket_id else {}
        await self._page("POST", path, json=body, headers=headers)

    async def close(self) -> None:
        await self.http.close()


def throwaway_ca(directory: Path, host: str = "localhost") -> tuple[Path, Path, Path]:
    """A CA of this test's own and a certificate for ``host`` it signed: (CA, cert, key)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.UTC)
    valid = (now - datetime.timedelta(minutes=1), now + datetime.timedelta(days=1))

    def builder(subject: str, issuer: str, public_key: Any) -> x509.CertificateBuilder:
        return (x509.CertificateBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
                .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
                .public_key(public_key).serial_number(x509.random_serial_number())
                .not_valid_before(valid[0]).not_valid_after(valid[1]))

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (builder("echo-server test CA", "echo-server test CA", ca_key.public_key())
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(
              digital_signature=True, key_cert_sign=True, crl_sign=True,
              content_commitment=False, key_encipherment=False, data_encipherment=False,
              key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()),
                         critical=False)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (builder(host, "echo-server test CA", key.public_key())
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(host)]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                           critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths = directory / "ca.pem", directory / f"{host}.pem", directory / f"{host}.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return paths


def nginx_tls_proxy(port: int, cert: Path, key: Path, upstream_port: int) -> str:
    """An nginx ``http { }`` snippet: TLS on ``port`` in front of the app, as in production."""
    return f"""
    server {{
        listen 127.0.0.1:{port} ssl;
        server_name localhost;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        location / {{
            proxy_pass http://127.0.0.1:{upstream_port};
            proxy_set_header Host $http_host;
            proxy_set_header X-Forwarded-Proto https;
            proxy_set_header X-Forwarded-For $remote_addr;
        }}
    }}
"""
