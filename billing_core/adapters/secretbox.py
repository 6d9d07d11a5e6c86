"""Account secrets at rest: AES-256-GCM under the server key (README: Credentials).

A stored secret is ``v1$<nonce hex>$<ciphertext+tag hex>``: a random 96-bit nonce per
secret, the 16-byte tag appended by GCM, and a fixed associated-data label so that a token
made for something else never decrypts as an account secret.

The key is 32 bytes written as 64 hex digits, surrounding whitespace ignored, read from a
file of mode 0600 (``[security] secrets_key_file``) or an environment variable
(``secrets_key_env``); anything else is refused with one line naming the setting.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from billing_core.ports import SecretUnavailable

_VERSION = "v1"
_AAD = b"voip-radiusd account secret v1"
_NONCE_BYTES = 12


class KeySettingError(ValueError):
    """An unusable key setting; ``str(e)`` is one line naming the setting."""


def parse_key(text: str, where: str) -> bytes:
    """32 bytes from 64 hex digits (surrounding whitespace ignored)."""
    body = text.strip()
    if len(body) != 64 or not all(ch in "0123456789abcdefABCDEF" for ch in body):
        raise KeySettingError(
            f"{where}: the key must be 64 hex digits (32 bytes, `openssl rand -hex 32`)"
        )
    return bytes.fromhex(body)


def read_key_file(path_text: str, where: str) -> bytes:
    """The key from a file that only its owner may read or write (mode 0600 or 0400)."""
    path = Path(path_text)
    try:
        info = path.stat()
    except OSError as exc:
        raise KeySettingError(
            f"{where}: cannot read {path_text!r}: {exc.strerror or exc}"
        ) from None
    if not stat.S_ISREG(info.st_mode):
        raise KeySettingError(f"{where}: {path_text!r} is not a file")
    if info.st_mode & 0o077:
        raise KeySettingError(
            f"{where}: {path_text!r} must have mode 0600 (not readable by group or others),"
            f" has {stat.S_IMODE(info.st_mode):04o}"
        )
    try:
        text = path.read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not hex text"
        raise KeySettingError(f"{where}: cannot read {path_text!r}: {reason or exc}") from None
    return parse_key(text, where)


def load_key(key_file: str, key_env: str, environ: Mapping[str, str] | None = None) -> bytes | None:
    """The server key from ``[security] secrets_key_file`` or ``secrets_key_env``; None when
    neither is set."""
    env = os.environ if environ is None else environ
    if key_file and key_env:
        raise KeySettingError(
            "security.secrets_key_env: give only one of secrets_key_file, secrets_key_env"
        )
    if key_file:
        return read_key_file(key_file, "security.secrets_key_file")
    if key_env:
        where = "security.secrets_key_env"
        if key_env not in env:
            raise KeySettingError(f"{where}: environment variable {key_env!r} is not set")
        return parse_key(env[key_env], f"{where} ({key_env})")
    return None


class AesGcmCipher:
    """``SecretCipher`` with AES-256-GCM."""

    __slots__ = ("_aead",)

    def __init__(self, key: bytes) -> None:
        if len(key) != 32:
            raise ValueError("AES-256 needs a 32-byte key")
        self._aead = AESGCM(key)

    def encrypt(self, secret: bytes) -> str:
        nonce = os.urandom(_NONCE_BYTES)
        sealed = self._aead.encrypt(nonce, secret, _AAD)
        return f"{_VERSION}${nonce.hex()}${sealed.hex()}"

    def decrypt(self, token: str) -> bytes:
        try:
            version, nonce_hex, sealed_hex = token.split("$")
            if version != _VERSION:
                raise ValueError(version)
            nonce, sealed = bytes.fromhex(nonce_hex), bytes.fromhex(sealed_hex)
            if len(nonce) != _NONCE_BYTES:
                raise ValueError("nonce")
            return self._aead.decrypt(nonce, sealed, _AAD)
        except (ValueError, InvalidTag):
            raise SecretUnavailable("the secret cannot be decrypted with the server key") from None


class NoKeyCipher:
    """No server key configured: nothing can be encrypted or decrypted."""

    __slots__ = ()

    def encrypt(self, secret: bytes) -> str:
        raise SecretUnavailable("no server key (security.secrets_key_file or secrets_key_env)")

    def decrypt(self, token: str) -> bytes:
        raise SecretUnavailable("no server key (security.secrets_key_file or secrets_key_env)")


def cipher_for(key: bytes | None) -> AesGcmCipher | NoKeyCipher:
    return AesGcmCipher(key) if key is not None else NoKeyCipher()
