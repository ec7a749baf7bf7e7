"""Credentials out of anything recorded: URIs with `user:pass@` or secret query values, API keys.

`redact_text` is the one redaction every error text goes through before it is written anywhere
(result.json, baseline.json, the journal, MLflow tags and artifacts, the dashboard): a provider
error message may echo the key it was sent. It removes URL credentials, `sk-...`-like tokens,
and the exact value of every key a configured model holds (`register_secret`, called when a
model is built with an `api_key`) or that the environment provides (`*_API_KEY`, `*_TOKEN`, ...).
"""

from __future__ import annotations

import os
import re
import threading
from urllib.parse import parse_qsl, urlencode, urlsplit

_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.\-]*://)[^/@\s]+@")
_SECRET_QUERY = re.compile(r"(?i)pass|token|secret|key|auth|sig")
# Key formats of common providers: OpenAI/Anthropic/DeepSeek `sk-...`, Groq `gsk_`, Google `AIza`,
# Hugging Face `hf_`, xAI `xai-`, and whatever follows "Bearer" in an echoed header.
_TOKEN_LIKE = re.compile(
    r"\b(?:(?:sk|rk|pk)-[A-Za-z0-9_\-]{6,}|gsk_[A-Za-z0-9]{10,}|AIza[0-9A-Za-z_\-]{20,}|hf_[A-Za-z0-9]{10,}"
    r"|xai-[A-Za-z0-9]{10,})|(?<=Bearer )[A-Za-z0-9._~+/\-]{8,}=*"
)
_SECRET_ENV = re.compile(r"(?i)(API_KEY|_TOKEN|_SECRET|_PASSWORD)$")
_MIN_SECRET = 6  # shorter values ("no-key", "x") would redact ordinary words
_secrets: set[str] = set()
_lock = threading.Lock()


def register_secret(value: str | None) -> None:
    """Remember a configured model's key so every later `redact_text` removes it wherever it appears."""
    if isinstance(value, str) and len(value.strip()) >= _MIN_SECRET:
        with _lock:
            _secrets.add(value.strip())


def _known_secrets() -> list[str]:
    env = {v for k, v in os.environ.items() if _SECRET_ENV.search(k) and len(v.strip()) >= _MIN_SECRET}
    with _lock:
        found = _secrets | {v.strip() for v in env}
    return sorted(found, key=len, reverse=True)  # longest first: a key that contains another


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
    """Free text (an error message) without credentials: URL userinfo, key-like tokens, known keys."""
    if not text:
        return text
    for secret in _known_secrets():
        text = text.replace(secret, "***")
    text = _TOKEN_LIKE.sub("***", text)
    return _USERINFO.sub(r"\1***@", text)


redact_error = redact_text  # the name callers recording an error use: the same one redaction
