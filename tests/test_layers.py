"""The house's rooms, from the import graph: the core knows no wire protocol and no
transport, the HTTP side never takes the server object, ``broadcaster`` and
``channel_auth`` never import ``echo_server``, and no module imports one that imports it
back. Read from the source (``ast``), so a deferred or type-checking-only import counts too."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("echo_server", "echo_common", "broadcaster", "channel_auth")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    modules = {_module_name(p): p for package in PACKAGES
               for p in (ROOT / package).rglob("*.py")}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")
                    base = base[:len(base) - node.level + 1]
                    target = ".".join([*base, node.module] if node.module else base)
                else:
                    target = node.module or ""
                found.add(target)
                found.update(f"{target}.{alias.name}" for alias in node.names)
        graph[name] = {m for m in found if m in modules}
    return graph


GRAPH = _imports()


def _reaches(start: str, forbidden: tuple[str, ...]) -> list[str]:
    return sorted(m for m in GRAPH[start] if m.startswith(forbidden))


def test_the_core_imports_no_transport_and_no_wire_protocol() -> None:
    core = [m for m in GRAPH if m.startswith("echo_server.core")]
    assert len(core) >= 8
    for module in core:
        assert not _reaches(module, ("echo_server.transport", "echo_server.adapters",
                                     "echo_server.process", "echo_server.web",
                                     "echo_server.demo")), module


def test_the_http_side_never_takes_the_server() -> None:
    web = [m for m in GRAPH if m.startswith("echo_server.web")]
    assert len(web) >= 5
    for module in web:
        assert not _reaches(module, ("echo_server.process", "echo_server.demo",
                                     "echo_server.adapters")), module


def test_transport_knows_no_channels() -> None:
    for module in (m for m in GRAPH if m.startswith("echo_server.transport")):
        assert not _reaches(module, ("echo_server.core", "echo_server.adapters")), module


def test_libraries_never_import_the_server_package() -> None:
    for module in (m for m in GRAPH if m.startswith(("broadcaster", "channel_auth"))):
        assert not _reaches(module, ("echo_server",)), module


def test_the_apps_room_knows_no_wire_and_no_server() -> None:
    """Every consumer takes an ``App`` from here; the room takes nothing from them."""
    apps = [m for m in GRAPH if m.startswith("echo_server.apps")]
    assert len(apps) >= 7
    for module in apps:
        assert not _reaches(module, ("echo_server.transport", "echo_server.adapters",
                                     "echo_server.web", "echo_server.core",
                                     "echo_server.process", "echo_server.config",
                                     "echo_server.demo", "echo_server.webhooks")), module


def test_protocols_are_built_without_the_server() -> None:
    """A protocol is declared (adapters/protocols.py) and built from an ``Assembly`` with one
    line in adapters/registry.py: no adapter takes the server, the HTTP side or the process."""
    adapters = [m for m in GRAPH if m.startswith("echo_server.adapters")]
    assert {"echo_server.adapters.protocols", "echo_server.adapters.registry"} <= set(adapters)
    for module in adapters:
        assert not _reaches(module, ("echo_server.process", "echo_server.web",
                                     "echo_server.config", "echo_server.demo")), module


def test_the_process_reaches_protocols_only_through_the_registry() -> None:
    """Every wire protocol, Socket.IO and Pusher too, is built by a factory the registry lists
    and reached through what it declares (adapters/protocols.py): the process imports none
    of a protocol's parts (an adapter's modules, the Engine.IO and Socket.IO servers), so one
    more protocol never changes it."""
    parts = ("echo_server.adapters", "echo_server.transport.engine",
             "echo_server.transport.sockets", "echo_server.transport.wsconn")
    allowed = {"echo_server.adapters.protocols", "echo_server.adapters.registry"}
    process = [m for m in GRAPH if m.startswith("echo_server.process")]
    assert "echo_server.process.server" in process
    for module in process:
        assert set(_reaches(module, parts)) <= allowed, module


def test_no_import_cycles() -> None:
    seen: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(module: str) -> None:
        seen[module] = 1
        path.append(module)
        for target in sorted(GRAPH[module]):
            if target.startswith(module + "."):
                continue  # a package importing its own modules is how packages work
            state = seen.get(target)
            assert state != 1, " -> ".join([*path[path.index(target):], target])
            if state is None:
                visit(target)
        path.pop()
        seen[module] = 2

    for module in sorted(GRAPH):
        if module not in seen:
            visit(module)


def test_the_neutral_room_imports_none_of_the_others() -> None:
    for module in (m for m in GRAPH if m.startswith("echo_common")):
        assert not _reaches(module, ("echo_server", "broadcaster", "channel_auth")), module


def test_every_outgoing_http_client_is_made_in_one_place() -> None:
    """``echo_common.http_client`` makes them without a cookie jar; a ``ClientSession`` made
    anywhere else would keep one user's cookies for the next (issue 20)."""
    makers = sorted(str(path.relative_to(ROOT)) for package in PACKAGES
                    for path in (ROOT / package).rglob("*.py")
                    if "ClientSession(" in path.read_text())
    assert makers == ["echo_common/http_client.py"]


def test_nothing_below_the_process_reaches_up_into_it() -> None:
    """The process (``echo_server.process``) and the demo assemble the layers; no layer
    takes either back."""
    below = ("echo_server.core", "echo_server.transport", "echo_server.adapters",
             "echo_server.web", "echo_server.apps", "echo_server.webhooks")
    for module in (m for m in GRAPH if m.startswith(below)):
        assert not _reaches(module, ("echo_server.process", "echo_server.demo")), module


def test_the_top_of_the_package_holds_rooms() -> None:
    loose = sorted(p.name for p in (ROOT / "echo_server").glob("*.py"))
    assert loose == ["__init__.py", "__main__.py", "config.py"]


def _writes_through(target: ast.expr) -> list[str]:
    """``a.b.c`` for each ``a.b.c = ...`` (a tuple's too): a write into ``a.b``'s attributes."""
    if isinstance(target, ast.Tuple):
        return [name for element in target.elts for name in _writes_through(element)]
    if isinstance(target, ast.Attribute) and isinstance(target.value, ast.Attribute):
        return [ast.unparse(target)]
    return []


def test_the_assembly_writes_into_no_part_it_built() -> None:
    """The server builds each part with what it works with (the core with its collaborators:
    the cluster, recovery's parts, the shared presence store, what times each batch) and
    changes one later only through the part's own methods (``presence.share``,
    ``core.authorize_with``, ``pusher.reconfigure``...), never by writing into it. Health
    alone has settings the process moves: the phase it reports, and a reload's timeout."""
    allowed = {"self.health.phase", "server.health.check_timeout"}
    writes = []
    for name in ("server.py", "reload.py"):
        path = ROOT / "echo_server" / "process" / name
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                writes += [f"{name}:{node.lineno}: {write}" for target in targets
                           for write in _writes_through(target)
                           if write not in allowed]
    assert writes == []
