"""Credentials out of anything recorded: URIs with `user:pass@` or secret query values."""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, urlencode, urlsplit

_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.\-]*://)[^/@\s]+@")
_SECRET_QUERY = re.compile(r"(?i)pass|token|secret|key|auth|sig")


def redact_uri(uri: str | None) -> str | None:
    """`https://user:pass@host/x?token=t` → `https://***@host/x?token=***`: safe to log or tag."""
    if not uri:
        return uri
    text = redact_text(uri)
    try:
        query = urlsplit(text).query
    except ValueError:
        return text
    pairs = parse_qsl(query, keep_blank_values=True) if query else []
    if any(_SECRET_QUERY.search(k) for k, _ in pairs):  # rebuild only the query: urlunsplit drops `////`
        hidden = urlencode([(k, "***" if _SECRET_QUERY.search(k) else v) for k, v in pairs], safe="*")
        text = text.replace(f"?{query}", f"?{hidden}", 1)
    return text


def redact_text(text: str) -> str:
    """Replace the credentials of every `scheme://user:pass@` URI inside free text (error messages)."""
    return _USERINFO.sub(r"\1***@", text)
