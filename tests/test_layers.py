"""The layer contract: imports point one way through the tree (the data flow of the README's
layout). Every import counts — module level, inside functions (lazy) and under TYPE_CHECKING.

    wire/      imports nothing of the kit but errors (and itself)
    transport/ imports only wire, errors and events (the thin I/O layer under both servers)
    client/    imports neither upstream/, broker/, live/, ui/, sim/ nor the facade
    sim/       imports neither the client, upstream/, broker/, live/, ui/ nor the facade
    live/      imports neither broker/, upstream/, ui/, sim/ nor the facade (the broker feeds it)
    ui/        is imported by nothing but ui/ and the command line
    sinks/     imports neither ui/, sim/, the facade nor the command line (a broker consumer)
    recording/ imports only wire, errors, models and events (the format is pure)
    sim/exchange/ imports only wire, errors and itself, and no I/O (asyncio, sockets, websockets, ...)
    pipeline/  imports only wire, errors and models (the Kafka schema and continuity rules are pure)
and there is no import cycle between client/, upstream/, broker/ and live/.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "deribit_kit"


def _module(path: Path) -> str:
    rel = path.relative_to(ROOT.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports() -> dict[str, set[str]]:
    """Every module of the kit -> the kit modules it imports (anywhere in the file)."""
    graph: dict[str, set[str]] = {}
    for path in ROOT.rglob("*.py"):
        mod = _module(path)
        package = mod if path.name == "__init__.py" else mod.rsplit(".", 1)[0]
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                found.update(a.name for a in node.names if a.name.startswith("deribit_kit"))
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")
                    base = base[: len(base) - node.level + 1]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                if target.startswith("deribit_kit"):
                    found.add(target)
                    found.update(f"{target}.{a.name}" for a in node.names)  # `from . import x`
        graph[mod] = {m for m in found if _exists(m)}
    return graph


def _exists(mod: str) -> bool:
    p = ROOT.parent.joinpath(*mod.split("."))
    return p.with_suffix(".py").exists() or (p / "__init__.py").exists()


def _layer(mod: str) -> str:
    """``deribit_kit.broker.port`` -> ``broker``; ``deribit_kit.deribit`` -> ``deribit``."""
    parts = mod.split(".")
    return parts[1] if len(parts) > 1 else "deribit_kit"


GRAPH = _imports()
FORBIDDEN = {
    "wire": {"client", "upstream", "broker", "live", "ui", "sim", "deribit", "transport", "models", "cli",
             "sinks", "sync", "notebook", "config", "events"},
    "client": {"upstream", "broker", "live", "ui", "sim", "deribit", "sinks", "cli", "sync", "notebook"},
    "sim": {"client", "upstream", "broker", "live", "ui", "deribit", "sinks", "cli", "sync", "notebook"},
    "live": {"broker", "upstream", "ui", "sim", "deribit", "sinks", "cli", "sync", "notebook"},
    "upstream": {"broker", "live", "ui", "sim", "deribit", "cli", "sync", "notebook"},
    "broker": {"ui", "sim", "deribit", "cli", "sync", "notebook"},
    "sinks": {"ui", "sim", "deribit", "cli", "sync", "notebook"},
    "recording": {"client", "upstream", "broker", "live", "ui", "sim", "deribit", "transport", "cli", "sinks",
                  "sync", "notebook", "config", "deribit_kit"},
}
RECORDING_MAY_IMPORT = {"recording", "wire", "errors", "models", "events"}
PIPELINE_MAY_IMPORT = {"pipeline", "wire", "errors", "models"}
TRANSPORT_MAY_IMPORT = {"transport", "wire", "errors", "events"}


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_layer_imports_point_one_way(layer: str) -> None:
    bad = sorted(f"{mod} imports {dep}" for mod, deps in GRAPH.items() if _layer(mod) == layer
                 for dep in deps if _layer(dep) in FORBIDDEN[layer])
    assert not bad, "\n".join(bad)


def test_recording_imports_only_the_pure_layers() -> None:
    mods = [m for m in GRAPH if _layer(m) == "recording"]
    assert "deribit_kit.recording.reader" in mods
    bad = sorted(f"{m} imports {d}" for m in mods for d in GRAPH[m] if _layer(d) not in RECORDING_MAY_IMPORT)
    assert not bad, "\n".join(bad)


IO_MODULES = {"asyncio", "socket", "ssl", "selectors", "threading", "subprocess", "websockets", "h11", "httpx",
              "aiohttp", "uvloop", "picows"}


def _foreign_imports(path: Path) -> set[str]:
    """The top-level names of modules outside the kit that ``path`` imports (anywhere in the file)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            found.add(node.module.split(".")[0])
    return found - {"deribit_kit"}


