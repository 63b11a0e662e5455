"""Masking secrets in what inflame prints or stores (dry-run output, the job ledger).

Three things are masked: values the caller knows are secret (the values of the spec's
`${env:…}` references), values under keys that name a secret (`api_key`, `password`,
`token`, …), and strings shaped like well-known credentials (AWS access key ids, private
key blocks, GitHub/Slack/OpenAI tokens, SAS signatures).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

MASK = "***"
SECRET_KEY = re.compile(
    r"(?i)(?:^|[_.-])(?:secret|token|password|passwd|pwd|api[_-]?key|access[_-]?key"
    r"|secret[_-]?key|private[_-]?key|credentials?|sas|signature"
    r"|conn(?:ection)?[_-]?str(?:ing)?)(?:$|[_.-])"
)
SECRET_VALUE = re.compile(
    r"(?:A(?:KIA|SIA)[0-9A-Z]{16}"
    r"|-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?(?:-----END [A-Z ]*PRIVATE KEY-----|$)"
    r"|gh[pousr]_[A-Za-z0-9]{30,}|xox[abposr]-[A-Za-z0-9-]{10,}|sk-[A-Za-z0-9_-]{20,}"
    r"|AIza[0-9A-Za-z_-]{35}|(?<=[?&]sig=)[A-Za-z0-9%/+=]+)"
)
_MIN_KNOWN = 4  # shorter known values are not masked inside other text (too many hits)


def looks_secret(key: str) -> bool:
    return bool(SECRET_KEY.search(key))


def redact(value: Any, known: Iterable[str] = (), key: str = "") -> Any:
    """A copy of `value` (dicts, lists, strings) with secrets replaced by `***`."""
    known = tuple(sorted({k for k in known if k}, key=len, reverse=True))
    return _redact(value, known, key)


def _redact(value: Any, known: tuple[str, ...], key: str) -> Any:
    if isinstance(value, dict):
        # {"name": "API_KEY", "value": "…"} (Vertex env entries) names its secret in "name"
        named = str(value.get("name", "")) if "value" in value else ""
        return {
            k: _redact(v, known, named if k == "value" and named else str(k))
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_redact(v, known, key) for v in value]
    if not isinstance(value, str):
        return value
    if value and (value in known or (key and looks_secret(key))):
        return MASK
    for secret in known:
        if len(secret) >= _MIN_KNOWN:
            value = value.replace(secret, MASK)
    return SECRET_VALUE.sub(MASK, value)


_URL_PASSWORD = re.compile(r"^([a-zA-Z][\w+.-]*://[^:/@]*):(.+)@([^@]*)$")  # up to the last @
_QUERY_SECRET = re.compile(r"(?i)([?&](?:password|passwd|pwd|token|secret)=)[^&]*")


def redact_url_password(url: str) -> str:
    """A database or server URL with its password masked (`postgresql://user:***@host/db`,
    a password holding `/` or `@` too, and `?password=…`)."""
    url = _URL_PASSWORD.sub(rf"\1:{MASK}@\3", url)
    return _QUERY_SECRET.sub(rf"\1{MASK}", url)
