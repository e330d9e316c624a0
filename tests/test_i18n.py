"""The Japanese catalogue: complete, faithful to its placeholders, compiled, and served by default."""

from __future__ import annotations

import gettext
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from django.conf import settings
from django.urls import reverse

ROOT = Path(__file__).resolve().parent.parent
PO = ROOT / "locale" / "ja" / "LC_MESSAGES" / "django.po"
MO = PO.with_suffix(".mo")
TEMPLATES = ROOT / "templates"

HOME_JA = "どのようなエラーが表示されていますか？"
HOME_EN = "What error do you see?"


# --- a small .po reader (no polib: one file, one format, no dependency) ----------------------


@dataclass
class Entry:
    """One catalogue entry: msgid, optional plural, its msgstr(s), flags and context."""

    msgid: str = ""
    msgid_plural: str | None = None
    msgctxt: str | None = None
    msgstrs: list[str] = field(default_factory=list)
    flags: set[str] = field(default_factory=set)
    line: int = 0


_KEYWORD = re.compile(r'^(msgctxt|msgid_plural|msgid|msgstr(?:\[\d+\])?)\s+"(.*)"$')


def _unquote(text: str) -> str:
    return re.sub(r"\\(.)", lambda m: {"n": "\n", "t": "\t"}.get(m.group(1), m.group(1)), text)


def read_po(path: Path) -> list[Entry]:
    """Parse the active (not obsolete) entries of a .po file, header included."""
    entries: list[Entry] = []
    entry: Entry | None = None
    target: str | None = None
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = raw.strip()
        if not line:
            entry, target = None, None
            continue
        if line.startswith("#~"):
            continue
        if entry is None:
            entry = Entry(line=number)
            entries.append(entry)
        if line.startswith("#,"):
            entry.flags |= {f.strip() for f in line[2:].split(",")}
        elif line.startswith("#"):
            continue
        elif match := _KEYWORD.match(line):
            target = match.group(1)
            value = _unquote(match.group(2))
            if target.startswith("msgstr"):
                entry.msgstrs.append(value)
            else:
                setattr(entry, target, value)
        elif line.startswith('"') and target:
            value = _unquote(line[1:-1])
            if target.startswith("msgstr"):
                entry.msgstrs[-1] += value
            else:
                setattr(entry, target, getattr(entry, target) + value)
    return entries


@pytest.fixture(scope="module")
def catalogue() -> list[Entry]:
    return [e for e in read_po(PO) if e.msgid]


def _placeholders(text: str) -> list[str]:
    return sorted(re.findall(r"%\([a-z_]+\)[sd]|\{[a-z_]*\}", text))


# --- the catalogue itself -----------------------------------------------------------------


def test_the_header_is_japanese_with_one_plural_form_and_not_fuzzy():
    header = read_po(PO)[0]
    assert header.msgid == ""
    assert "fuzzy" not in header.flags
    assert "Language: ja\n" in header.msgstrs[0]
    assert "Plural-Forms: nplurals=1; plural=0;" in header.msgstrs[0]


def test_every_entry_is_translated_and_none_is_fuzzy(catalogue):
    assert len(catalogue) > 50
    fuzzy = [e.msgid for e in catalogue if "fuzzy" in e.flags]
    untranslated = [e.msgid for e in catalogue if not all(s.strip() for s in e.msgstrs)]
    assert fuzzy == []
    assert untranslated == []


def test_plural_entries_have_exactly_one_japanese_form(catalogue):
    plurals = [e for e in catalogue if e.msgid_plural is not None]
    assert plurals
    assert [e.msgid for e in plurals if len(e.msgstrs) != 1] == []


def test_translations_keep_every_placeholder(catalogue):
    broken = [
        (e.msgid, s)
        for e in catalogue
        for s in e.msgstrs
        if _placeholders(s) != _placeholders(e.msgid)
    ]
    assert broken == []


