from __future__ import annotations

import pytest

from airflow_desc.slurm.states import (
    ESCALATABLE_STATES,
    SHORT_CODES,
    STATE_CLASSES,
    TERMINAL_STATES,
    SlurmState,
    StateClass,
    parse_state,
)

P, R, OK, F, RT = (
    StateClass.PENDING,
    StateClass.RUNNING,
    StateClass.SUCCEEDED,
    StateClass.FAILED,
    StateClass.RETRYABLE,
)

# Written out from https://slurm.schedmd.com/squeue.html#SECTION_JOB-STATE-CODES (22.05 man page),
# independently of the module's own table: (short code, long name, expected class, terminal).
DOC_TABLE = [
    ("PD", "PENDING", P, False),
    ("CF", "CONFIGURING", P, False),
    ("R", "RUNNING", R, False),
    ("CG", "COMPLETING", R, False),
    ("S", "SUSPENDED", R, False),
    ("ST", "STOPPED", R, False),
    ("PR", "PREEMPTED", RT, True),
    ("RQ", "REQUEUED", P, False),
    ("RH", "REQUEUE_HOLD", P, False),
    ("RF", "REQUEUE_FED", P, False),
    ("RS", "RESIZING", R, False),
    ("SI", "SIGNALING", R, False),
    ("SO", "STAGE_OUT", R, False),
    ("SE", "SPECIAL_EXIT", P, False),
    ("RV", "REVOKED", F, True),
    ("RD", "RESV_DEL_HOLD", P, False),
    ("CD", "COMPLETED", OK, True),
    ("F", "FAILED", F, True),
    ("CA", "CANCELLED", F, True),
    ("TO", "TIMEOUT", F, True),
    ("OOM", "OUT_OF_MEMORY", F, True),
    ("NF", "NODE_FAIL", RT, True),
    ("BF", "BOOT_FAIL", RT, True),
    ("DL", "DEADLINE", F, True),
]


@pytest.mark.parametrize(("code", "name", "cls", "terminal"), DOC_TABLE)
def test_long_name(code: str, name: str, cls: StateClass, terminal: bool) -> None:
    parsed = parse_state(name)
    assert parsed.state.value == name
    assert parsed.state_class is cls
    assert parsed.is_terminal is terminal
    assert parsed.cancelled_by_uid is None
    assert parsed.raw == name


@pytest.mark.parametrize(("code", "name", "cls", "terminal"), DOC_TABLE)
def test_short_code(code: str, name: str, cls: StateClass, terminal: bool) -> None:
    parsed = parse_state(code)
    assert parsed.state.value == name
    assert parsed.state_class is cls
    assert SHORT_CODES[code].value == name


@pytest.mark.parametrize(("code", "name", "cls", "terminal"), DOC_TABLE)
def test_case_and_whitespace_and_plus(code: str, name: str, cls: StateClass, terminal: bool) -> None:
    assert parse_state(f"  {name.lower()}  ").state.value == name
    assert parse_state(f"{name}+").state.value == name
    assert parse_state(code.lower()).state.value == name


def test_the_doc_table_covers_every_state() -> None:
    assert {name for _, name, _, _ in DOC_TABLE} == {s.value for s in SlurmState} - {"UNKNOWN"}
    assert set(SHORT_CODES) == {code for code, _, _, _ in DOC_TABLE}
    assert set(STATE_CLASSES) == set(SlurmState)


def test_terminal_states_exactly() -> None:
    expected = {name for _, name, _, terminal in DOC_TABLE if terminal} | {"UNKNOWN"}
    assert {s.value for s in TERMINAL_STATES} == expected


def test_escalatable_states() -> None:
    assert ESCALATABLE_STATES == {SlurmState.TIMEOUT, SlurmState.OUT_OF_MEMORY}
    assert all(STATE_CLASSES[s] is StateClass.FAILED for s in ESCALATABLE_STATES)


def test_only_completed_succeeds() -> None:
    assert [s for s, c in STATE_CLASSES.items() if c is StateClass.SUCCEEDED] == [SlurmState.COMPLETED]


@pytest.mark.parametrize(
    ("text", "uid"),
    [("CANCELLED by 123", 123), ("CANCELLED by 0", 0), ("cancelled  by 4294967294", 4294967294)],
)
def test_cancelled_by(text: str, uid: int) -> None:
    parsed = parse_state(text)
    assert parsed.state is SlurmState.CANCELLED
    assert parsed.cancelled_by_uid == uid
    assert parsed.raw == text.strip()


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "BOGUS",
        "COMPLETED by 5",
        "COMPLETEDX",
        "CD CD",
        "by 5",
        "0",
        "RUNNING|x",
        "UNKNOWN",
        "COMPLETED?",
    ],
)
def test_unknown_is_never_success(text: str) -> None:
    parsed = parse_state(text)
    assert parsed.state is SlurmState.UNKNOWN
    assert parsed.state_class is StateClass.FAILED
    assert parsed.state_class is not StateClass.SUCCEEDED
    assert parsed.is_terminal
    assert parsed.raw == text.strip()


def test_state_enums_are_strings() -> None:
    assert SlurmState.OUT_OF_MEMORY == "OUT_OF_MEMORY"
    assert str(SlurmState.NODE_FAIL) == "NODE_FAIL"
    assert str(StateClass.RETRYABLE) == "retryable"
