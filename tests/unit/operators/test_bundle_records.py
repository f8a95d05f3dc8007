"""A bundle's records: reasons sharpened from an instance's log tail."""

from __future__ import annotations

from airflow_desc.operators.bundle_records import _max_rss, refine_reason
from airflow_desc.slurm import group_accounting, parse_sacct


def test_a_failed_instances_reason_comes_from_its_log_tail() -> None:
    record = {
        "id": "visit=1:eimage",
        "reason": "non-zero-exit",
        "exit_code": 1,
        "log_tail": "airflow-desc-pilot: visit=1:eimage starting\nTraceback (most recent call last):\n"
        '  File "x.py", line 1\nRuntimeError: PSF determination failed: too few stars\n'
        "airflow-desc-pilot: visit=1:eimage failed",
    }
    reason, message = refine_reason(record, "77")
    assert reason == "python-exception"
    assert message is not None and message.startswith(
        "visit=1:eimage raised RuntimeError: PSF determination failed"
    )
    segv = {"id": "i", "reason": "non-zero-exit", "exit_code": None, "signal": 11, "log_tail": ""}
    assert refine_reason(segv, "77")[0] == "segfault"
    assert refine_reason({"reason": "time-limit", "message": "m"}, "77") == ("time-limit", "m")


def test_an_instance_whose_image_is_missing_is_a_container_error_naming_the_image() -> None:
    # shifter names no image in this error: the pilot's line before the payload does.
    record = {
        "id": "visit=1:eimage",
        "reason": "non-zero-exit",
        "exit_code": 1,
        "log_tail": "airflow-desc-pilot: visit=1:eimage starting\n"
        "airflow-desc-pilot: visit=1:eimage runs in container image docker:lsstdesc/x:1\n"
        "Image request failed\nairflow-desc-pilot: visit=1:eimage failed",
    }
    reason, message = refine_reason(record, "77")
    assert reason == "container-error"
    assert message is not None and message.startswith(
        "visit=1:eimage could not start its container: image docker:lsstdesc/x:1 is not on this cluster"
    )


def test_a_containers_peak_adds_to_what_slurm_saw_of_its_step() -> None:
    text = "123|COMPLETED|0:0|\n123.0|COMPLETED|0:0|17000K"
    step = group_accounting(parse_sacct(text, ("JobID", "State", "ExitCode", "MaxRSS")))["123"].steps[0]
    plain = {"max_rss_bytes": 9_000_000, "container_usage": None}
    assert _max_rss(plain, step) == 17_408_000  # SLURM's, as for any step
    assert _max_rss(plain, None) == 9_000_000  # the direct launcher: the pilot's
    boxed = {
        "max_rss_bytes": 9_000_000 + 157_286_400,
        "container_usage": {"cpu_s": 3.1, "max_rss_bytes": 157_286_400},
    }
    assert _max_rss(boxed, step) == 17_408_000 + 157_286_400  # the step's client, plus the container
    assert _max_rss(boxed, None) == 9_000_000 + 157_286_400  # the pilot's sum
    unmeasured = {"max_rss_bytes": 9_000_000, "container_usage": {"cpu_s": 3.1, "max_rss_bytes": None}}
    assert _max_rss(unmeasured, step) == 17_408_000
