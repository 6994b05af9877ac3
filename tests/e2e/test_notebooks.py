"""The walkthroughs in notebooks/ run top to bottom, headless, against the embedded exchange.

Each notebook is executed in memory with nbclient on a kernel of this very interpreter (a kernelspec
written to a temporary ``JUPYTER_PATH``), with no API key in the environment; the notebooks on disk
are never written (an executed copy is saved under pytest's tmp_path for a look after a failure).
Cells carry ``check-*`` tags and the tests assert on their outputs: frames with rows, orders
acknowledged then cancelled, errors shown as one line, plots and Panel output produced, other
processes served by the broker port.

Also here: the notebooks are committed without outputs, start with the one ``TARGET`` setting, and
the README's notebook quickstart is the code of the first notebook; and ``deribit_kit.notebook``'s
one-line errors, checked in an in-process IPython shell.
"""

from __future__ import annotations

import ast
import itertools
import json
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nbformat
import pytest
from nbclient import NotebookClient

from deribit_kit import notebook
from deribit_kit.errors import DeribitKitError, error_for_code

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = ROOT / "notebooks"
NAMES = [
    "01_quickstart.ipynb",
    "02_live_data.ipynb",
    "03_options_research.ipynb",
    "04_microstructure.ipynb",
    "05_sharing_streams.ipynb",
    "06_record_and_replay.ipynb",
    "07_candles.ipynb",
]
TARGET_LINE = 'TARGET = "sim"  # or "test" with DERIBIT_CLIENT_ID/SECRET set'
KERNEL = "deribit-kit-tests"
CELL_TIMEOUT = 90  # seconds per cell; the longest (the 20 s recording of notebook 4) takes ~21 s
RECORD_SECONDS = 8.0  # the recordings of notebooks 4 and 6 run this long here (20 s as committed)
ANSI = re.compile(r"\x1b\[[0-9;]*m")
NOT_FOUND_LINE = "InstrumentNotFoundError: public/ticker: not_found (13020): instrument_name: instrument not found"


# --------------------------------------------------------------------------------------------
# running a notebook


