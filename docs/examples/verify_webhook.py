"""Verify a recur webhook (Standard Webhooks 1.0) with the Python standard library.

Usage as a check: python3 verify_webhook.py SECRET < message.json, with the three
headers in WEBHOOK_ID, WEBHOOK_TIMESTAMP and WEBHOOK_SIGNATURE; exits 0 when valid.
"""
import base64
import hashlib
import hmac
import os
import sys
import time

TOLERANCE_SECONDS = 5 * 60


def verify(secret: str, msg_id: str, timestamp: str, signature_header: str, body: bytes) -> bool:
    """True when one of the header's signatures is ours and the timestamp is fresh."""
    try:
        ts = int(timestamp)
    except ValueError:
        return False
    if abs(time.time() - ts) > TOLERANCE_SECONDS:
        return False  # too old (a replay) or too far in the future
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = msg_id.encode() + b"." + timestamp.encode() + b"." + body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    # During a secret rotation the header holds one `v1,<sig>` per secret.
    for part in signature_header.split(" "):
        version, _, sig = part.partition(",")
        if version == "v1" and hmac.compare_digest(sig, expected):
            return True
    return False


if __name__ == "__main__":
    ok = verify(
        sys.argv[1],
        os.environ["WEBHOOK_ID"],
        os.environ["WEBHOOK_TIMESTAMP"],
        os.environ["WEBHOOK_SIGNATURE"],
        sys.stdin.buffer.read(),
    )
    print("valid" if ok else "invalid")
    sys.exit(0 if ok else 1)
