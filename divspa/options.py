"""docs/OPTIONS.md, generated from the config's own docs: `python -m divspa.options > docs/OPTIONS.md`.

An option's documentation is the comment beside or above its field in divspa/config.py (and the
section's docstring): the one place a maintainer edits. A test regenerates the page and fails when
the committed copy differs, so the page cannot drift from the code, and fails when a comment names
a BENCHMARKS section (docs/BENCHMARKS.md or its notebook) that no longer exists. A comment tagged `[paper: ...]` is an option the
paper defines, `[beyond the paper: ...]` one it does not; untagged options run the pipeline.
"""

from __future__ import annotations

import ast
import dataclasses
import io
import re
import tokenize
import typing
from pathlib import Path
from typing import Any, Literal

from divspa import config

DOCS = Path(__file__).resolve().parents[1] / "docs"
TAG = re.compile(r"\[(paper|beyond the paper)(?::\s*([^\]]*))?\]\s*")
BENCH_REF = re.compile(r'(?:docs/)?BENCHMARKS(?:\.md)?,? "([^"]+)"')

INTRO = """# Options

Generated from the comments of `divspa/config.py` by `python -m divspa.options > docs/OPTIONS.md`
(a test fails when this page and the code differ). Set an option in a YAML file (`--conf`), in the
environment (`DIVSPA__SECTION__KEY=value`) or on the command line (`--set section.key=value`), in
that order of precedence from low to high; unknown keys, wrong types and out-of-range values fail at
start-up naming the key. **Origin**: *paper* = the paper defines it (arXiv 2308.07629), *beyond* =
ours, with what it measured; the rest runs the pipeline. What each setting does to accuracy and
diversity on real logs is summed up in [RESULTS.md](RESULTS.md).
"""


def _comments(source: str) -> dict[int, tuple[str, bool]]:
    """Line number -> (comment text, whether the line holds nothing but the comment)."""
    lines = source.splitlines()
    found = {}
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            row = tok.start[0]
            found[row] = (tok.string.lstrip("#").strip(), lines[row - 1].strip().startswith("#"))
    return found


def _block_above(comments: dict[int, tuple[str, bool]], line: int) -> list[str]:
    block = []
    while (line - 1) in comments and comments[line - 1][1]:
        line -= 1
        block.insert(0, comments[line][0])
    return block


def _headings() -> list[tuple[str, str]]:
    """(page, heading) of the current figures first, then of the dated notebook."""
    pages = ("BENCHMARKS.md", "benchmarks/history.md")
    if not (DOCS / pages[0]).is_file():
        raise FileNotFoundError(f"{DOCS / pages[0]} not found: docs/OPTIONS.md is generated in a checkout of divspa")
    return [(page, line.lstrip("#").strip()) for page in pages
            for line in (DOCS / page).read_text().splitlines() if line.startswith("#")]


def _link(title: str, headings: list[tuple[str, str]]) -> str:
    found = next(((page, h) for page, h in headings if h.startswith(title)), None)
    if found is None:
        raise ValueError(f'divspa/config.py names BENCHMARKS section "{title}", which neither '
                         "docs/BENCHMARKS.md nor docs/benchmarks/history.md has")
    page, heading = found
    anchor = re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")  # GitHub's heading ids
    return f'[BENCHMARKS, "{title}"]({page}#{anchor})'


def _linked(text: str, headings: list[tuple[str, str]]) -> str:
    text = BENCH_REF.sub(lambda m: _link(m[1], headings), text)
    return text.replace("docs/RESULTS.md", "[RESULTS.md](RESULTS.md)").replace("|", "\\|")


def _value(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, list):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{}" if not v else str(v)
    return str(v)


def _default(f: dataclasses.Field) -> str:
    if f.default is not dataclasses.MISSING:
        return f"`{_value(f.default)}`"
    if f.default_factory is not dataclasses.MISSING:
        return f"`{_value(f.default_factory())}`"
    return "required"


def _values(f: dataclasses.Field, hint: Any) -> str:
    args = [hint] if typing.get_origin(hint) is Literal else [a for a in typing.get_args(hint) if a is not type(None)] or [hint]
    for a in args:
        inner = typing.get_args(a)[0] if typing.get_origin(a) is list else a
        if typing.get_origin(inner) is Literal:
            return " \\| ".join(map(str, typing.get_args(inner)))
    bounds = [f"{sym} {f.metadata[key]}" for key, sym in (("ge", "≥"), ("gt", ">"), ("le", "≤"), ("lt", "<"))
              if f.metadata.get(key) is not None]
    return ", ".join(bounds)


def _nested(hint: Any) -> tuple[type | None, str]:
    """The section class a field holds (directly, optionally or as a list), and the key suffix."""
    for a in (hint, *typing.get_args(hint)):
        if typing.get_origin(a) is list and dataclasses.is_dataclass(typing.get_args(a)[0]):
            return typing.get_args(a)[0], "[]"
        if dataclasses.is_dataclass(a):
            return a, ""
    return None, ""


def _rows(cls: type, prefix: str, tree: ast.Module, comments: dict, headings: list[tuple[str, str]]) -> list[str]:
    node = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == cls.__name__)
    lines = {n.target.id: n for n in node.body if isinstance(n, ast.AnnAssign)}
    aliases = {n.targets[0].id: n.lineno for n in tree.body if isinstance(n, ast.Assign)}
    hints = typing.get_type_hints(cls)
    rows = []
    for f in dataclasses.fields(cls):
        nested, suffix = _nested(hints[f.name])
        if nested is not None:
            rows += _rows(nested, f"{prefix}{f.name}{suffix}.", tree, comments, headings)
            continue
        field_node = lines[f.name]
        text = _block_above(comments, field_node.lineno)
        if field_node.lineno in comments and not comments[field_node.lineno][1]:
            text.append(comments[field_node.lineno][0])
        for name in (n.id for n in ast.walk(field_node.annotation) if isinstance(n, ast.Name) and n.id in aliases):
            text = _block_above(comments, aliases[name]) + text  # e.g. Arch, TuneParam: the choices' docs
        doc = " ".join(text)
        tag = TAG.search(doc)
        origin = "" if tag is None else ("paper" if tag[1] == "paper" else "beyond") + (f": {tag[2]}" if tag[2] else "")
        doc = TAG.sub("", doc)
        rows.append(f"| `{prefix}{f.name}` | {_default(f)} | {_values(f, hints[f.name])} | {origin} | "
                    f"{_linked(doc, headings)} |")
    return rows


def options_markdown() -> str:
    """The whole page, section by section in the order of `Config`."""
    source = Path(config.__file__).read_text()
    tree, comments = ast.parse(source), _comments(source)
    headings = _headings()
    parts = [INTRO]
    for section in dataclasses.fields(config.Config):
        cls = section.default_factory
        parts.append(f"## {section.name}\n")
        if cls.__doc__ and not cls.__doc__.startswith(cls.__name__ + "("):
            parts.append(_linked(" ".join(cls.__doc__.split()), headings) + "\n")
        parts.append("| option | default | values | origin | what it does; what it measured |\n|---|---|---|---|---|")
        parts.append("\n".join(_rows(cls, f"{section.name}.", tree, comments, headings)) + "\n")
    return "\n".join(parts)


if __name__ == "__main__":
    print(options_markdown(), end="")
