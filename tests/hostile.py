"""Hostile values: text that would become shell code, options or other paths if it were not data.

Each test that puts values where a shell or a path may see them runs this corpus (issue 11, "Values
are data"): the canary file must never appear, and the job must see the value to the letter (or
the value is refused with a message naming it, for what no shell can carry: a NUL byte).
"""

from __future__ import annotations


def hostile_values(canary: str) -> list[str]:
    """Return the corpus, each value aimed at creating ``canary`` (a path) or at escaping its place."""
    touch = f"touch {canary}"
    return [
        f"x; {touch}",
        f"$({touch})",
        f"`{touch}`",
        f"a\n{touch}",
        f"a\r{touch}",
        f"a\r\n{touch}",
        f"a && {touch}",
        f"a || {touch}",
        f"a | {touch}",
        f"a & {touch} &",
        f"'; {touch}; '",
        f'"; {touch}; "',
        f"\\'; {touch}; \\'",
        f"$(echo x){touch}",
        f"${{IFS}}{touch.replace(' ', '${IFS}')}",
        f"a > {canary}",
        f">{canary}",
        f">> {canary}",
        "< /etc/passwd",
        f"$(printf x > {canary})",
        f"<(touch {canary})",
        "-rf",
        "--help",
        "-",
        "--",
        "-n",
        "~",
        "~root",
        "~/x",
        "../../../etc/passwd",
        "../",
        "*",
        "?",
        "[a-z]*",
        "{a,b}",
        "$HOME",
        "${HOME}",
        "$0",
        "!!",
        "#not a comment",
        " leading and trailing ",
        "tab\there",
        "x" * 8192,
        "ẋ é ü 日本",
        "ｔｏｕｃｈ　ｃａｎａｒｙ",  # full-width homoglyphs of "touch canary"
        "x；touch",  # a full-width semicolon
        "\u202etxt.exe",  # right-to-left override
        "a\u00a0b",  # no-break space
        "quote'single",
        'quote"double',
        "back\\slash",
        "%s%n%x",
        "a\0b",  # NUL: no shell can pass it; refused
    ]
