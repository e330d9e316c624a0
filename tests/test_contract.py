"""The portal's catalog, runner.ps1's handlers and winsim's handlers stay one and the same.

runner.ps1 is read with tree-sitter-powershell: the ``$Handlers`` hashtable maps each kind to a
function, and that function (with the runner functions it calls) must read every argument of
the kind and write every fact key of the kind.
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

import pytest
import tree_sitter_powershell
from tree_sitter import Language, Node, Parser

from diagnostics.catalog import KINDS

RUNNER = Path(__file__).resolve().parent.parent / "diagnostics" / "powershell" / "runner.ps1"


def _walk(node: Node):
    yield node
    for child in node.children:
        yield from _walk(child)


def _unquote(text: str) -> str:
    return text.strip().strip("'\"")


@cache
def _tree() -> Node:
    parser = Parser(Language(tree_sitter_powershell.language()))
    return parser.parse(RUNNER.read_bytes()).root_node


@cache
def runner_handlers() -> dict[str, str]:
    """kind -> function name, from the ``$Handlers = @{ ... }`` dispatch table."""
    tables = []
    for node in _walk(_tree()):
        if node.type != "assignment_expression":
            continue
        left = node.child_by_field_name("value")
        target = node.children[0].text.decode().strip()
        if target.lower() == "$handlers" and left is not None:
            tables.append(left)
    assert len(tables) == 1, "runner.ps1 must have exactly one $Handlers table"
    handlers = {}
    for entry in _walk(tables[0]):
        if entry.type == "hash_entry":
            key = next(c for c in entry.children if c.type == "key_expression")
            value = entry.children[-1]
            handlers[_unquote(key.text.decode())] = _unquote(value.text.decode())
    return handlers


@cache
def runner_functions() -> dict[str, str]:
    """function name (lower case) -> its source text."""
    functions = {}
    for node in _walk(_tree()):
        if node.type == "function_statement":
            name = next(c for c in node.children if c.type == "function_name").text.decode()
            functions[name.lower()] = node.text.decode()
    return functions


def handler_source(function: str) -> str:
    """The handler's text plus that of every runner function it calls, transitively."""
    functions = runner_functions()
    seen, todo, texts = set(), [function.lower()], []
    while todo:
        name = todo.pop()
        if name in seen or name not in functions:
            continue
        seen.add(name)
        text = functions[name]
        texts.append(text)
        todo.extend(
            n for n in functions if re.search(rf"(?<![\w-]){re.escape(n)}(?![\w-])", text, re.I)
        )
    return "\n".join(texts)


def test_runner_handles_exactly_the_catalog_kinds() -> None:
    assert set(runner_handlers()) == set(KINDS)


def test_every_runner_handler_is_a_defined_function() -> None:
    missing = [f for f in runner_handlers().values() if f.lower() not in runner_functions()]
    assert missing == []


def test_winsim_handles_exactly_the_catalog_kinds() -> None:
    from winsim import steps

    assert set(steps.HANDLERS) == set(KINDS) == set(runner_handlers())


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_runner_handler_reads_every_argument_of_its_kind(kind: str) -> None:
    source = handler_source(runner_handlers()[kind])
    unread = [a.name for a in KINDS[kind].args if f"'{a.name}'" not in source]
    assert unread == []


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_runner_handler_writes_every_fact_key_of_its_kind(kind: str) -> None:
    source = handler_source(runner_handlers()[kind])
    keys = set(re.findall(r"(?m)(?:^|[{;])\s*([a-z0-9_]+)\s*=", source))
    assert [f for f in KINDS[kind].facts if f not in keys] == []


def test_runner_maps_ipsec_numbers_with_the_catalog_table() -> None:
    from diagnostics.catalog import IPSEC_VALUES

    text = RUNNER.read_text(encoding="utf-8")
    table = text[text.index("$IPsecNames = [ordered]@{") :]
    table = table[: table.index("\n}")]
    runner = {
        key: re.findall(r"'([^']+)'", values)
        for key, values in re.findall(r"(?m)^\s*([a-z_]+)\s*=\s*@\(([^)]*)\)", table)
    }
    assert runner == {k: list(v) for k, v in IPSEC_VALUES.items()}


def test_runner_says_cannot_only_with_catalog_reasons_and_rights() -> None:
    from diagnostics.catalog import CANNOT_REASONS, RIGHTS

    sources = RUNNER.read_text(encoding="utf-8")
    reasons = set(re.findall(r"-Reason '([a-z_]+)'", sources)) | set(
        re.findall(r"reason = '([a-z_]+)'", sources)
    )
    needs = set(re.findall(r"-Need '([a-z_]+)'", sources)) | set(
        re.findall(r"need = '([a-z_]+)'", sources)
    )
    assert reasons and reasons <= set(CANNOT_REASONS)
    assert needs and needs <= set(RIGHTS)
