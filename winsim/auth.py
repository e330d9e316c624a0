"""Authentication and message encryption, as a default WinRM listener does them.

- HTTP: Negotiate (NTLM) only, with MS-WSMV message encryption afterwards; Basic is refused
  because a default Windows listener has AllowUnencrypted=false.
- HTTPS: Basic against the host's local account.

pyspnego is the NTLM acceptor. It reads its accounts from the file named by the
``NTLM_USER_FILE`` environment variable at the moment it checks the client's answer, so each
host gets its own file and the variable is pointed at it right before that check. That is
safe because every acceptor step runs on the one event-loop thread.
"""

from __future__ import annotations

import base64
import binascii
import os
import struct
from pathlib import Path
from typing import TYPE_CHECKING

import spnego
from spnego.exceptions import SpnegoError

if TYPE_CHECKING:
    from winsim.hosts import Host

ENCRYPTED_PROTOCOL = "application/HTTP-SPNEGO-session-encrypted"
ENCRYPTED_CONTENT_TYPE = (
    f'multipart/encrypted;protocol="{ENCRYPTED_PROTOCOL}";boundary="Encrypted Boundary"'
)
_BOUNDARY = b"--Encrypted Boundary"


class AuthFailed(Exception):
    """The client's credentials were rejected (answer 401)."""


def write_credential_file(host: Host, directory: Path) -> Path:
    """Write the host's account as ``DOMAIN:USER:PASSWORD`` lines and return the file's path.

    A local account (no domain) is accepted bare or qualified with the computer name, as
    Windows accepts ``user`` and ``PC01\\user`` for a local account.
    """
    domains = [host.domain] if host.domain else ["", host.computer_name]
    lines = [f"{domain}:{host.username}:{host.password}" for domain in domains]
    path = directory / f"{_safe(host.name)}.ntlm"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    path.chmod(0o600)
    return path


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)


class NtlmAcceptor:
    """The server side of one connection's NTLM handshake and, after it, its sealing."""

    def __init__(self, credential_file: Path) -> None:
        self.credential_file = credential_file
        # pyspnego insists the variable names a file before it builds an acceptor.
        os.environ["NTLM_USER_FILE"] = str(credential_file)
        self.context = spnego.server(protocol="ntlm", service="http")

    @property
    def complete(self) -> bool:
        return bool(self.context.complete)

    def step(self, token_b64: str) -> str | None:
        """Feed the client's token; return the base64 answer token, if any.

        Raises AuthFailed on a bad token or wrong credentials.
        """
        try:
            token = base64.b64decode(token_b64, validate=True)
        except binascii.Error as err:
            raise AuthFailed("token is not base64") from err
        os.environ["NTLM_USER_FILE"] = str(self.credential_file)
        try:
            answer = self.context.step(token)
        except SpnegoError as err:
            raise AuthFailed(str(err)) from err
        return base64.b64encode(answer).decode("ascii") if answer else None

    def unwrap(self, body: bytes) -> bytes:
        """Decrypt a ``multipart/encrypted`` request body (MS-WSMV 2.2.9.1.1)."""
        parts = [part for part in body.split(_BOUNDARY + b"\r\n") if part]
        if len(parts) < 2:
            raise ValueError("encrypted body has no payload part")
        header, payload = parts[0], parts[1]
        try:
            expected = int(header.split(b"Length=")[1].split(b"\r\n")[0].strip())
        except (IndexError, ValueError) as err:
            raise ValueError("encrypted body has no OriginalContent length") from err
        payload = payload.removesuffix(_BOUNDARY + b"--\r\n")
        payload = payload.replace(b"\tContent-Type: application/octet-stream\r\n", b"", 1)
        if len(payload) < 4:
            raise ValueError("encrypted payload too short")
        sig_len = struct.unpack("<i", payload[:4])[0]
        signature, sealed = payload[4 : 4 + sig_len], payload[4 + sig_len :]
        try:
            plain = self.context.unwrap_winrm(signature, sealed)
        except SpnegoError as err:
            raise ValueError(f"cannot decrypt: {err}") from err
        if len(plain) != expected:
            raise ValueError("decrypted length differs from OriginalContent")
        return plain

    def wrap(self, data: bytes) -> bytes:
        """Encrypt a response body the way pywinrm's Encryption parses it."""
        result = self.context.wrap_winrm(data)
        return (
            _BOUNDARY
            + b"\r\n\tContent-Type: "
            + ENCRYPTED_PROTOCOL.encode()
            + b"\r\n\tOriginalContent: type=application/soap+xml;charset=UTF-8;Length="
            + str(len(data)).encode()
            + b"\r\n"
            + _BOUNDARY
            + b"\r\n\tContent-Type: application/octet-stream\r\n"
            + struct.pack("<i", len(result.header))
            + result.header
            + result.data
            + _BOUNDARY
            + b"--\r\n"
        )


def basic_ok(host: Host, authorization: str) -> bool:
    """True when a ``Basic`` Authorization header names the host's account and password.

    Accepted user forms: ``user``, ``.\\user``, ``COMPUTER\\user``, ``DOMAIN\\user``
    (case-insensitive, as Windows compares account names); the password must match exactly.
    """
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() != "basic":
        return False
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return False
    user, sep, password = decoded.partition(":")
    if not sep:
        return False
    authority, _, name = user.rpartition("\\")
    allowed = {"", ".", host.computer_name.lower()}
    if host.domain:
        allowed.add(host.domain.lower())
    return (
        name.lower() == host.username.lower()
        and authority.lower() in allowed
        and password == host.password
    )
