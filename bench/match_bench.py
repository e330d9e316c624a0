"""Accuracy and latency of the matcher on the labelled development set.

    .venv/bin/python bench/match_bench.py [--misses] [--repeat N]

First, the honest set (honest.jsonl): texts gathered from sources outside the KB (Microsoft
Learn and support pages, GitHub issues, Q&A and blog posts in Japanese and English), each line
citing its source. Per form (message, rasdial, dialog, event, own words) and language it
reports, for lines whose code the KB covers, top-1 / top-3 and the confident-wrong rate (a
confident answer that is not the expected article), and for lines whose code the KB does not
cover and for negatives, the confident-wrong rate (any confident answer is wrong there). A line
with a ``code`` expects the article that covers that code, or nothing; a line without one
carries its ``expect``. Lines are split dev / holdout by position; only dev misses were read.

Then, for the synthetic dev.jsonl (tuned on) and holdout.jsonl (same generator, other draws):
- top-1: a line counts when the best match is confident and is the expected article, or, for
  a line expecting null, when there is no confident match;
- top-3: the expected article is among the first three matches (null lines: as top-1);
- no-match precision: of the lines the matcher answered "no confident match", the share that
  really expect null (and no-match recall: of the null lines, the share answered so);
then the p50/p99 latency of one ``match`` call with the shipped KB and with the KB grown to
10,000 signatures by synthetic filler articles (accuracy is re-measured there too: the filler
must not steal matches).
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from diagnostics import error_codes, kb, matching  # noqa: E402

DEVSET = ROOT / "bench" / "devset"
FILLER_SIGNATURES = 10_000


def load_lines(name: str) -> list[dict]:
    with open(DEVSET / name, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def expected(index: matching.Index, line: dict) -> str | None:
    """The article a line should get: the one covering its code, else its ``expect``."""
    if "code" in line and line.get("form") != "negative":
        owners = index.by_code.get(int(line["code"]), [])
        return index.articles[owners[0]].slug if owners else None
    return line.get("expect")


def honest_table(index: matching.Index, lines: list[dict], show_misses: bool) -> list[dict]:
    """Per (form, lang) and overall: covered top-1/top-3/confident-wrong, uncovered conf-wrong."""
    groups: dict[tuple[str, str], dict[str, int]] = {}
    for line in lines:
        expect = expected(index, line)
        result = matching.match(index, line["text"], lang=line.get("lang", "ja"))
        best = result.matches[0].article if result.confident else None
        ranked = [m.article for m in result.matches[:3]]
        keys = [(line["form"], line["lang"]), (line["form"], "*"), ("*", line["lang"]), ("*", "*")]
        for key in keys:
            g = groups.setdefault(
                key, dict.fromkeys(("cov", "top1", "top3", "cw", "unc", "ucw"), 0)
            )
            if expect is not None:
                g["cov"] += 1
                g["top1"] += best == expect
                g["top3"] += expect in ranked
                g["cw"] += best is not None and best != expect
            else:
                g["unc"] += 1
                g["ucw"] += best is not None
        wrong = best != expect if expect is not None else best is not None
        if show_misses and (wrong or (expect is not None and expect not in ranked)):
            got = [(m.article, m.score) for m in result.matches[:3]]
            print(f"  MISS[{line['split']}] expect={expect} confident={result.confident} got={got}")
            print(f"    {line['text'][:140]!r}")
    rows = []
    for (form, lang), g in sorted(groups.items(), key=lambda kv: (kv[0][0] == "*", kv[0])):
        rows.append({"form": form, "lang": lang, **g})
    return rows


def _pct(num: int, den: int) -> str:
    return f"{num / den:6.1%}" if den else "     -"


def report_honest(index: matching.Index, lines: list[dict], show_misses: bool) -> None:
    for split in ("dev", "holdout", None):
        chosen = [x for x in lines if split is None or x["split"] == split]
        label = split or "all"
        print(f"\n== honest set ({label}): {len(chosen)} lines, {len(index.articles)} articles")
        print(
            f"{'form':10} {'lang':4} {'covered':>7} {'top-1':>6} {'top-3':>6} {'conf-wrong':>10}"
            f" {'uncovered':>9} {'conf-wrong':>10}"
        )
        for r in honest_table(index, chosen, show_misses and split == "dev"):
            print(
                f"{r['form']:10} {r['lang']:4} {r['cov']:7} {_pct(r['top1'], r['cov'])}"
                f" {_pct(r['top3'], r['cov'])} {_pct(r['cw'], r['cov']):>10}"
                f" {r['unc']:9} {_pct(r['ucw'], r['unc']):>10}"
            )


UNCOVERED_FORMS = {
    "rasdial": "Remote Access error {code} - {message}",
    "dialog": "Error {code}: {message}",
    "event": (
        "CoId={{5E2A1C2B-7F3D-4B89-9F0C-1D2E3F405162}}: The user SYSTEM dialed a connection named "
        "Office VPN which has failed. The error code returned on failure is {code}."
    ),
    "own words en": "my vpn stopped working, it says error {code}: {message}",
    "own words ja": "VPNに接続できません。エラー{code}が出ます。{message}",
}


def report_uncovered(index: matching.Index) -> None:
    """Every code Windows defines that no article covers, pasted with Windows' own message."""
    codes = [
        c
        for c in error_codes.codes()
        if c not in index.by_code and (600 <= c <= 899 or 13801 <= c <= 13870)
    ]
    print(f"\n== codes outside the KB ({len(codes)}), Windows' own message in each form")
    for form, template in UNCOVERED_FORMS.items():
        wrong = 0
        for code in codes:
            text = template.format(code=code, message=error_codes.meaning(code).text)
            wrong += matching.match(index, text).confident
        print(f"{form:14} confident (wrong) {wrong:4} / {len(codes)}  {_pct(wrong, len(codes))}")