@pytest.fixture(scope="module")
def kernel_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """A kernelspec for this interpreter, and an environment without keys or overrides."""
    jupyter_path = tmp_path_factory.mktemp("jupyter")
    spec = jupyter_path / "kernels" / KERNEL
    spec.mkdir(parents=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    (spec / "kernel.json").write_text(json.dumps({"argv": argv, "display_name": KERNEL, "language": "python"}))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("JUPYTER_PATH", str(jupyter_path))
        mp.setenv("PYTHONPATH", str(ROOT))  # the kernel and its child processes import this checkout
        mp.setenv("IPYTHONDIR", str(jupyter_path / "ipython"))  # nothing written to the user's home
        mp.setenv("JUPYTER_RUNTIME_DIR", str(jupyter_path / "runtime"))
        for name in ("DERIBIT_CLIENT_ID", "DERIBIT_CLIENT_SECRET", "DERIBIT_TARGET", notebook.TRACEBACK_ENV):
            mp.delenv(name, raising=False)
        yield


def execute(name: str, out_dir: Path, params: dict[str, Any] | None = None) -> nbformat.NotebookNode:
    """Run ``name``; ``params`` go into a cell after its ``parameters`` cell (papermill's convention)."""
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    if params:
        at = max(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
        code = "\n".join(f"{k} = {v!r}" for k, v in params.items())
        nb.cells.insert(at + 1, nbformat.v4.new_code_cell(code, metadata={"tags": ["injected-parameters"]}))
    client = NotebookClient(nb, timeout=CELL_TIMEOUT, kernel_name=KERNEL, startup_timeout=60,
                            resources={"metadata": {"path": str(NOTEBOOKS)}})
    try:
        client.execute()
    finally:
        nbformat.write(nb, out_dir / name)
    return nb


class Cells:
    """The code cells of an executed notebook, by ``check-*`` tag."""

    def __init__(self, nb: nbformat.NotebookNode) -> None:
        self.by_tag: dict[str, Any] = {}
        for cell in nb.cells:
            for tag in cell.metadata.get("tags", []):
                self.by_tag[tag] = cell

    def outputs(self, tag: str) -> list[Any]:
        return list(self.by_tag[tag].outputs)

    def stdout(self, tag: str) -> str:
        return "".join(o.text for o in self.outputs(tag) if o.output_type == "stream" and o.name == "stdout")

    def text(self, tag: str) -> str:
        """stdout plus the text/plain of every result and display."""
        parts = [self.stdout(tag)]
        parts += [o.data.get("text/plain", "") for o in self.outputs(tag) if "data" in o]
        return "\n".join(parts)

    def html(self, tag: str) -> str:
        return "\n".join(o.data.get("text/html", "") for o in self.outputs(tag) if "data" in o)

    def mimetypes(self, tag: str) -> set[str]:
        return {mime for o in self.outputs(tag) if "data" in o for mime in o.data}

    def error(self, tag: str) -> tuple[str, list[str]]:
        errors = [o for o in self.outputs(tag) if o.output_type == "error"]
        assert len(errors) == 1, f"{tag}: expected one error output, got {self.outputs(tag)}"
        return errors[0].ename, [ANSI.sub("", line) for line in errors[0].traceback]

    def search(self, tag: str, pattern: str) -> re.Match[str]:
        text = self.text(tag)
        m = re.search(pattern, text, re.M)
        assert m is not None, f"{tag}: {pattern!r} not in output:\n{text}"
        return m


def run(name: str, tmp_path: Path, **params: Any) -> Cells:
    return Cells(execute(name, tmp_path, params))


# --------------------------------------------------------------------------------------------
# the notebooks, executed


@pytest.mark.timeout(180)
def test_01_quickstart(kernel_env: None, tmp_path: Path) -> None:
    nb = run("01_quickstart.ipynb", tmp_path)
    assert "<Deribit sim ws open authenticated>" in nb.text("check-connect")
    assert int(nb.search("check-instruments", r"^(\d+) instruments$").group(1)) > 100
    kinds = nb.html("check-instruments")
    assert all(kind in kinds for kind in ("future", "option", "spot"))
    assert "BTC-PERPETUAL" in nb.html("check-futures") and "perpetual" in nb.html("check-futures")
    bid, ask = map(float, nb.search("check-book", r"best bid ([\d.]+) best ask ([\d.]+)").groups())
    assert 0 < bid < ask
    assert "deribit-kit-book" in nb.html("check-book") and "cumulative" in nb.html("check-book-frame")
    assert "<b>Ticker</b>" in nb.html("check-ticker") and "mark_price" in nb.html("check-ticker")

    order_id, price = nb.search("check-order", r"^(\S+) open 10\.0 ([\d.]+)$").groups()
    assert float(price) < bid
    assert "<b>PlacedOrder</b>" in nb.html("check-order")
    nb.search("check-edit-cancel", rf"^{order_id} open 20\.0 {float(price) - 10}$")
    nb.search("check-edit-cancel", rf"^{order_id} cancelled$")

    nb.search("check-positions", r"^filled 10\.0$")
    assert "BTC-PERPETUAL" in nb.text("check-positions")
    assert "<b>AccountSummary</b>" in nb.html("check-account") and "equity" in nb.html("check-account")
    nb.search("check-portfolio", r"<Portfolio 0 open order\(s\), 1 position\(s\)")

    assert nb.error("check-error") == ("InstrumentNotFoundError", [NOT_FOUND_LINE])
    ename, lines = nb.error("check-sync")
    assert ename == "BlockingCallInLoopError" and len(lines) == 1 and "await" in lines[0]
    assert nb.outputs("check-close") == []


@pytest.mark.timeout(180)
def test_02_live_data(kernel_env: None, tmp_path: Path) -> None:
    nb = run("02_live_data.ipynb", tmp_path)
    updates = nb.search("check-livebook", r"^(\d+) updates shown in place; state live, change_id \d+")
    assert int(updates.group(1)) >= 10
    assert "deribit-kit-book" in nb.html("check-livebook")  # the display, redrawn in place
    assert re.search(r"^9\s", nb.text("check-livebook-iter"), re.M)  # ten states of the book
    first = int(nb.search("check-subscribe", r"^(\d+) tickers so far$").group(1))
    later = int(nb.search("check-ticker-frame", r"^(\d+) tickers$").group(1))
    assert 0 < first < later  # the subscription kept receiving between cells
    assert re.search(r"^4\s", nb.text("check-async-for"), re.M)  # five trades
    assert "application/vnd.holoviews_exec.v0+json" in nb.mimetypes("check-panel")
    assert int(nb.search("check-panel-updates", r"changed something: (\d+)$").group(1)) > 0


@pytest.mark.timeout(180)
def test_03_options_research(kernel_env: None, tmp_path: Path) -> None:
    nb = run("03_options_research.ipynb", tmp_path)
    options, expiries = map(int, nb.search("check-chain", r"^(\d+) options, (\d+) expiries$").groups())
    assert options > 50 and expiries >= 3
    assert int(nb.search("check-smile", r"^(\d+) out-of-the-money options in 3 expiries$").group(1)) > 10
    assert "atm_iv" in nb.text("check-term")
    for tag in ("check-smile-plot", "check-term-plot", "check-positions-plot"):
        assert "application/vnd.bokehjs_exec.v0+json" in nb.mimetypes(tag), tag
    assert "vega_exposure" in nb.html("check-exposure")
    computed = float(nb.search("check-totals", r"^net delta ([+-][\d.]+) BTC: hedge with").group(1))
    held, traded = nb.search("check-positions", r"^(\d+) option positions; net delta ([-\d.]+)").groups()
    assert int(held) == 3
    assert abs(float(traded) - computed) < 0.05  # the traded set carries the computed exposure


@pytest.mark.timeout(180)
def test_04_microstructure(kernel_env: None, tmp_path: Path) -> None:
    nb = run("04_microstructure.ipynb", tmp_path, DURATION=RECORD_SECONDS)
    m = nb.search("check-record", r"^recorded (\d+) book states and (\d+) trades in ([\d.]+) s; book gaps 0")
    states, trades, seconds = int(m.group(1)), int(m.group(2)), float(m.group(3))
    assert seconds >= RECORD_SECONDS * 0.9 and states >= 50 and trades >= 1
    nb.search("check-frames", rf"^{states} book rows, {trades} trade rows$")
    assert "imbalance" in nb.html("check-frames")
    assert "net_flow" in nb.html("check-flow") and "cum_flow" in nb.html("check-flow")
    assert "mean_spread" in nb.html("check-summary") and "vwap" in nb.html("check-summary")
    assert "application/vnd.bokehjs_exec.v0+json" in nb.mimetypes("check-plot")


@pytest.mark.timeout(180)
def test_05_sharing_streams(kernel_env: None, tmp_path: Path) -> None:
    nb = run("05_sharing_streams.ipynb", tmp_path)
    nb.search("check-broker", r"^broker port: ws://127\.0\.0\.1:\d+/ws/api/v2$")

    out = nb.stdout("check-subscribers")
    raw, kit = out.split("--- deribit_kit.sync subscriber")
    assert "raw websockets subscriber (exit 0)" in raw and kit.startswith(" (exit 0)")
    assert "subscribed: ['ticker.BTC-PERPETUAL.100ms', 'book.BTC-PERPETUAL.100ms']" in raw
    notes = [line for line in raw.splitlines() if line.startswith(("book.", "ticker."))]
    assert len(notes) == 40
    book = [line.split() for line in notes if line.startswith("book.")]
    assert book[0][1] == "snapshot"
    for before, after in itertools.pairwise(book):  # an unbroken change_id chain (or a fresh snapshot)
        assert after[1] == "snapshot" or after[5] == before[3], (before, after)
    assert "ticker through the broker: mark" in kit
    assert len([line for line in kit.splitlines() if line.startswith("ticker.BTC-PERPETUAL.100ms mark")]) == 10

    assert int(nb.search("check-metrics", r"'clients': (\d+)").group(1)) >= 1
    nb.search("check-broker-process", r"^broker: ws://127\.0\.0\.1:\d+/ws/api/v2")
    assert "BTC-PERPETUAL live" in nb.text("check-remote-book")
    nb.search("check-close", r"^broker process exit code: 0$")


@pytest.mark.timeout(180)
def test_06_record_and_replay(kernel_env: None, tmp_path: Path) -> None:
    nb = run("06_record_and_replay.ipynb", tmp_path, DURATION=RECORD_SECONDS)
    m = nb.search("check-record", r"^recorded (\d+) frames of (\d+) channels in ([\d.]+) s, (\d+) segments; "
                                  r"recorder gaps 0; live book gaps (\d+), resyncs (\d+)$")
    frames, channels, seconds, segments = int(m.group(1)), int(m.group(2)), float(m.group(3)), int(m.group(4))
    assert frames > 200 and channels >= 6 and seconds >= RECORD_SECONDS * 0.9 and segments >= 3
    assert int(m.group(5)) >= 1 and int(m.group(6)) >= 1  # the skipped change_id: a gap and a resync
    assert "compressed_bytes" in nb.html("check-manifest") and "bytes per frame" in nb.stdout("check-manifest")
    r = nb.search("check-replay", r"^replayed (\d+) frames .*replay book gaps (\d+), resyncs (\d+); "
                                  r"the same as live: True$")
    assert int(r.group(1)) >= 5 * RECORD_SECONDS and (r.group(2), r.group(3)) == (m.group(5), m.group(6))  # 100ms book
    assert nb.error("check-private")[0] == "PermissionDeniedError"
    assert "a replay has no account" in nb.error("check-private")[1][0]
    rows = nb.search("check-frames", r"^(\d+) book rows of (\d+) instruments, (\d+) trades, (\d+) tickers$")
    assert int(rows.group(1)) >= 15 and int(rows.group(2)) >= 2 and int(rows.group(4)) >= 50
    assert "mean_spread" in nb.html("check-frames") and "net_taker_flow" in nb.html("check-summary")
    assert "application/vnd.bokehjs_exec.v0+json" in nb.mimetypes("check-plot")
    assert nb.outputs("check-close") == []


def test_07_candles(kernel_env: None, tmp_path: Path) -> None:
    nb = run("07_candles.ipynb", tmp_path)
    m = nb.search("check-live", r"^(\d+) updates shown in place; (\d+) chart\.trades messages; (\d+) candles, "
                                r"the open one \d\d:\d\d UTC close [\d.]+ volume [\d.]+$")
    assert int(m.group(1)) >= 15 and int(m.group(2)) >= 15 and int(m.group(3)) >= 1
    assert "LiveCandles BTC-PERPETUAL 1" in nb.html("check-live") and "volume" in nb.html("check-live")
    rows = int(nb.search("check-frame", r"^(\d+) candles; volume [\d.]+ \(base currency\)").group(1))
    assert rows >= int(m.group(3)) and "cost" in nb.html("check-frame")  # it kept running between cells
    table = nb.html("check-resolutions")
    assert "1D" in table and "vwap" in table and "last_close" in table
    assert "application/vnd.bokehjs_exec.v0+json" in nb.mimetypes("check-plot")
    assert nb.outputs("check-close") == []


# --------------------------------------------------------------------------------------------
# the notebooks on disk


def test_every_notebook_is_tested() -> None:
    assert sorted(p.name for p in NOTEBOOKS.glob("*.ipynb")) == NAMES


@pytest.mark.parametrize("name", NAMES)
def test_notebook_is_stripped_and_has_the_one_setting(name: str) -> None:
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.outputs == [] and c.execution_count is None for c in code), f"{name}: strip the outputs"
    assert code[0].source == TARGET_LINE
    assert any("await Deribit.connect(TARGET)" in c.source for c in code)
    assert nb.cells[0].cell_type == "markdown"  # narrative first
    for c in code:  # every code cell parses (top-level await allowed)
        compile(c.source, f"{name}:{c.id}", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT | ast.PyCF_ONLY_AST)


def test_readme_quickstart_is_the_first_notebook() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Quickstart in a notebook", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```python\n(.*?)```", section, re.S)
    assert block is not None, "README: no python block in the notebook quickstart"
    nb = nbformat.read(NOTEBOOKS / "01_quickstart.ipynb", as_version=4)
    cells = [c.source for c in nb.cells if "quickstart" in c.metadata.get("tags", [])]

    def lines(text: str) -> list[str]:
        return [line for line in text.splitlines() if line.strip()]

    assert lines(block.group(1)) == lines("\n".join(cells))


