"""Log tails as the history keeps them: bounded, read in one SSH call, secrets redacted (pure).

When a job (or a bundled instance) ends, the worker reads the end of its log and the history keeps
it, so that the status page and ``airflow-desc logs`` show it without reaching the cluster.

* Bounded: at most :data:`LOG_TAIL_LINES` lines and :data:`LOG_TAIL_BYTES` bytes of each log
  (``tail -c`` then ``tail -n`` on the cluster, so a log of one huge line costs no more);
  :func:`tails_command` reads many logs at once, each behind a header line carrying a random
  marker that no log can forge, and :func:`parse_tails` splits the answer again.
* Redacted: :func:`redact_secrets` replaces what looks like a password, token or key (``name=value``
  with a secret-sounding name, ``Authorization:`` headers, bearer tokens, credentials in URLs, PEM
  private keys, AWS / GitHub / Slack / JWT tokens, and any value the caller knows is secret) by
  :data:`REDACTED` before a tail is logged or stored.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Collection, Sequence

from airflow_desc.slurm.quoting import check_text, quote_path

__all__ = [
    "LOG_TAIL_BYTES",
    "LOG_TAIL_LINES",
    "REDACTED",
    "new_marker",
    "parse_tails",
    "redact_secrets",
    "secret_sounding",
    "tails_command",
]

#: The most lines of a log kept (and shown in the Airflow task log).
LOG_TAIL_LINES = 200
#: The most bytes of a log kept.
LOG_TAIL_BYTES = 64 * 1024
#: What a secret becomes.
REDACTED = "[REDACTED]"

# A name that says its value is secret: DB_PASSWORD, api-key, X_AUTH_TOKEN ... ("author" is not).
# Bounded on both sides: a long word must not be scanned back and forth from each of its positions.
_SECRET_NAME = (
    r"[\w.-]{0,40}(?:passw(?:or)?d|passphrase|secret|token|api[_-]?key|access[_-]?key|private[_-]?key"
    r"|credentials?|auth(?!or))[\w.-]{0,40}"
)
# A PEM private key, to its END line (or to the end of the tail when it was cut).
_PRIVATE_KEY = re.compile(
    r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----.*?(?:-----END [A-Z0-9 ]*PRIVATE KEY-----|\Z)", re.S
)
# Token shapes that are secret wherever they appear: AWS key ids, GitHub and Slack tokens, JWTs.
_TOKEN = re.compile(
    r"\b(?:(?:AKIA|ASIA)[0-9A-Z]{16}\b|gh[pousr]_[A-Za-z0-9]{30,}\b|xox[abprs]-[A-Za-z0-9-]{10,}"
    r"|eyJ[\w-]{5,}\.eyJ[\w-]{5,}\.[\w-]+)"
)
# What a line must hold (lower-cased) for the patterns below to find anything in it: they scan
# words back and forth, so only such lines (a few, in a log) are scanned; a substring test is cheap.
_HINTS = (
    *("passw", "passphrase", "secret", "token", "apikey", "api_key", "api-key", "accesskey"),
    *("access_key", "access-key", "private", "credential", "auth", "bearer", "://"),
)
_TOKEN_HINTS = ("AKIA", "ASIA", "ghp_", "gho_", "ghu_", "ghs_", "ghr_", "xox", "eyJ")
_BY_NAME: tuple[tuple[re.Pattern[str], str], ...] = (
    # Authorization: Bearer xyz / Basic xyz / xyz
    (
        re.compile(r"""(?i)(\bauthorization\s*[:=]\s*)(?:(?:bearer|basic|token|digest)\s+)?[^\s"']+"""),
        rf"\1{REDACTED}",
    ),
    (re.compile(r"(?i)(\bbearer\s+)[\w.~+/=-]{8,}"), rf"\1{REDACTED}"),
    # scheme://user:password@host
    (re.compile(r"(\b[a-zA-Z][\w+.-]{0,20}://[^/\s:@]{0,100}:)[^@\s/]+(@)"), rf"\1{REDACTED}\2"),
    # --password xyz, --api-key=xyz
    (re.compile(rf"(?i)(\s--?{_SECRET_NAME}(?:\s+|=))(?!-)(\S+)"), rf"\1{REDACTED}"),
    # password=xyz, "token": "xyz", SECRET_KEY: xyz
    (
        re.compile(rf"""(?i)((?<![\w.-]){_SECRET_NAME}["']?\s*[:=]\s*)(["']?)[^\s"',;}}]+"""),
        rf"\1\2{REDACTED}",
    ),
)


