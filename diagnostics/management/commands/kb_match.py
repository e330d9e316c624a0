import json
import sys

from django.core.management.base import BaseCommand, CommandError
from django.utils import translation

from diagnostics import kbindex, match_words
from diagnostics.matching import Result


def _result_json(result: Result, lang: str) -> dict:
    """The documented JSON (DESIGN.md, contract 3).

    ``why`` is always English, so helpdesk scripts can read it whatever ``--lang`` says;
    ``title`` and each code's ``meaning`` follow ``--lang`` (a meaning is English when no
    Japanese Windows text for that code could be sourced).
    """
    with translation.override("en"):
        whys = [match_words.why(m) for m in result.matches]
    return {
        "matches": [
            {
                "article": m.article,
                "title": m.title,
                "score": round(m.score, 4),
                "error_codes": list(m.error_codes),
                "why": why,
            }
            for m, why in zip(result.matches, whys, strict=True)
        ],
        "confident": result.confident,
        "codes": [
            {"code": row["code"], "meaning": row["meaning"], "in_kb": row["in_kb"]}
            for row in match_words.code_rows(result, lang)
        ],
    }


class Command(BaseCommand):
    help = "Rank knowledge-base articles for a pasted error text (the portal's matcher)."

    def add_arguments(self, parser):
        parser.add_argument("text", nargs="?", help="the pasted text")
        parser.add_argument(
            "--json", action="store_true", dest="as_json", help="print the JSON result"
        )
        parser.add_argument("--top", type=int, default=5, help="how many matches (default 5)")
        parser.add_argument("--lang", choices=["ja", "en"], default="ja", help="title language")
        parser.add_argument(
            "--jsonl",
            metavar="FILE",
            help='one {"text": ...} per line in ("-" = stdin), one result per line out',
        )

    def handle(self, *args, text=None, as_json=False, top=5, lang="ja", jsonl=None, **options):
        if top < 1:
            raise CommandError("--top must be at least 1")
        if jsonl:
            return self._jsonl(jsonl, top, lang)
        if text is None:
            raise CommandError("give a TEXT or --jsonl FILE")
        result = kbindex.find(text, lang, top=top)
        if as_json:
            self.stdout.write(_dumps(_result_json(result, lang)))
            return
        with translation.override("en"):
            for row in match_words.code_rows(result, lang):
                kb = "in the knowledge base" if row["in_kb"] else "NOT in the knowledge base"
                self.stdout.write(f"code {row['code']} ({kb}): {row['meaning'] or '?'}")
            if not result.matches:
                self.stdout.write("no article matches")
            for m in result.matches:
                why = match_words.why(m)
                self.stdout.write(f"{m.score:.3f}  {m.article}  {m.title}  ({why})")
        if not result.confident:
            self.stdout.write("(no confident match)")

    def _jsonl(self, path: str, top: int, lang: str) -> None:
        stream = sys.stdin if path == "-" else open(path, encoding="utf-8")  # noqa: SIM115
        with stream:
            for number, line in enumerate(stream, start=1):
                if not line.strip():
                    continue
                try:
                    text = json.loads(line)["text"]
                    if not isinstance(text, str):
                        raise TypeError
                except (ValueError, KeyError, TypeError):
                    raise CommandError(f'line {number}: expected {{"text": "..."}}') from None
                result = kbindex.find(text, lang, top=top)
                self.stdout.write(_dumps(_result_json(result, lang)))


def _dumps(data) -> str:
    return json.dumps(data, ensure_ascii=False)