# --------------------------------------------------------------------------------------------
# deribit_kit.notebook in an in-process IPython shell


@pytest.fixture
def shell(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Any]:
    from IPython.core.interactiveshell import InteractiveShell
    from traitlets.config import Config

    monkeypatch.delenv(notebook.TRACEBACK_ENV, raising=False)
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path))  # no profile or history in the user's home
    config = Config()
    config.HistoryManager.hist_file = ":memory:"
    ip = InteractiveShell.instance(config=config)
    try:
        yield ip
    finally:
        notebook.teardown()
        InteractiveShell.clear_instance()


RAISE_NOT_FOUND = ("from deribit_kit.errors import error_for_code\n"
                   "raise error_for_code(13020, data={'param': 'instrument_name', 'reason': 'instrument not found'},"
                   " method='public/ticker')")


def test_format_error() -> None:
    exc = error_for_code(13020, data={"param": "instrument_name", "reason": "instrument not found"},
                         method="public/ticker")
    assert notebook.format_error(exc) == NOT_FOUND_LINE
    assert ANSI.sub("", notebook.format_error(exc, color=True)) == NOT_FOUND_LINE
    auth = notebook.format_error(error_for_code(13009, method="private/buy"))
    assert auth.startswith("AuthenticationError: private/buy: unauthorized (13009)") and "DERIBIT_CLIENT_ID" in auth
    assert "\n" not in notebook.format_error(DeribitKitError("two\nlines"))


