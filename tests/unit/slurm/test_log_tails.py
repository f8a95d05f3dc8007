"""Log tails: redaction, bounds, and the one-call tail command run by a real shell on real files."""

from __future__ import annotations

import pathlib
import subprocess

import pytest

from airflow_desc.slurm.log_tails import (
    REDACTED,
    new_marker,
    parse_tails,
    redact_secrets,
    secret_sounding,
    tails_command,
)


@pytest.mark.parametrize(
    ("line", "secret"),
    [
        ("export DB_PASSWORD=hunter22", "hunter22"),
        ('{"token": "s3cr3t-tok", "n": 1}', "s3cr3t-tok"),
        ("client_secret: abcDEF123", "abcDEF123"),
        ("curl -H 'Authorization: Bearer eyAbCdEf0123456789'", "eyAbCdEf0123456789"),
        ("Authorization: Basic dXNlcjpwYXNz", "dXNlcjpwYXNz"),
        ("fetch https://alice:pa55w0rd@data.lsst.org/repo", "pa55w0rd"),
        ("butler --api-key=XYZ123456 ingest", "XYZ123456"),
        ("butler --password hunter22 ingest", "hunter22"),
        ("aws key AKIAABCDEFGHIJKLMNOP used", "AKIAABCDEFGHIJKLMNOP"),
        ("gh ghp_" + "a" * 36, "ghp_" + "a" * 36),
        ("slack xoxb-1234567890-abcdef", "xoxb-1234567890-abcdef"),
        ("jwt eyJhbGciOiJI.eyJzdWIiOiIx.c2lnbmF0dXJl", "eyJhbGciOiJI.eyJzdWIiOiIx.c2lnbmF0dXJl"),
    ],
)
def test_what_looks_like_a_secret_is_redacted(line: str, secret: str) -> None:
    out = redact_secrets(f"before\n{line}\nafter\n")
    assert secret not in out and REDACTED in out
    assert out.startswith("before\n") and out.endswith("after\n")


def test_a_private_key_is_redacted_whole_even_when_cut() -> None:
    key = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXk\nAAAA\n-----END OPENSSH PRIVATE KEY-----"
    assert redact_secrets(f"a\n{key}\nb") == f"a\n{REDACTED}\nb"
    assert redact_secrets("a\n-----BEGIN RSA PRIVATE KEY-----\nMIIE") == f"a\n{REDACTED}"


def test_ordinary_output_and_known_secret_values() -> None:
    text = "author=Alice visit=2201 PSF determination failed: too few stars (12 < 20)\n"
    assert redact_secrets(text) == text
    assert (
        redact_secrets("connecting with xyzzy-42 now", ["xyzzy-42", "ab"])
        == f"connecting with {REDACTED} now"
    )
    assert secret_sounding("DB_PASSWORD") and secret_sounding("X_AUTH_TOKEN") and secret_sounding("api-key")
    assert not secret_sounding("VISIT") and not secret_sounding("AUTHOR")


def test_the_tail_command_reads_many_logs_in_one_shell_bounded(tmp_path: pathlib.Path) -> None:
    marker = new_marker()
    (tmp_path / "a log.out").write_text("".join(f"a{i}\n" for i in range(500)))
    (tmp_path / "b.log").write_text("no newline at the end")
    # A log that prints a header line of its own cannot split the answer: the marker is random.
    (tmp_path / "c.log").write_text(f"@@desc-log-{'0' * 32} 0\nc\n")
    (tmp_path / "huge.log").write_text("h" * 100_000 + "\nlast\n")
    (tmp_path / "one.log").write_text("y" * 5000)
    names = ("a log.out", "b.log", "missing.log", "c.log", "huge.log", "one.log")
    paths = [str(tmp_path / n) for n in names]
    command = tails_command(paths, marker=marker, lines=200, max_bytes=1000)
    out = subprocess.run(["sh", "-c", command], capture_output=True, text=True, check=True).stdout
    a, b, missing, c, huge, one = parse_tails(out, marker, len(paths), max_bytes=1000)
    assert a == "".join(f"a{i}\n" for i in range(300, 500))
    assert b == "no newline at the end"
    assert missing == ""
    assert c == f"@@desc-log-{'0' * 32} 0\nc\n"
    assert huge == "last\n"  # the cut line dropped
    assert one == "y" * 1000  # one line longer than the bound: its end
    assert tails_command([], marker=marker) == "true"


def test_a_path_that_no_shell_word_can_carry_is_refused() -> None:
    with pytest.raises(ValueError, match="line break"):
        tails_command(["a\nrm -rf ~"], marker=new_marker())