def evaluate(index: matching.Index, lines: list[dict], show_misses: bool) -> dict[str, float]:
    top1 = top3 = said_none = said_none_right = nulls = 0
    for line in lines:
        result = matching.match(index, line["text"])
        expect = line["expect"]
        best = result.matches[0].article if result.confident else None
        ranked = [m.article for m in result.matches[:3]]
        if not result.confident:
            said_none += 1
            said_none_right += expect is None
        if expect is None:
            nulls += 1
        ok1 = best == expect
        ok3 = (expect in ranked) if expect is not None else ok1
        top1 += ok1
        top3 += ok3
        if show_misses and not ok1:
            got = [(m.article, m.score) for m in result.matches[:3]]
            print(f"  MISS expect={expect} got={got} [{line['note']}]\n    {line['text'][:160]!r}")
    n = max(1, len(lines))
    return {
        "n": len(lines),
        "top1": top1 / n,
        "top3": top3 / n,
        "no_match_precision": said_none_right / said_none if said_none else 1.0,
        "no_match_recall": said_none_right / nulls if nulls else 1.0,
    }


# Filler: realistic-looking Windows error sentences in both languages, combined from parts so
# that they share vocabulary (and trigrams) with the real messages, as a grown KB would.
_EN_SUBJECTS = [
    "The remote connection",
    "The network connection",
    "The L2TP connection attempt",
    "The operation",
    "The print job",
    "The certificate request",
    "The sync session",
    "The backup",
    "The driver installation",
    "The user profile",
    "The update",
    "The file share",
    "The VPN tunnel",
    "The Bluetooth device",
    "The domain join",
]
_EN_VERBS = [
    "failed because",
    "was not completed because",
    "could not be started because",
    "was cancelled because",
    "was terminated because",
    "was denied because",
]
_EN_REASONS = [
    "the server did not respond in time",
    "the security layer rejected the request",
    "a required service is not running",
    "the configuration data is corrupt",
    "the remote computer refused the negotiation",
    "the credentials have expired",
    "the network path was not found",
    "the device is not ready",
    "the policy on this computer does not allow it",
    "the disk is full",
    "the name of the server could not be resolved",
    "a timeout occurred during negotiation",
    "the certificate chain could not be built",
    "the session limit was reached",
]
_JA_SUBJECTS = [
    "リモート接続",
    "ネットワーク接続",
    "印刷ジョブ",
    "証明書の要求",
    "同期セッション",
    "バックアップ",
    "ドライバーのインストール",
    "ユーザー プロファイル",
    "更新プログラム",
    "ファイル共有",
    "VPN トンネル",
    "Bluetooth デバイス",
    "ドメイン参加",
]
_JA_REASONS = [
    "サーバーが時間内に応答しなかった",
    "セキュリティ層が要求を拒否した",
    "必要なサービスが実行されていない",
    "構成データが壊れている",
    "リモートコンピューターがネゴシエーションを拒否した",
    "資格情報の有効期限が切れている",
    "ネットワーク パスが見つからなかった",
    "デバイスの準備ができていない",
    "このコンピューターのポリシーで許可されていない",
    "ディスクがいっぱいになっている",
]
_JA_ENDS = [
    "失敗しました。",
    "完了できませんでした。",
    "開始できませんでした。",
    "取り消されました。",
]


