"""The docs agree with the code: every test they cite exists, every relative link and #anchor resolves,
and the settings tables are those config.py declares (`make docs` writes them)."""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path
from typing import Literal

import pytest
from conftest import REPO_ROOT
from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from rakuten_classifier.config import Settings

sys.path.insert(0, str(REPO_ROOT / "tools"))
import settings_tables

PAGES = sorted([REPO_ROOT / "README.md", *(REPO_ROOT / "docs").glob("*.md"), REPO_ROOT / "deploy/k8s/README.md"])
# `tests/test_x.py::test_name`, or `::test_name` alone after one (the same file); a parametrised id's [...] is dropped.
CITATION = re.compile(r"(tests/[\w/]+\.py)(?:::(\w+))?|(?<![\w.:/])::(\w+)")
FENCE = re.compile(r"^(```|~~~).*?^\1", re.MULTILINE | re.DOTALL)
CODE_SPAN = re.compile(r"`[^`\n]*`")
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.MULTILINE)


def _relative(page: Path) -> str:
    return page.relative_to(REPO_ROOT).as_posix()


def _functions(module: Path) -> set[str]:
    """Names of the functions defined at a module's top level or in its classes."""
    tree = ast.parse(module.read_text(encoding="utf-8"))
    nodes = [*tree.body, *(node for cls in tree.body if isinstance(cls, ast.ClassDef) for node in cls.body)]
    return {node.name for node in nodes if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)}


def cited_tests(text: str) -> list[tuple[int, str, str | None]]:
    """(line, file, function or None) of every test citation, a bare ``::name`` taking the file cited before it."""
    cited: list[tuple[int, str, str | None]] = []
    last_file: str | None = None
    for number, line in enumerate(text.splitlines(), start=1):
        for match in CITATION.finditer(line):
            path, name, continued = match.groups()
            if path:
                last_file = path
                cited.append((number, path, name))
            else:
                assert last_file is not None, f"line {number}: `::{continued}` names no file before it"
                cited.append((number, last_file, continued))
    return cited


def github_slug(heading: str) -> str:
    """The anchor GitHub gives a heading: markup dropped, lower case, punctuation removed, spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link's text stays, its target goes
    return re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """Every heading anchor of a page; a repeated heading gets -1, -2, ... as on GitHub."""
    seen: dict[str, int] = {}
    found = set()
    for heading in HEADING.findall(FENCE.sub("", page.read_text(encoding="utf-8"))):
        slug = github_slug(heading)
        found.add(f"{slug}-{seen[slug]}" if slug in seen else slug)
        seen[slug] = seen.get(slug, 0) + 1
    return found


def relative_links(page: Path) -> list[str]:
    """Link targets of a page outside code, web addresses left out."""
    prose = CODE_SPAN.sub("code", FENCE.sub("", page.read_text(encoding="utf-8")))
    return [target for target in LINK.findall(prose) if not re.match(r"[a-z]+:", target)]


def test_citations_are_read_with_their_file_and_continuations():
    text = "`tests/test_a.py::test_one`, `::test_two`; `tests/test_b.py`\nand `tests/test_c.py::test_three[param]`"
    assert cited_tests(text) == [
        (1, "tests/test_a.py", "test_one"),
        (1, "tests/test_a.py", "test_two"),
        (1, "tests/test_b.py", None),
        (2, "tests/test_c.py", "test_three"),
    ]


def test_every_test_cited_in_the_docs_exists():
    missing = []
    for page in PAGES:
        for line, path, name in cited_tests(page.read_text(encoding="utf-8")):
            module = REPO_ROOT / path
            if not module.is_file():
                missing.append(f"{_relative(page)}:{line}: {path} does not exist")
            elif name is not None and name not in _functions(module):
                missing.append(f"{_relative(page)}:{line}: {path} defines no {name}")
    assert not missing, "\n".join(missing)


def test_headings_get_github_anchors():
    assert github_slug("The challenge's size (issue 27)") == "the-challenges-size-issue-27"
    assert github_slug("Installing (`make setup`)") == "installing-make-setup"
    assert github_slug("Served throughput (issue 5, 2026-11-26 13:40, MobileNetV2)") == (
        "served-throughput-issue-5-2026-11-26-1340-mobilenetv2"
    )
    assert github_slug("[Soak](#soak) and a_b") == "soak-and-a_b"


def test_every_relative_link_and_anchor_in_the_docs_resolves():
    broken = []
    for page in PAGES:
        for target in relative_links(page):
            path, _, anchor = target.partition("#")
            linked = (page.parent / path).resolve() if path else page
            if not linked.exists():
                broken.append(f"{_relative(page)}: ({target}): no file {path}")
            elif anchor and (linked.suffix != ".md" or anchor not in anchors(linked)):
                broken.append(f"{_relative(page)}: ({target}): no heading #{anchor} in {linked.name}")
    assert not broken, "\n".join(broken)


def test_the_settings_tables_in_the_docs_are_those_config_py_declares():
    stale = [
        page.relative_to(REPO_ROOT).as_posix()
        for page, text in settings_tables.pages().items()
        if page.read_text(encoding="utf-8") != text
    ]
    assert not stale, f"{', '.join(stale)}: a settings table differs from what config.py declares; run `make docs`"


def test_every_setting_has_one_row_in_one_docs_table():
    written = "".join(settings_tables.pages().values())
    for name in Settings.model_fields:
        assert written.count(f"| `RAKUTEN_{name.upper()}` |") == 1, name
    assert set(settings_tables.groups()) == {"training", "serving", "monitoring", "scale"}


class _Example(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="EX_")

    root: Path = Field(Path("data"), description="where | things <go>")
    added: bool = Field(True, description="declared after root")
    token: SecretStr | None = Field(None, description="a token")
    runtime: Literal["fast", "slow"] = Field("fast", description="which runtime")
    bare: float = 2.5


def test_a_setting_joins_the_table_of_the_group_it_is_declared_in():
    grouped = settings_tables.groups(_Example, {"root": "training", "token": "serving"})
    assert grouped == {"training": ["root", "added"], "serving": ["token", "runtime", "bare"]}
    with pytest.raises(ValueError, match="no field gone"):
        settings_tables.groups(_Example, {"root": "training", "gone": "serving"})
    with pytest.raises(ValueError, match="first field root starts no group"):
        settings_tables.groups(_Example, {"token": "serving"})


def test_a_table_row_gives_the_environment_name_default_and_description():
    assert settings_tables.table(_Example, list(_Example.model_fields)).splitlines() == [
        "| setting | default | what |",
        "|---|---|---|",
        "| `EX_ROOT` | `data` | where \\| things &lt;go&gt; |",
        "| `EX_ADDED` | `true` | declared after root |",
        "| `EX_TOKEN` | unset | a token |",
        "| `EX_RUNTIME` | `fast` | which runtime (one of `fast`, `slow`) |",
        f"| `EX_BARE` | `2.5` | {settings_tables.NO_DESCRIPTION} |",
    ]


def test_make_docs_rewrites_only_what_lies_between_the_markers():
    text = "before\n<!-- settings:serving begin: a note -->\nold row\n<!-- settings:serving end -->\nafter\n"
    assert settings_tables.with_table(text, "serving", "| new |") == (
        "before\n<!-- settings:serving begin: a note -->\n| new |\n<!-- settings:serving end -->\nafter\n"
    )
    with pytest.raises(ValueError, match="markers"):
        settings_tables.with_table(text, "training", "| new |")
