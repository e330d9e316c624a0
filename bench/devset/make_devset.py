"""Build the matcher's labelled development set from the shipped KB and real Windows formats.

    .venv/bin/python bench/devset/make_devset.py      # writes dev.jsonl and holdout.jsonl

Each line is ``{"text": ..., "expect": slug or null, "note": how it was made}``.

Where the texts come from:
- the message of each article: the Microsoft wording the KB cites (its longest en and ja
  signatures; the en ones come from the mprmsg.dll message table / raserror.h, see each
  kb/*.yaml), and for a few codes the older wording Microsoft Learn still shows
  (facts/windows-vpn.md section 2, "Learn" column), which the KB may not carry;
- the formats around it: ``rasdial`` output ("Remote Access error N - ..." and its help
  footer), RasClient event 20227/20226 (facts/windows-vpn.md section 5: template and a real
  event's fields), the Event Viewer "General/Details" copy, the Windows 10/11 Settings pop-up
  that shows the text without the code. The Japanese rasdial and event framing is our
  rendering (no ja-JP string table was available), marked in the note;
- noise: full-width digits, cut-off heads/tails, line breaks, typos, greetings and lead-ins,
  e-mail quoting; employees' own words with and without a code;
- negatives (expect null): other Windows errors (Windows Update, Outlook, printers, shares,
  domain trust, BitLocker, activation), browser and app messages, gibberish, HTML, SQL, emoji.

dev.jsonl (seed 1) is for tuning; holdout.jsonl (seed 2) uses other templates, other noise
draws and other hand-written lines, and is never tuned on. An article's codes map to its slug
through the KB itself, so re-run this script whenever kb/ changes.
"""

from __future__ import annotations

import json
import random
import re
import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from diagnostics import kb  # noqa: E402

HERE = Path(__file__).resolve().parent

# Older Microsoft Learn wording (raserror.h page) where Windows 10/11 shows a newer text
# (facts/windows-vpn.md section 2). Users on old builds, or copying from Learn, paste these.
LEARN_WORDING = {
    628: "The specified port was disconnected.",
    691: "Access denied because the user name, password, or both is not valid on the domain.",
    711: "RasMan initialization failure. Check the event log.",
    786: (
        "The L2TP connection attempt failed because there is no valid machine certificate on "
        "your computer for security authentication."
    ),
    790: (
        "The L2TP connection attempt failed because certificate validation on the remote "
        "computer failed."
    ),
}

CONNECTIONS = ["Office VPN", "社内VPN", "VPN", "Corp-L2TP", "本社 VPN 接続"]
GUIDS = [
    "{5E2A1C2B-7F3D-4B89-9F0C-1D2E3F405162}",
    "{0B7C88E1-3D22-4F0A-A789-60F1E2D3C4B5}",
    "{9A0F6E57-2C81-4D3B-8E09-7F5A4B3C2D1E}",
]
DATES = ["2025/06/02 9:14:03", "2025-11-17 08:09:55", "2026/01/05 18:42:10"]

DEV_CHATTER_JA = [
    ("お疲れ様です。VPNにつなごうとすると以下のエラーが出ます。\n", "\nよろしくお願いします。"),
    ("すみません、在宅勤務中にこうなりました：「", "」"),
    ("", "\nと表示されて接続できません"),
]
HOLD_CHATTER_JA = [
    ("お世話になっております。昨日から次のエラーが表示されます。\n", "\n至急見ていただけますか"),
    ("@helpdesk VPNが切れて ", " って出ます…"),
    ("PC再起動してもダメでした。\n>>> ", "\n<<<"),
]
DEV_CHATTER_EN = [
    ("Hi, I'm getting this error when I connect to the VPN:\n", "\nThanks"),
    ("help! ", " (tried twice)"),
]
HOLD_CHATTER_EN = [
    ("Hello team, the following error appears every morning: ", "\nRegards, Ken"),
    ("> ", "\n> sent from my laptop"),
]

DEV_OWN_WORDS = [
    "朝からVPNがつながらない、エラー{code}",
    "VPN接続できません。エラー{code}が出ます",
    "自宅からだとエラー{fw}になります",
    "vpn error {code} since this morning",
    "getting Error {code}: when dialing the company VPN",
]
HOLD_OWN_WORDS = [
    "在宅でVPNを使うとエラーコード{fw}と出て失敗します",
    "{code}エラーでVPNにつながりません",
    "Can't connect to VPN, it says error {code}",
    "VPN fails with code {code} after the Windows update",
    "エラー番号：{fw}",
]

