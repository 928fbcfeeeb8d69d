"""Redis and the event sources in ``laravel-echo-server.json``: ``database`` and
``databaseConfig`` (presence's store; ioredis's options, Sentinel and Cluster included, read
into one redis-py URL for ``redis_client``), ``subscribers`` and our ``sources`` (what
``ingest`` listens to)."""

from __future__ import annotations

import ipaddress
from typing import Any
from urllib.parse import quote

from echo_common.values import js_truthy, section


class RedisSettings:
    """Redis and the sources, as properties of ``Config``."""

    raw: dict[str, Any]
    environ: dict[str, str]

    @property
    def subscribers_http(self) -> bool:
        return js_truthy(section(self.raw, "subscribers").get("http"))

    @property
    def subscribers_redis(self) -> bool:
        return js_truthy(section(self.raw, "subscribers").get("redis"))

    @property
    def database(self) -> str:
        return str(self.raw.get("database") or "redis")

    @property
    def presence_backend(self) -> str:
        """`sqlite` becomes in-memory presence: it only has to outlive nothing but its sockets."""
        return {"sqlite": "memory", "redis": "redis"}.get(self.database, self.database)

    @property
    def redis_options(self) -> dict[str, Any]:
        value = section(self.raw, "databaseConfig").get("redis")
        return value if isinstance(value, dict) else {}

    @property
    def key_prefix(self) -> str:
        return str(self.redis_options.get("keyPrefix") or "")

    @property
    def publish_presence(self) -> bool:
        return js_truthy(section(self.raw, "databaseConfig").get("publishPresence"))

    @property
    def redis_url(self) -> str:
        """A redis-py URL for the ioredis options the reference would get.

        ioredis's Sentinel form (``sentinels: [{host, port}]`` with ``name``, and
        ``sentinelPassword``) becomes ``redis+sentinel://``; our ``clusterNodes: [{host, port}]``
        (ioredis takes Cluster nodes in a different constructor the reference never calls)
        becomes ``redis+cluster://``. ``url`` is taken as given, any of these forms included.
        """
        options = self.redis_options
        if options.get("url"):
            return str(options["url"])
        db = int(options.get("db") or 0)
        auth = _redis_auth(options.get("username"), options.get("password"))
        if options.get("sentinels"):
            hosts = _host_list(options["sentinels"], 26379, "databaseConfig.redis.sentinels")
            name = options.get("name")
            if not name or not isinstance(name, str):
                raise ValueError("databaseConfig.redis.sentinels needs `name`, the master's "
                                 "name the Sentinels monitor (e.g. \"mymaster\")")
            query = ""
            if options.get("sentinelPassword"):
                query = "?sentinel_password=" + quote(str(options["sentinelPassword"]), safe="")
            return f"redis+sentinel://{auth}{hosts}/{quote(name, safe='')}/{db}{query}"
        if options.get("clusterNodes"):
            hosts = _host_list(options["clusterNodes"], 6379, "databaseConfig.redis.clusterNodes")
            scheme = "rediss+cluster" if js_truthy(options.get("tls")) else "redis+cluster"
            return f"{scheme}://{auth}{hosts}"
        if options.get("path"):
            return f"unix://{auth}{quote(str(options['path']))}?db={db}"
        scheme = "rediss" if js_truthy(options.get("tls")) else "redis"
        host = str(options.get("host") or "127.0.0.1")
        if _is_ipv6(host):
            host = f"[{host}]"
        port = int(options.get("port") or 6379)
        return f"{scheme}://{auth}{host}:{port}/{db}"

    @property
    def source_urls(self) -> list[str]:
        """Ours: what the server listens to, besides the in-process bus that always runs.

        `ECHO_SOURCES` (comma-separated) over `sources` (a list of URLs, or one comma-separated
        string). Without either, the reference's settings: `subscribers.redis` with
        `databaseConfig.redis` becomes one `redis://` URL carrying `keyPrefix` as `?prefix=`.
        """
        value: Any = self.environ.get("ECHO_SOURCES") or self.raw.get("sources")
        if value:
            items = value.split(",") if isinstance(value, str) else value
            if not isinstance(items, list) or not all(isinstance(u, str) for u in items):
                raise ValueError("`sources` must be a list of URLs (or a comma-separated string)")
            from broadcaster.sources import check_url

            urls = [url.strip() for url in items if url.strip()]
            for url in urls:
                check_url(url)
            return urls
        if not self.subscribers_redis:
            return []
        url = self.redis_url
        if self.key_prefix:
            url += ("&" if "?" in url else "?") + "prefix=" + quote(self.key_prefix, safe="")
        return [url]


def _redis_auth(username: Any, password: Any) -> str:
    user = quote(str(username), safe="") if username else ""
    if password:
        return f"{user}:{quote(str(password), safe='')}@"
    return f"{user}@" if user else ""


def _host_list(value: Any, default_port: int, name: str) -> str:
    """ioredis's ``[{host, port}, ...]`` (or ``"host:port"`` strings) as ``h:p,h2:p2``."""
    if not isinstance(value, list):
        raise ValueError(f"{name} must be a list of {{host, port}} objects")
    hosts: list[str] = []
    for item in value:
        if isinstance(item, str):  # "host:port" or "host"; IPv6 only in the object form
            host, _, port = item.partition(":") if item.count(":") == 1 else (item, "", "")
        elif isinstance(item, dict):
            host, port = str(item.get("host") or "127.0.0.1"), str(item.get("port") or "")
        else:
            raise ValueError(f"{name} must be a list of {{host, port}} objects")
        if _is_ipv6(host):
            host = f"[{host}]"
        hosts.append(f"{host}:{int(port or default_port)}")
    if not hosts:
        raise ValueError(f"{name} is empty")
    return ",".join(hosts)


def _is_ipv6(host: str) -> bool:
    try:
        return isinstance(ipaddress.ip_address(host), ipaddress.IPv6Address)
    except ValueError:
        return False