def _word(rng: random.Random, alphabet: str, n: int) -> str:
    return "".join(rng.choice(alphabet) for _ in range(n))


def filler_articles(seed: int = 7) -> Iterator[dict]:
    """Endless synthetic articles; their names are letters (the matcher ignores digits)."""
    rng = random.Random(seed)
    i = 0
    while True:
        i += 1
        name = _word(rng, "abcdefghijklmnopqrstuvwxyz", 8)
        kana = _word(
            rng, "アイウエオカキクケコサシスセソタチツテトナニヌネノハヒフヘホマミムメモ", 5
        )
        en = (
            f"{rng.choice(_EN_SUBJECTS)} {rng.choice(_EN_VERBS)} {rng.choice(_EN_REASONS)}"
            f" (component {name}). {rng.choice(_EN_REASONS).capitalize()}."
        )
        ja = (
            f"{rng.choice(_JA_REASONS)}ため、{rng.choice(_JA_SUBJECTS)}は"
            f"{rng.choice(_JA_ENDS)} (コンポーネント {kana})"
        )
        yield {
            "slug": f"filler-{i}",
            "status": "published",
            "error_codes": [20000 + i],
            "title": {"ja": f"{kana} の問題", "en": f"Problem with {name}"},
            "signatures": [{"lang": "en", "text": en}, {"lang": "ja", "text": ja}],
        }


def grown_index(shipped: list[dict], signatures: int) -> matching.Index:
    """The shipped KB plus filler articles until the index holds ``signatures`` texts."""
    articles = list(shipped)
    have = len(matching.build_index(shipped).signatures)
    filler = filler_articles()
    while have < signatures:
        articles.append(next(filler))
        have += 4  # two signatures and two titles, all distinct
    return matching.build_index(articles)


def latency(index: matching.Index, texts: list[str], repeat: int) -> tuple[float, float]:
    samples = []
    for _ in range(repeat):
        for text in texts:
            t0 = time.perf_counter()
            matching.match(index, text)
            samples.append((time.perf_counter() - t0) * 1000)
    samples.sort()
    p99 = samples[min(len(samples) - 1, int(len(samples) * 0.99))]
    return statistics.median(samples), p99


def report(label: str, index: matching.Index, sets: dict, misses: bool, repeat: int) -> None:
    print(f"\n== {label}: {len(index.articles)} articles, {len(index.signatures)} signatures")
    texts = []
    for name, lines in sets.items():
        texts += [line["text"] for line in lines]
        stats = evaluate(index, lines, misses)
        print(
            f"{name:8} n={stats['n']:4}  top-1 {stats['top1']:6.1%}  top-3 {stats['top3']:6.1%}"
            f"  no-match precision {stats['no_match_precision']:6.1%}"
            f"  recall {stats['no_match_recall']:6.1%}"
        )
    matching.match(index, texts[0])  # warm up
    p50, p99 = latency(index, texts, repeat)
    print(
        f"latency of one match: p50 {p50:.2f} ms  p99 {p99:.2f} ms  ({len(texts) * repeat} calls)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--misses", action="store_true", help="print every top-1 miss")
    parser.add_argument("--repeat", type=int, default=3, help="latency passes over the texts")
    args = parser.parse_args()
    shipped = [a for a in kb.load_dir(ROOT / "kb") if a.get("status", "published") == "published"]
    sets = {"dev": load_lines("dev.jsonl"), "holdout": load_lines("holdout.jsonl")}
    print(
        f"THRESHOLD {matching.THRESHOLD}; dev set: "
        + ", ".join(f"{k} {len(v)} lines" for k, v in sets.items())
    )
    index = matching.build_index(shipped)
    report_honest(index, load_lines("honest.jsonl"), args.misses)
    report_uncovered(index)
    report("shipped KB", index, sets, args.misses, args.repeat)
    t0 = time.perf_counter()
    big = grown_index(shipped, FILLER_SIGNATURES)
    print(f"\n(index of the grown KB built in {(time.perf_counter() - t0) * 1000:.0f} ms)")
    report("KB grown with filler", big, sets, args.misses, args.repeat)


if __name__ == "__main__":
    main()
