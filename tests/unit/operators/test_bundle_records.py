"""A bundle's records: reasons sharpened from an instance's log tail."""

from __future__ import annotations

from airflow_desc.operators.bundle_records import refine_reason


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
