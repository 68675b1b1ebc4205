"""API-key checks for the inference server, kept apart from the routes so they can be tested directly.

The key is compared in constant time (`hmac.compare_digest` on bytes), so response timing reveals
nothing about how much of a guess was right; it is never logged or echoed in an error.
"""

from __future__ import annotations

import hmac


def bearer_matches(authorization: str | None, key: str) -> bool:
    """Whether an `Authorization` header carries `Bearer <key>` (scheme case-insensitive, RFC 6750)."""
    scheme, _, token = (authorization or "").strip().partition(" ")
    # compare_digest on str refuses non-ASCII; on bytes it takes anything and stays constant-time.
    return scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), key.encode())


def is_json(content_type: str | None) -> bool:
    """`application/json`, parameters (charset) allowed: what every SDK sends.

    Requiring it keeps browsers from posting cross-origin without a CORS preflight (a `text/plain`
    form or fetch is a "simple request" that a preflight would never see).
    """
    media_type = (content_type or "").split(";", 1)[0].strip().lower()
    return media_type == "application/json"
