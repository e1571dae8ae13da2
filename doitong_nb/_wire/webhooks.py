"""Webhook signatures: the standalone check a receiver (ours or a user's web app) runs on a delivery's raw body."""

from __future__ import annotations

import base64
import hmac
import math
import time

from doitong_nb import _contract as contract
from doitong_nb._core.env import ENV_WEBHOOK_SECRET
from doitong_nb._core.errors import WebhookVerificationError
from doitong_nb._core.i18n import _


def verify_signature(
    body: bytes,
    signature: str | None,
    secret: str,
    *,
    timestamp: str | None = None,
    tolerance: float = contract.WEBHOOK_TOLERANCE_SECONDS,
    strict: bool = False,
    now: float | None = None,
) -> None:
    """Raise WebhookVerificationError unless `signature` is the account's signature of `body`.

    A timestamp more than `tolerance` seconds from now is refused (a replay); `strict` refuses a
    signature that carries no timestamp at all.
    """
    if not secret:
        raise WebhookVerificationError(
            _("no webhook secret to verify with: set {variable}").format(variable=ENV_WEBHOOK_SECRET)
        )
    if not signature:
        raise WebhookVerificationError(
            _("the call carries no {header} header").format(header=contract.HEADER_SIGNATURE)
        )
    if timestamp is None:
        if strict:
            raise WebhookVerificationError(
                _("strict mode: the call carries no {header} header").format(header=contract.HEADER_TIMESTAMP)
            )
    else:
        try:
            sent_at = float(timestamp)
            if not math.isfinite(sent_at):
                raise ValueError(timestamp)
        except ValueError:
            raise WebhookVerificationError(
                _("the timestamp {timestamp!r} is not Unix seconds").format(timestamp=timestamp[:40])
            ) from None
        age = (time.time() if now is None else now) - sent_at
        if abs(age) > tolerance:
            raise WebhookVerificationError(
                _("the call was signed {age:.0f} s from now, more than the {tolerance:g} s allowed (a replay?)").format(
                    age=age, tolerance=tolerance
                )
            )
    if not any(hmac.compare_digest(a, b) for a, b in _signature_pairs(secret, body, timestamp, signature)):
        raise WebhookVerificationError(
            _("the signature does not match the body: tampered, or signed with another secret")
        )


def _signature_pairs(secret: str, body: bytes, timestamp: str | None, signature: str) -> list[tuple[bytes, bytes]]:
    """(expected digest, given digest) for each scheme a service plausibly signs with [assumed]: `sha256=` or
    bare, hex or base64; over `timestamp.body` when a timestamp came, else over the raw body alone."""
    given = signature.strip()
    given = given[len("sha256=") :] if given.lower().startswith("sha256=") else given
    mac = bytes.fromhex(contract.webhook_signature(secret, body, timestamp)[len("sha256=") :])
    try:
        decoded = bytes.fromhex(given) if len(given) == 64 else base64.b64decode(given, validate=True)
    except ValueError:
        decoded = b""
    return [(mac, decoded)]


def signature_form(signature: str | None, timestamp: str | None) -> str:
    """How a (verified) call was signed, in words: over `timestamp.body` or the body alone, in hex or base64.
    The contract's own form is "timestamp.body, hex"; doctor reports any other one a receiver saw."""
    given = str(signature or "").strip()
    given = given[len("sha256=") :] if given.lower().startswith("sha256=") else given
    encoding = "hex" if len(given) == 64 and all(ch in "0123456789abcdefABCDEF" for ch in given) else "base64"
    return f"{'timestamp.body' if timestamp is not None else 'body'}, {encoding}"


CONTRACT_SIGNATURE_FORM = "timestamp.body, hex"