# Employees' own words without a code, by the code whose article answers them.
DEV_OWN_NO_CODE = [
    (868, "VPNサーバーの名前が解決できないと出る"),
    (691, "ユーザー名とパスワードの組み合わせが認識されないと言われます"),
    (809, "リモートサーバーが応答しないのでVPNにつながらない"),
    (13868, "IKEv2 でポリシーの一致エラーになります"),
    (827, "the IKE and AuthIP IPsec Keying Modules service is not running, it says"),
]
HOLD_OWN_NO_CODE = [
    (789, "セキュリティ層で処理エラーが検出されたって出てL2TPがつながらない"),
    (868, "it says the name of the remote access server did not resolve"),
    (741, "the local computer does not support the required data encryption type??"),
    (711, "could not start the Remote Access Connection Manager service in time"),
    (691, "VPN: user name and password combination is not recognized, but my password is right"),
    (628, "接続が完了する前にリモートコンピューターによって切断されました、と出ます"),
]

# Lines written without looking at the matcher's output; expect is null for all of them.
DEV_NEGATIVES = [
    "Windows Update encountered an error. Error code 0x80070643",
    "Outlook cannot log on. Verify you are connected to the network and are using the proper "
    "server and mailbox name.",
    "The trust relationship between this workstation and the primary domain failed.",
    "Windows cannot access \\\\fileserver\\share. Error code: 0x80070035 The network path was "
    "not found.",
    "プリンターに接続できません。操作に失敗しました。エラー 0x0000011b",
    "このアプリはお使いの PC では実行できません",
    "Teams: We're sorry - we've run into an issue. Restart",
    "ディスクの空き容量が不足しています",
    "asdfgh jkl; qwerty 12345",
    "<script>alert('x')</script>",
    "'; DROP TABLE articles; --",
    "😀😀😀 VPN 🙏",
    "パスワードを変更してください",
    "The remote desktop session has ended.",
    "Excel ファイルが破損しているため開くことができません",
]
HOLD_NEGATIVES = [
    "BitLocker recovery: enter the recovery key to get going again",
    "Windows is not activated. Error code: 0xC004F074",
    "The Group Policy Client service failed the sign-in. Access is denied.",
    "Your password has expired and must be changed.",
    "ブルースクリーン IRQL_NOT_LESS_OR_EQUAL が出ました",
    "Wi-Fi に接続できません。このネットワークに接続できません",
    "DNS_PROBE_FINISHED_NXDOMAIN",
    "印刷ジョブがキューに残ったままです",
    "Zoom error code 5003",
    "SELECT * FROM users WHERE 1=1",
    "ｱｲｳｴｵ ｶｷｸｹｺ",
    "lorem ipsum dolor sit amet",
    "Microsoft Edge が応答していません",
    "Sign-in error 0x80190001 in OneDrive",
    "The application was unable to start correctly (0xc000007b).",
]


def _fullwidth(text: str) -> str:
    return "".join(chr(ord(c) + 0xFEE0) if "0" <= c <= "9" else c for c in text)


def _cut(rng: random.Random, text: str) -> tuple[str, str]:
    keep = int(len(text) * rng.uniform(0.55, 0.8))
    if rng.random() < 0.5:
        return text[:keep], f"first {keep} chars"
    return text[-keep:], f"last {keep} chars"


