"""Reject PowerShell 7-only syntax the way Windows PowerShell 5.1's parser does.

Real hosts run Windows PowerShell 5.1, which has no ``??``, ``?.``, ternary ``a ? b : c`` or
``&&``/``||`` pipeline chains. A script that uses them works on a developer's pwsh 7 and fails
on every employee's machine, so winsim fails it too, with the text 5.1 prints.

tree-sitter-powershell parses the PS 7 grammar: ``&&``/``||`` come out as their own tokens
(inside ``pipeline_chain_tail``), while ``??``, ``?.`` and the ternary ``?`` are ERROR nodes.
Strings, here-strings and comments are separate nodes, so text inside them never matches.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache, lru_cache

import tree_sitter
import tree_sitter_powershell


@dataclass(frozen=True)
class ParseError:
    """One parser error as PowerShell 5.1 reports it."""

    line: int  # 1-based, as "At line:N"
    column: int  # 1-based, as "char:N"
    token: str
    message: str
    error_id: str
    source_line: str

    def render(self) -> str:
        """The error record's text, lines joined with CRLF, as powershell.exe writes it."""
        marker = " " * (self.column - 1) + "~" * max(1, len(self.token))
        return "\r\n".join(
            [
                f"At line:{self.line} char:{self.column}",
                f"+ {self.source_line}",
                f"+ {marker}",
                self.message,
                "    + CategoryInfo          : ParserError: (:) [], ParentContainsErrorRecordException",
                f"    + FullyQualifiedErrorId : {self.error_id}",
                "",
            ]
        )


@cache
def _parser() -> tree_sitter.Parser:
    return tree_sitter.Parser(tree_sitter.Language(tree_sitter_powershell.language()))


# Every job sends the same runner (~30 KB, ~25 ms to walk): parse each distinct text once,
# since the walk runs on the event loop that serves every host.
@lru_cache(maxsize=64)
def find_ps7_syntax(script: str) -> ParseError | None:
    """Return the first PowerShell-7-only construct in ``script``, or None if 5.1 accepts it.

    Only the constructs 5.1 lacks are reported; other grammar errors are left alone because
    the tree-sitter grammar is not a perfect copy of the 5.1 parser.
    """
    source = script.encode("utf-8")
    tree = _parser().parse(source)
    lines = script.splitlines() or [""]
    for node in _walk(tree.root_node):
        found = _classify(node, source)
        if found is None:
            continue
        token, message, error_id = found
        row, byte_col = node.start_point.row, node.start_point.column
        line_bytes = source.split(b"\n")[row] if row < len(lines) else b""
        column = len(line_bytes[:byte_col].decode("utf-8", "replace"))
        # The ERROR node often starts at the operand ("$b ??"); point at the operator itself.
        text = node.text.decode("utf-8", "replace") if node.text else ""
        column += max(0, text.find(token))
        source_line = lines[row].rstrip("\r") if row < len(lines) else ""
        return ParseError(row + 1, column + 1, token, message, error_id, source_line)
    return None


def _walk(node: tree_sitter.Node):
    stack = [node]
    while stack:
        current = stack.pop()
        yield current
        stack.extend(reversed(current.children))


def _classify(node: tree_sitter.Node, source: bytes) -> tuple[str, str, str] | None:
    if node.type in ("&&", "||"):
        token = node.type
        return (
            token,
            f"The token '{token}' is not a valid statement separator in this version.",
            "InvalidEndOfLine",
        )
    if node.type != "ERROR" or node.text is None:
        return None
    text = node.text.decode("utf-8", "replace")
    end = node.end_byte
    following = source[end : end + 1].decode("utf-8", "replace")
    if "??" in text:
        return "??", "Unexpected token '??' in expression or statement.", "UnexpectedToken"
    if "?" in text and following == "." or "?." in text:
        # 5.1 reads "$a?.b" as the variable "a?"; under Set-StrictMode (as the runner runs)
        # that fails at once. Reported as a parse-time failure so the script never runs.
        return "?.", "Unexpected token '?.' in expression or statement.", "UnexpectedToken"
    if "?" in text:
        return "?", "Unexpected token '?' in expression or statement.", "UnexpectedToken"
    return None