def test_setup_outside_ipython_does_nothing() -> None:
    assert notebook.setup() is False


def test_kit_errors_show_as_one_line_and_tb_shows_all(shell: Any, capsys: pytest.CaptureFixture[str]) -> None:
    assert notebook.setup(shell=shell)
    result = shell.run_cell(RAISE_NOT_FOUND)
    assert type(result.error_in_exec).__name__ == "InstrumentNotFoundError"
    out = ANSI.sub("", capsys.readouterr().out)
    assert out.strip() == NOT_FOUND_LINE
    shell.run_cell("%tb")
    full = ANSI.sub("", capsys.readouterr().out)
    assert "Traceback" in full and "raise error_for_code" in full and "InstrumentNotFoundError" in full
    shell.run_cell("raise KeyError('untouched')")  # not a kit error: IPython's usual traceback
    other = ANSI.sub("", capsys.readouterr().out)
    assert "Traceback" in other and "KeyError" in other


def test_full_tracebacks_by_env(shell: Any, capsys: pytest.CaptureFixture[str],
                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(notebook.TRACEBACK_ENV, "full")
    assert notebook.setup(shell=shell)
    shell.run_cell(RAISE_NOT_FOUND)
    out = ANSI.sub("", capsys.readouterr().out)
    assert "Traceback" in out and "raise error_for_code" in out


def test_load_ext_and_teardown(shell: Any, capsys: pytest.CaptureFixture[str]) -> None:
    shell.run_cell("%load_ext deribit_kit.notebook")
    shell.run_cell(RAISE_NOT_FOUND)
    assert ANSI.sub("", capsys.readouterr().out).strip() == NOT_FOUND_LINE
    notebook.teardown()
    shell.run_cell(RAISE_NOT_FOUND)
    assert "Traceback" in ANSI.sub("", capsys.readouterr().out)