def _breaks(rng: random.Random, text: str) -> str:
    out = list(text)
    for _ in range(max(1, len(text) // 35)):
        out.insert(rng.randrange(1, len(out)), "\r\n" if rng.random() < 0.5 else "\n")
    return "".join(out)


def _typos(rng: random.Random, text: str, rate: float = 0.03) -> str:
    out = []
    for ch in text:
        r = rng.random()
        if r < rate / 3:
            continue  # dropped
        if r < 2 * rate / 3 and ch.isalpha():
            out.append(ch + ch)  # doubled
        elif r < rate and out:
            out[-1], ch = ch, out[-1]  # swapped
            out.append(ch)
        else:
            out.append(ch)
    return "".join(out)


def _codeless(article: dict, lang: str) -> list[str]:
    """The article's dialog messages in ``lang``: signatures with no number in them."""
    return [
        s["text"]
        for s in article.get("signatures") or []
        if s.get("lang") == lang and not re.search(r"\d{3}", s["text"])
    ]


def _messages(article: dict, code: int) -> dict[str, str]:
    """The dialog message of ``code`` per language.

    An article may answer several codes (the seed: 789 and 791). Its rasdial signature
    ("Remote Access error 791 - ...") says which English message is the code's; the Japanese
    one is taken at the same position, as the KB lists the two languages in parallel.
    """
    en_all, ja_all = _codeless(article, "en"), _codeless(article, "ja")
    found: dict[str, str] = {}
    for sig in article.get("signatures") or []:
        m = re.search(rf"error {code} - (.+)", sig["text"])
        if m and m.group(1) in en_all:
            found["en"] = m.group(1)
    if "en" not in found and en_all:
        found["en"] = max(en_all, key=len)
    if ja_all:
        pos = en_all.index(found["en"]) if found.get("en") in en_all else 0
        found["ja"] = ja_all[pos] if pos < len(ja_all) and len(ja_all) == len(en_all) else ja_all[0]
    return found


def _dev_lines(rng: random.Random, slug: str, code: int, msg: dict[str, str]) -> list[dict]:
    lines = []
    conn = rng.choice(CONNECTIONS)
    en, ja = msg.get("en"), msg.get("ja")
    if en:
        lines.append((en, "Microsoft en message as shown"))
        lines.append(
            (
                f"Connecting to {conn}...\nVerifying username and password...\n"
                f"Remote Access error {code} - {en}\n\nFor more help on this error:\n"
                "        Type 'hh netcfg.chm'\n        In help, click Troubleshooting, then "
                f"Error Messages, then {code}\n",
                "rasdial output format (en)",
            )
        )
        cut, how = _cut(rng, en)
        lines.append((cut, f"en message cut: {how}"))
        lines.append((_typos(rng, en), "en message with 3% typos"))
        pre, post = rng.choice(DEV_CHATTER_EN)
        lines.append((pre + _breaks(rng, en) + post, "en chatter + line breaks"))
        lines.append((f"Can't connect to {conn}\n\n{en}", "Settings pop-up without code (en)"))
    if ja:
        lines.append((ja, "Japanese message as in the KB"))
        lines.append((_breaks(rng, ja), "ja message with line breaks"))
        cut, how = _cut(rng, ja)
        lines.append((cut, f"ja message cut: {how}"))
        pre, post = rng.choice(DEV_CHATTER_JA)
        lines.append((pre + ja + post, "ja chatter around the message"))
        lines.append((f"{conn} に接続できません\n{ja}", "Settings pop-up without code (ja)"))
    lines.append(
        (
            f"CoId={rng.choice(GUIDS)}: The user SYSTEM dialed a connection named {conn} which "
            f"has failed. The error code returned on failure is {code}.",
            "RasClient event 20227 (en template, facts section 5)",
        )
    )
    own = rng.choice(DEV_OWN_WORDS).format(code=code, fw=_fullwidth(str(code)))
    lines.append((own, "employee's own words with the code"))
    lines.append((f"エラー：{_fullwidth(str(code))}", "full-width code with Japanese colon"))
    return [{"text": t, "expect": slug, "note": n} for t, n in lines]


def _holdout_lines(rng: random.Random, slug: str, code: int, msg: dict[str, str]) -> list[dict]:
    lines = []
    conn = rng.choice(CONNECTIONS)
    en, ja = msg.get("en"), msg.get("ja")
    if en:
        lines.append(
            (
                "Log Name:      Application\nSource:        RasClient\n"
                f"Date:          {rng.choice(DATES)}\nEvent ID:      20227\n"
                "Task Category: None\nLevel:         Error\nUser:          SYSTEM\n"
                f"Description:\nCoId={rng.choice(GUIDS)}: The user SYSTEM dialed a connection "
                f"named {conn} which has failed. The error code returned on failure is {code}.",
                "Event Viewer copy of RasClient 20227 (en)",
            )
        )
        cut, how = _cut(rng, en)
        lines.append((_typos(rng, cut, 0.02), f"en cut ({how}) with 2% typos"))
        pre, post = rng.choice(HOLD_CHATTER_EN)
        lines.append((pre + en + post, "en chatter / mail quoting"))
        lines.append((f"Error {code}: {en}", "Error N: + en message"))
        lines.append((en.upper(), "en message in capitals"))
    if ja:
        lines.append(
            (
                f"{conn} に接続しています...\nユーザー名とパスワードを確認しています...\n"
                f"リモート アクセス エラー {code} - {ja}",
                "rasdial output, ja framing is our rendering",
            )
        )
        cut, how = _cut(rng, ja)
        lines.append((_breaks(rng, cut), f"ja cut ({how}) with line breaks"))
        pre, post = rng.choice(HOLD_CHATTER_JA)
        lines.append((pre + _typos(rng, ja, 0.02) + post, "ja chatter + 2% typos"))
        lines.append(
            ("　".join([ja[: len(ja) // 2], ja[len(ja) // 2 :]]), "ja with ideographic space")
        )
    lines.append(
        (
            f"CoId={rng.choice(GUIDS)}: ユーザー SYSTEM が {conn} という名前の接続をダイヤルし"
            f"ましたが、失敗しました。失敗時に返されたエラー コードは {code} です。",
            "RasClient event 20227, ja wording is our rendering",
        )
    )
    own = rng.choice(HOLD_OWN_WORDS).format(code=code, fw=_fullwidth(str(code)))
    lines.append((own, "employee's own words with the code"))
    lines.append((f"error code: 0x{0x80070000 + code:08X}", "HRESULT form of the code"))
    return [{"text": t, "expect": slug, "note": n} for t, n in lines]


def _own_words(code_to_slug: dict[int, str], lines: list[tuple[int, str]]) -> list[dict]:
    return [
        {"text": text, "expect": code_to_slug[code], "note": "own words, no code"}
        for code, text in lines
        if code in code_to_slug
    ]


def _negatives(texts: list[str]) -> list[dict]:
    return [{"text": t, "expect": None, "note": "negative: not a VPN error"} for t in texts]


def _learn_lines(code_to_slug: dict[int, str], holdout: bool) -> list[dict]:
    lines = []
    for i, (code, text) in enumerate(sorted(LEARN_WORDING.items())):
        if code in code_to_slug and (i % 2 == 1) == holdout:
            lines.append(
                {"text": text, "expect": code_to_slug[code], "note": "older Learn wording"}
            )
    return lines


def _code_to_slug(articles: list[dict]) -> dict[int, str]:
    owners: dict[int, list[str]] = {}
    for art in articles:
        for code in art.get("error_codes") or []:
            owners.setdefault(int(code), []).append(art["slug"])
    for code, slugs in owners.items():
        if len(slugs) > 1:
            print(f"warning: code {code} is in {slugs}; labelled with the first", file=sys.stderr)
    return {code: slugs[0] for code, slugs in owners.items()}


def build(articles: list[dict], seed: int, per_code: Callable[..., list[dict]]) -> list[dict]:
    rng = random.Random(seed)
    lines: list[dict] = []
    code_to_slug = _code_to_slug(articles)
    for art in sorted(articles, key=lambda a: a["slug"]):
        for code in art.get("error_codes") or []:
            if code_to_slug.get(int(code)) == art["slug"]:
                lines += per_code(rng, art["slug"], int(code), _messages(art, int(code)))
    return lines


def main() -> None:
    articles = [a for a in kb.load_dir(ROOT / "kb") if a.get("status", "published") == "published"]
    dev = build(articles, 1, _dev_lines) + _learn_lines(_code_to_slug(articles), False)
    hold = build(articles, 2, _holdout_lines) + _learn_lines(_code_to_slug(articles), True)
    dev += _own_words(_code_to_slug(articles), DEV_OWN_NO_CODE) + _negatives(DEV_NEGATIVES)
    hold += _own_words(_code_to_slug(articles), HOLD_OWN_NO_CODE) + _negatives(HOLD_NEGATIVES)
    for name, lines in (("dev.jsonl", dev), ("holdout.jsonl", hold)):
        with open(HERE / name, "w", encoding="utf-8") as fh:
            for line in lines:
                fh.write(json.dumps(line, ensure_ascii=False) + "\n")
        print(f"{name}: {len(lines)} lines from {len(articles)} articles")


if __name__ == "__main__":
    main()
