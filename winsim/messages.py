"""Texts a simulated host shows: RAS error messages and RasClient event messages, ja-JP and en-US.

English error texts are the ``mprmsg.dll`` strings of Windows 10/11 as quoted in
``facts/windows-vpn.md`` section 2 (MPRMSG). Japanese texts: 789 and 791 are the seed article's
wording; every other Japanese text here is our own rendering in the style of Windows' Japanese
strings and is **unverified** against a ja-JP ``mprmsg.dll`` (see ``JA_VERIFIED``).
"""

from __future__ import annotations

EN: dict[int, str] = {
    623: "The system could not find the phone book entry for this connection.",
    691: (
        "The remote connection was denied because the user name and password combination you "
        "provided is not recognized, or the selected authentication protocol is not permitted on "
        "the remote access server."
    ),
    711: (
        "The operation could not finish because it could not start the Remote Access Connection "
        "Manager service in time. Please try the operation again."
    ),
    766: (
        "A certificate could not be found.  Connections that use the L2TP protocol over IPSec "
        "require the installation of a machine certificate, also known as a computer certificate."
    ),
    788: (
        "The L2TP connection attempt failed because the security layer could not negotiate "
        "compatible parameters with the remote computer."
    ),
    789: (
        "The L2TP connection attempt failed because the security layer encountered a processing "
        "error during initial negotiations with the remote computer."
    ),
    791: (
        "The L2TP connection attempt failed because security policy for the connection was not "
        "found."
    ),
    800: (
        "The remote connection was not made because the attempted VPN tunnels failed. The VPN "
        "server might be unreachable. If this connection is attempting to use an L2TP/IPsec "
        "tunnel, the security parameters required for IPsec negotiation might not be configured "
        "properly."
    ),
    809: (
        "The network connection between your computer and the VPN server could not be "
        "established because the remote server is not responding. This could be because one of "
        "the network devices (e.g, firewalls, NAT, routers, etc) between your computer and the "
        "remote server is not configured to allow VPN connections. Please contact your "
        "Administrator or your service provider to determine which device may be causing the "
        "problem."
    ),
    827: (
        "The VPN connection cannot be completed because the 'IKE and AuthIP IPSec Keying Modules' "
        "service and/or the 'Base Filtering Engine' service is not running. These services are "
        "required to establish the connection."
    ),
    868: (
        "The remote connection was not made because the name of the remote access server did not "
        "resolve."
    ),
    13801: "IKE authentication credentials are unacceptable.",
    13868: "Policy match error.",
}

JA: dict[int, str] = {
    623: "この接続の電話帳エントリが見つかりませんでした。",
    691: (
        "指定されたユーザー名とパスワードの組み合わせが認識されないか、選択された認証プロトコルが"
        "リモート アクセス サーバーで許可されていないため、リモート接続は拒否されました。"
    ),
    711: (
        "Remote Access Connection Manager サービスを時間内に開始できなかったため、操作を完了できません"
        "でした。操作をやり直してください。"
    ),
    766: (
        "証明書が見つかりませんでした。IPSec 経由の L2TP プロトコルを使う接続では、コンピューター証明書"
        " (マシン証明書) をインストールする必要があります。"
    ),
    788: (
        "セキュリティ層でリモート コンピューターと互換性のあるパラメーターをネゴシエートできなかったため、"
        "L2TP 接続に失敗しました。"
    ),
    789: (
        "リモートコンピューターと最初にネゴシエートするときに、セキュリティ層で処理エラーが検出されたため、"
        "L2TP接続に失敗しました。"
    ),
    791: "この接続のセキュリティ ポリシーが見つからなかったため、L2TP 接続に失敗しました。",
    800: (
        "試行した VPN トンネルが失敗したため、リモート接続は確立されませんでした。VPN サーバーに到達"
        "できない可能性があります。この接続で L2TP/IPsec トンネルを使用している場合は、IPsec "
        "ネゴシエーションに必要なセキュリティ パラメーターが正しく構成されていない可能性があります。"
    ),
    809: (
        "リモート サーバーが応答しないため、コンピューターと VPN サーバーの間のネットワーク接続を確立"
        "できませんでした。コンピューターとリモート サーバーの間にあるいずれかのネットワーク デバイス "
        "(ファイアウォール、NAT、ルーターなど) が VPN 接続を許可するように構成されていない可能性が"
        "あります。問題の原因となっているデバイスを特定するには、管理者またはサービス プロバイダーに"
        "お問い合わせください。"
    ),
    827: (
        "'IKE and AuthIP IPsec Keying Modules' サービスまたは 'Base Filtering Engine' サービスが"
        "実行されていないため、VPN 接続を完了できません。これらのサービスは接続の確立に必要です。"
    ),
    868: "リモート アクセス サーバーの名前を解決できなかったため、リモート接続は確立されませんでした。",
    13801: "IKE 認証資格情報が受け入れられません。",
    13868: "ポリシーの一致エラーです。",
}

