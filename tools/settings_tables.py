"""Write the settings tables of docs/training.md, serving.md, monitoring.md and scale.md from config.py.

    make docs        (.venv/bin/python tools/settings_tables.py [--json])

Each group's table sits in docs/<group>.md between ``<!-- settings:<group> begin ... -->`` and
``<!-- settings:<group> end -->``: one row per setting, its environment name, default and
description, as ``src/rakuten_classifier/config.py`` declares them. A group is a run of fields in
config.py's declaration order, from the field GROUP_STARTS names to the next group's first field,
so a new setting joins the table of the settings it is declared among. tests/test_docs.py fails
when a committed table differs from what this writes.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Literal, get_args, get_origin

from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings

from rakuten_classifier.config import Settings

DOCS = Path(__file__).resolve().parents[1] / "docs"
# The first field of each group in config.py, and the group (docs/<group>.md) its run of fields goes to.
GROUP_STARTS = {
    "data_root": "training",
    "admin_token": "serving",
    "log_flush_seconds": "monitoring",
    "spark_master": "scale",
}
NO_DESCRIPTION = "(no description in config.py)"


def groups(settings: type[BaseSettings] = Settings, starts: dict[str, str] = GROUP_STARTS) -> dict[str, list[str]]:
    """Each group's fields, in declaration order: a field belongs to the group of the last start before it."""
    names = list(settings.model_fields)
    absent = [name for name in starts if name not in names]
    if absent:
        raise ValueError(f"{settings.__name__} has no field {', '.join(absent)}: update GROUP_STARTS in {__file__}")
    if names and names[0] not in starts:
        raise ValueError(f"{settings.__name__}'s first field {names[0]} starts no group: update GROUP_STARTS")
    grouped: dict[str, list[str]] = {}
    group = ""
    for name in names:
        group = starts.get(name, group)
        grouped.setdefault(group, []).append(name)
    return grouped


def _default(field: FieldInfo) -> str:
    if field.is_required():
        return "required"
    value = field.get_default(call_default_factory=True)
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    return f"`{value.as_posix() if isinstance(value, Path) else value}`"


def _description(field: FieldInfo) -> str:
    text = field.description or NO_DESCRIPTION
    if get_origin(field.annotation) is Literal:
        text += f" (one of {', '.join(f'`{choice}`' for choice in get_args(field.annotation))})"
    # Markdown: a pipe would end the cell, <data_root> would be read as an HTML tag, a pair of * as emphasis.
    return text.replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;").replace("*", "\\*")


def table(settings: type[BaseSettings], names: list[str]) -> str:
    """The Markdown table of ``names``: environment name, default, description."""
    prefix = settings.model_config.get("env_prefix", "")
    rows = ["| setting | default | what |", "|---|---|---|"]
    for name in names:
        field = settings.model_fields[name]
        rows.append(f"| `{prefix}{name.upper()}` | {_default(field)} | {_description(field)} |")
    return "\n".join(rows)


def with_table(text: str, group: str, rendered: str) -> str:
    """``text`` with what lies between the group's markers replaced by ``rendered``."""
    markers = re.compile(rf"(<!-- settings:{group} begin[^\n]*-->\n).*?(<!-- settings:{group} end -->)", re.DOTALL)
    if not markers.search(text):
        raise ValueError(f"no <!-- settings:{group} begin --> ... <!-- settings:{group} end --> markers")
    return markers.sub(lambda found: f"{found[1]}{rendered}\n{found[2]}", text, count=1)


def pages(settings: type[BaseSettings] = Settings, docs: Path = DOCS) -> dict[Path, str]:
    """What each page holds once its table is written: docs/<group>.md for every group."""
    written = {}
    for group, names in groups(settings).items():
        page = docs / f"{group}.md"
        written[page] = with_table(page.read_text(encoding="utf-8"), group, table(settings, names))
    return written


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true", help="print the pages written and unchanged as JSON")
    args = parser.parse_args(argv)
    written, unchanged = [], []
    for page, text in pages().items():
        if page.read_text(encoding="utf-8") == text:
            unchanged.append(page.name)
        else:
            page.write_text(text, encoding="utf-8")
            written.append(page.name)
    if args.json:
        print(json.dumps({"written": written, "unchanged": unchanged}))
    else:
        print(f"settings tables written: {', '.join(written) or 'none'}; unchanged: {', '.join(unchanged) or 'none'}")


if __name__ == "__main__":
    main()
