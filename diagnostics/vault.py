"""Encryption at rest for credentials and fix secrets (Fernet, keys from FIELD_ENCRYPTION_KEY).

Several keys may be configured, newest first: values are written with the first and read with
any, so a key can be rotated without a flag day.
"""

from functools import cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings


class VaultError(Exception):
    """A stored secret cannot be decrypted with any configured key."""


@cache
def _fernet() -> MultiFernet:
    return MultiFernet([Fernet(k.encode()) for k in settings.FIELD_ENCRYPTION_KEYS])


def encrypt(plain: str) -> str:
    return _fernet().encrypt(plain.encode()).decode()


def decrypt(token: str) -> str:
    try:
        return _fernet().decrypt(token.encode()).decode()
    except InvalidToken as exc:
        # Never include the token or any part of the value in the message.
        raise VaultError("a stored secret cannot be decrypted with the configured keys") from exc