def redact_secrets(text: str, known: Collection[str] = ()) -> str:
    """Return ``text`` with what looks like a secret replaced by :data:`REDACTED`.

    :param text: a log tail.
    :param known: values known to be secret (e.g. those of the job's environment variables whose
        names sound secret); values shorter than 4 characters are left alone (too common to hide).
    """
    for value in sorted((v for v in known if len(v) >= 4), key=len, reverse=True):
        text = text.replace(value, REDACTED)
    if "PRIVATE KEY-----" in text:
        text = _PRIVATE_KEY.sub(REDACTED, text)
    if any(hint in text for hint in _TOKEN_HINTS):
        text = _TOKEN.sub(REDACTED, text)
    lower = text.lower()
    if not any(hint in lower for hint in _HINTS):
        return text
    lines = text.split("\n")
    for number, line in enumerate(lines):
        low = line.lower()
        if any(hint in low for hint in _HINTS):
            for pattern, replacement in _BY_NAME:
                line = pattern.sub(replacement, line)
            lines[number] = line
    return "\n".join(lines)


def secret_sounding(name: str) -> bool:
    """Return whether an environment variable's name says its value is a secret (``DB_PASSWORD``)."""
    return re.fullmatch(_SECRET_NAME, name, re.I) is not None


def new_marker() -> str:
    """Return a fresh header marker for :func:`tails_command`: random, so no log can forge one."""
    return f"@@desc-log-{secrets.token_hex(16)}"


def tails_command(
    paths: Sequence[str], *, marker: str, lines: int = LOG_TAIL_LINES, max_bytes: int = LOG_TAIL_BYTES
) -> str:
    """Return one shell command printing the bounded tail of each log, each after a header line.

    The header is ``<marker> <index>``; a log that does not exist prints its header and nothing.

    :param paths: the logs (absolute, relative to the login's home, or ``~/...``), already trusted.
    :param marker: from :func:`new_marker`.
    :param lines: the most lines of each.
    :param max_bytes: the most bytes of each.
    """
    parts = []
    for index, path in enumerate(paths):
        check_text("log path", path)
        parts.append(
            f"printf '%s %d\\n' {marker} {index}; "
            # One byte more than kept: then a tail longer than max_bytes was cut (parse_tails).
            f"tail -c {int(max_bytes) + 1} -- {quote_path(path)} 2>/dev/null | tail -n {int(lines)}; echo"
        )
    return "; ".join(parts) if parts else "true"


def parse_tails(text: str, marker: str, count: int, *, max_bytes: int = LOG_TAIL_BYTES) -> list[str]:
    """Split what :func:`tails_command` printed into ``count`` tails (``""`` for a missing log).

    A tail longer than ``max_bytes`` was cut by the byte bound: its first (partial) line is dropped,
    or, for one line longer than the bound, its start.
    """
    out = [""] * count
    pieces = re.split(rf"^{re.escape(marker)} (\d+)\n", text, flags=re.M)
    for number, body in zip(pieces[1::2], pieces[2::2], strict=True):
        index = int(number)
        if not 0 <= index < count:
            continue
        tail = body[:-1] if body.endswith("\n") else body  # the echo after each tail
        if len(tail.encode()) > max_bytes:
            cut = tail.split("\n", 1)[1] if "\n" in tail[:-1] else ""
            tail = cut or tail.encode()[-max_bytes:].decode(errors="ignore")
        out[index] = tail
    return out