def test_the_exchange_state_is_pure() -> None:
    """sim/exchange/ is the exchange's state: no transport, no server, no publishing, no I/O."""
    mods = [m for m in GRAPH if m.startswith("deribit_kit.sim.exchange")]
    assert "deribit_kit.sim.exchange.matching" in mods and "deribit_kit.sim.exchange.engine" in mods
    bad = sorted(f"{m} imports {d}" for m in mods for d in GRAPH[m]
                 if not (d.startswith("deribit_kit.sim.exchange") or _layer(d) in ("wire", "errors")))
    io = sorted(f"{p.relative_to(ROOT)} imports {name}" for p in (ROOT / "sim" / "exchange").rglob("*.py")
                for name in _foreign_imports(p) & IO_MODULES)
    assert not bad and not io, "\n".join(bad + io)


def test_transport_imports_only_wire_errors_and_events() -> None:
    mods = [m for m in GRAPH if _layer(m) == "transport"]
    assert "deribit_kit.transport.endpoint" in mods
    bad = sorted(f"{m} imports {d}" for m in mods for d in GRAPH[m] if _layer(d) not in TRANSPORT_MAY_IMPORT)
    assert not bad, "\n".join(bad)


def test_pipeline_imports_only_the_pure_layers() -> None:
    mods = [m for m in GRAPH if _layer(m) == "pipeline"]
    assert "deribit_kit.pipeline.continuity" in mods
    bad = sorted(f"{m} imports {d}" for m in mods for d in GRAPH[m] if _layer(d) not in PIPELINE_MAY_IMPORT)
    assert not bad, "\n".join(bad)


def test_the_kafka_sink_and_source_sit_with_their_siblings() -> None:
    """The sink is a broker consumer (sinks/), the source an upstream (upstream/): their rules apply."""
    assert "deribit_kit.pipeline.schema" in GRAPH["deribit_kit.sinks.kafka"]
    assert "deribit_kit.pipeline.continuity" in GRAPH["deribit_kit.upstream.kafka"]
    assert not any(_layer(d) in ("broker", "live", "sinks") for d in GRAPH["deribit_kit.upstream.kafka"])


def test_nothing_imports_the_ui_but_the_ui_and_the_command_line() -> None:
    bad = sorted(f"{mod} imports {dep}" for mod, deps in GRAPH.items() for dep in deps
                 if _layer(dep) == "ui" and _layer(mod) not in ("ui", "cli"))
    assert not bad, "\n".join(bad)


def test_no_cycle_between_client_upstream_broker_and_live() -> None:
    core = ("client", "upstream", "broker", "live")
    edges = {(_layer(m), _layer(d)) for m, deps in GRAPH.items() for d in deps if _layer(m) != _layer(d)}
    edges = {(a, b) for a, b in edges if a in core and b in core}
    reach = {a: {b for x, b in edges if x == a} for a in core}
    changed = True
    while changed:  # transitive closure
        changed = False
        for a in core:
            more = set().union(*(reach[b] for b in reach[a])) - reach[a]
            if more:
                reach[a] |= more
                changed = True
    cycles = sorted(a for a in core if a in reach[a])
    assert not cycles, f"import cycle through {cycles}: {sorted(edges)}"


def test_the_graph_is_read() -> None:
    """A guard for the guard: the parser sees the imports it must police."""
    assert "deribit_kit.live.orderbook" in GRAPH["deribit_kit.broker.broker"]
    assert "deribit_kit.wire.channels" in GRAPH["deribit_kit.client.rpc"]
    assert any(_layer(d) == "broker" for d in GRAPH["deribit_kit.deribit"])
