"""Secrets: key derivation, password hashing, API key hashing and encryption at rest."""
from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from pathlib import Path
from typing import Callable

from cryptography.fernet import Fernet, InvalidToken

# scrypt cost: ~50 ms and 16 MiB per hash on this machine kind, too slow to brute-force.
_SCRYPT_N, _SCRYPT_R, _SCRYPT_P = 2**14, 8, 1


def derive_key(secret_key: str, purpose: str) -> bytes:
    """A 32-byte key for one purpose, so cookies and stored secrets never share a key."""
    return hmac.new(secret_key.encode(), purpose.encode(), hashlib.sha256).digest()


def new_token(nbytes: int = 32) -> str:
    """An unguessable URL-safe token."""
    return secrets.token_urlsafe(nbytes)


def hash_api_key(key: str) -> str:
    """The stored form of an API key (keys are random, so a fast hash is enough)."""
    return hashlib.sha256(key.encode()).hexdigest()


def hash_password(password: str) -> str:
    """Hash a password with scrypt (blocking: call it off the event loop)."""
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=_SCRYPT_N, r=_SCRYPT_R, p=_SCRYPT_P, dklen=32)
    return "scrypt${}${}${}${}${}".format(
        _SCRYPT_N, _SCRYPT_R, _SCRYPT_P, base64.b64encode(salt).decode(), base64.b64encode(digest).decode()
    )


def verify_password(password: str, stored: str) -> bool:
    """Check a password against hash_password's output (blocking)."""
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.b64decode(digest)
        actual = hashlib.scrypt(
            password.encode(), salt=base64.b64decode(salt), n=int(n), r=int(r), p=int(p), dklen=len(expected)
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(actual, expected)


class SecretBox:
    """Encrypts short secrets (such as the Koala password) for storage."""

    def __init__(self, secret_key: str):
        self._fernet = Fernet(base64.urlsafe_b64encode(derive_key(secret_key, "settings-encryption")))

    def encrypt(self, plaintext: str) -> str:
        """Encrypt and authenticate `plaintext`."""
        return self._fernet.encrypt(plaintext.encode()).decode()

    def decrypt(self, token: str) -> str:
        """Decrypt; raise ValueError when the token was not made with this SECRET_KEY."""
        try:
            return self._fernet.decrypt(token.encode()).decode()
        except InvalidToken as exc:
            raise ValueError("stored secret cannot be decrypted with this SECRET_KEY") from exc


def read_or_create_secret(path: Path, make: Callable[[], str]) -> str:
    """The secret stored in `path` (mode 0600), written with `make()` the first time ("" when the
    file is empty). O_EXCL: two processes starting at once never write two different secrets."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    else:
        with os.fdopen(fd, "w") as handle:
            handle.write(make())
    return path.read_text().strip()
