import json
import sys

from django.core.management.base import BaseCommand, CommandError

from diagnostics import kbindex


def _result_json(result) -> dict:
    return {
        "matches": [
            {
                "article": m.article,
                "title": m.title,
                "score": round(m.score, 4),
                "error_codes": list(m.error_codes),
                "why": m.why,
            }
            for m in result.matches
        ]
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
            self.stdout.write(_dumps(_result_json(result)))
            return
        if not result.matches:
            self.stdout.write("no article matches")
        for m in result.matches:
            self.stdout.write(f"{m.score:.3f}  {m.article}  {m.title}  ({m.why})")
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
                self.stdout.write(_dumps(_result_json(kbindex.find(text, lang, top=top))))


def _dumps(data) -> str:
    return json.dumps(data, ensure_ascii=False)
