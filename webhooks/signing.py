"""Standard Webhooks 1.0 signatures: https://www.standardwebhooks.com/

The signed content is `{webhook-id}.{webhook-timestamp}.{body}`, the key the base64-decoded
secret after its `whsec_` prefix, and each signature `v1,<base64 HMAC-SHA256>`; several are
separated by spaces (after a rotation, one per secret).
"""

import base64
import hashlib
import hmac
import secrets

SECRET_PREFIX = "whsec_"  # noqa: S105 - a prefix, not a secret


def new_secret() -> str:
    """A fresh endpoint secret: 32 random bytes (the spec asks for 24 to 64)."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def new_webhook_id() -> str:
    """A delivery's id, the same on each of its attempts."""
    return "msg_" + secrets.token_urlsafe(18)


def sign(secret: str, *, webhook_id: str, timestamp: int, body: bytes) -> str:
    """The `v1,...` signature of a delivery's content with one secret."""
    key = base64.b64decode(secret.removeprefix(SECRET_PREFIX))
    content = f"{webhook_id}.{timestamp}.".encode() + body
    digest = hmac.new(key, content, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def signature_header(secrets_: list[str], *, webhook_id: str, timestamp: int, body: bytes) -> str:
    """The webhook-signature header: a signature per secret, separated by spaces."""
    return " ".join(
        sign(secret, webhook_id=webhook_id, timestamp=timestamp, body=body) for secret in secrets_
    )


def verify(secret: str, *, webhook_id: str, timestamp: int, body: bytes, header: str) -> bool:
    """Whether any signature in `header` is this secret's: what a receiver checks."""
    expected = sign(secret, webhook_id=webhook_id, timestamp=timestamp, body=body)
    return any(hmac.compare_digest(expected, given) for given in header.split(" "))