def test_translations_are_actually_japanese(catalogue):
    """Catches a msgid copied into its msgstr; the brand and "PC" (as the KB says) stay Latin."""
    latin_on_purpose = {"Kaiketsu", "PC"}
    japanese = re.compile(r"[\u3040-\u30ff\u3400-\u9fff]")
    latin_only = [
        e.msgid
        for e in catalogue
        for s in e.msgstrs
        if s not in latin_on_purpose and not japanese.search(s)
    ]
    assert latin_only == []


@pytest.mark.skipif(shutil.which("msgfmt") is None, reason="GNU gettext is not installed")
def test_msgfmt_accepts_the_catalogue_and_counts_nothing_missing():
    result = subprocess.run(
        ["msgfmt", "--check", "--statistics", "-o", "/dev/null", str(PO)],
        capture_output=True,
        text=True,
        check=False,
        env={"LC_ALL": "C", "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr
    assert "translated message" in result.stderr
    assert "untranslated" not in result.stderr and "fuzzy" not in result.stderr


def test_the_committed_mo_matches_the_po(catalogue):
    """A fresh clone serves Japanese before anyone runs compilemessages."""
    with MO.open("rb") as fh:
        compiled = gettext.GNUTranslations(fh)
    stale = []
    for e in catalogue:
        key = e.msgid if e.msgctxt is None else f"{e.msgctxt}\x04{e.msgid}"
        if e.msgid_plural is None:
            got = compiled._catalog.get(key)
        else:
            got = compiled._catalog.get((key, 0))
        if got != e.msgstrs[0]:
            stale.append(e.msgid)
    assert stale == []


_TRANSLATE_TAG = re.compile(
    r"""\{%\s*(?:translate|trans)\s+(["'])(.+?)\1(?:\s+context\s+(["'])(.+?)\3)?"""
)


def test_every_literal_translate_tag_in_the_templates_is_in_the_catalogue(catalogue):
    known = {(e.msgctxt, e.msgid) for e in catalogue}
    missing = sorted(
        f"{path.relative_to(ROOT)}: {match.group(2)}"
        for path in TEMPLATES.rglob("*.html")
        for match in _TRANSLATE_TAG.finditer(path.read_text(encoding="utf-8"))
        if (match.group(4), match.group(2)) not in known
    )
    assert missing == [], "run makemessages -l ja and translate the new strings"


# --- pages --------------------------------------------------------------------------------


@pytest.mark.django_db
def test_the_login_page_is_japanese_for_a_japanese_browser(client):
    body = client.get(reverse("login"), HTTP_ACCEPT_LANGUAGE="ja").content.decode()
    assert "ログイン" in body and "パスワード" in body
    assert '<html lang="ja">' in body


@pytest.mark.django_db
def test_the_login_page_is_english_for_an_english_browser(client):
    body = client.get(reverse("login"), HTTP_ACCEPT_LANGUAGE="en").content.decode()
    assert "Log in" in body and "Password" in body
    assert "ログイン" not in body


@pytest.mark.django_db
def test_an_employee_sees_the_home_page_in_japanese_by_default(client, django_user_model):
    assert settings.LANGUAGE_CODE == "ja"
    client.force_login(django_user_model.objects.create_user("hanako", password="pw-hanako-1"))
    body = client.get(reverse("diagnostics:home")).content.decode()
    assert HOME_JA in body and HOME_EN not in body


@pytest.mark.django_db
def test_an_employee_with_an_english_browser_sees_the_home_page_in_english(
    client, django_user_model
):
    client.force_login(django_user_model.objects.create_user("hanako", password="pw-hanako-1"))
    body = client.get(reverse("diagnostics:home"), HTTP_ACCEPT_LANGUAGE="en").content.decode()
    assert HOME_EN in body and HOME_JA not in body


@pytest.mark.django_db
def test_the_language_switch_overrides_a_japanese_browser(client, django_user_model):
    client.force_login(django_user_model.objects.create_user("hanako", password="pw-hanako-1"))
    home = reverse("diagnostics:home")
    client.post(reverse("set_language"), {"language": "en", "next": home})
    body = client.get(home, HTTP_ACCEPT_LANGUAGE="ja").content.decode()
    assert HOME_EN in body
