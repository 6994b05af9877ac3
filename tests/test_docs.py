"""The documentation site stays true to the code: every error code the troubleshooting page has a
section for is Deribit's (the kit's table), named as the kit names it and raised as the class the
page says; every notebook is in the site's navigation; every public module the API reference
promises exists. (``make docs`` builds the site itself, with links and anchors checked.)"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

from deribit_kit import errors

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"


def test_troubleshooting_names_each_code_as_the_kit_does() -> None:
    text = (DOCS / "troubleshooting.md").read_text()
    sections = re.findall(r"^## (-?\d+) (\w[\w ]*)$", text, flags=re.M)
    codes = {int(code) for code, _ in sections}
    assert {10028, 10009, 11050, 13004, 13009, 13778, -32602, -32600} <= codes
    for code, name in sections:
        assert errors.ERROR_MESSAGES[int(code)] == name, (code, name)
        # the class named right under the heading is the one the kit raises for the code
        body = text.split(f"## {code} {name}\n", 1)[1].split("\n## ", 1)[0]
        cls = re.search(r"`(\w+Error)`", body)
        assert cls is not None, code
        assert errors.error_class(int(code)).__name__ == cls.group(1), (code, cls.group(1))


def test_every_notebook_is_in_the_site_navigation() -> None:
    nav = (ROOT / "mkdocs.yml").read_text()
    for nb in sorted((ROOT / "notebooks").glob("*.ipynb")):
        assert f"notebooks/{nb.name}" in nav, nb.name


def test_the_api_reference_documents_modules_that_exist() -> None:
    for page in sorted((DOCS / "reference").glob("*.md")):
        for mod in re.findall(r"^::: ([\w.]+)$", page.read_text(), flags=re.M):
            assert importlib.util.find_spec(mod) is not None, (page.name, mod)


def test_package_readme_and_docs_cite_only_the_repository_and_deribits_documentation() -> None:
    outside = re.compile(r"\.\./shared|shared/|deribit-api\.md|deribit_api_v2\.json|DESIGN\.md|recipes/|perf-baselines")
    files = [ROOT / "README.md", *sorted((ROOT / "deribit_kit").rglob("*.py")), *sorted(DOCS.glob("*.md")),
             *sorted((DOCS / "reference").glob("*.md"))]
    bad = [f"{f.relative_to(ROOT)}:{n}" for f in files for n, line in enumerate(f.read_text().splitlines(), 1)
           if outside.search(line)]
    assert not bad, bad
    pages = [ROOT / "README.md", *DOCS.glob("*.md")]
    links = {u for f in pages for u in re.findall(r"https?://[^\s)>`\"']+", f.read_text())}
    foreign = sorted(u for u in links if not re.match(r"https://(docs|www|test)\.deribit\.com", u)
                     and not u.startswith(("http://127.0.0.1", "http://localhost")))
    assert not foreign, foreign