# Japanese strings taken from a real source (the seed article). All others are our rendering.
JA_VERIFIED = frozenset({789, 791})

# RasClient event templates (Application log). en-US: MPRMSG (facts section 5). ja-JP: our
# rendering, unverified.
EVENT_TEMPLATES: dict[str, dict[int, str]] = {
    "en-US": {
        20221: (
            "CoId={coid}: The user {user} has started dialing a VPN connection using a {scope} "
            "connection profile named {name}. The connection settings are: {settings}"
        ),
        20225: (
            "CoId={coid}: The user {user} has dialed a connection named {name} to the Remote "
            "Access Server which has successfully connected. The connection parameters are:"
            "{settings}"
        ),
        20226: (
            "CoId={coid}: The user {user} dialed a connection named {name} which has terminated. "
            "The reason code returned on termination is {code}."
        ),
        20227: (
            "CoId={coid}: The user {user} dialed a connection named {name} which has failed. The "
            "error code returned on failure is {code}."
        ),
    },
    "ja-JP": {
        20221: (
            "CoId={coid}: ユーザー {user} が、{name} という名前の{scope}接続プロファイルを使用して VPN "
            "接続のダイヤルを開始しました。接続設定: {settings}"
        ),
        20225: (
            "CoId={coid}: ユーザー {user} が {name} という名前の接続でリモート アクセス サーバーに"
            "ダイヤルし、正常に接続されました。接続パラメーター:{settings}"
        ),
        20226: (
            "CoId={coid}: ユーザー {user} がダイヤルした {name} という名前の接続が終了しました。"
            "終了時に返された理由コードは {code} です。"
        ),
        20227: (
            "CoId={coid}: ユーザー {user} が {name} という名前の接続をダイヤルしましたが、失敗しました。"
            "失敗時に返されたエラー コードは {code} です。"
        ),
    },
}

SCOPE = {
    "en-US": {True: "all-user", False: "per-user"},
    "ja-JP": {True: "全ユーザー", False: "ユーザー別"},
}

# What rasdial.exe prints (runner.ps1 joins its lines with spaces). ja-JP: unverified.
RASDIAL = {
    "en-US": {
        "connecting": "Connecting to {name}...",
        "error": "Remote Access error {code} - {text}",
        "ok": "Successfully connected to {name}. Command completed successfully.",
    },
    "ja-JP": {
        "connecting": "{name} に接続中...",
        "error": "リモート アクセス エラー {code} - {text}",
        "ok": "{name} に正常に接続しました。 コマンドは正常に終了しました。",
    },
}


def _lang(locale: str) -> str:
    return "ja-JP" if locale.lower().startswith("ja") else "en-US"


def error_text(code: int, locale: str) -> str:
    """The text Windows shows for RAS error ``code`` in ``locale`` (en-US when unknown)."""
    table = JA if _lang(locale) == "ja-JP" else EN
    return table.get(code) or EN.get(code) or f"Error {code}"


def event_text(event_id: int, locale: str, **fields: object) -> str:
    """A RasClient event message for ``event_id``, filled with ``fields``."""
    lang = _lang(locale)
    values = dict(fields)
    if "scope" in values:
        values["scope"] = SCOPE[lang][bool(values["scope"])]
    return EVENT_TEMPLATES[lang][event_id].format(**values)


def rasdial_text(name: str, code: int | None, locale: str) -> str:
    """rasdial.exe's output for a dial of ``name`` that ended with ``code`` (None: connected)."""
    texts = RASDIAL[_lang(locale)]
    if code is None:
        last = texts["ok"].format(name=name)
    else:
        last = texts["error"].format(code=code, text=error_text(code, locale))
    return texts["connecting"].format(name=name) + " " + last
