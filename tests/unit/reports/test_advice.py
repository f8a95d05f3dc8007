"""Resource advice on frames whose quantiles are known by construction."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from airflow_desc.reports.advice import ADVICE_COLUMNS, resource_advice
from airflow_desc.reports.status import format_text

MIB = 1024 * 1024


def instances(process: str, n: int, **columns: object) -> pd.DataFrame:
    base: dict[str, object] = {
        "task": "level2ProcessFilter",
        "process": process,
        "state": "success",
        "reason": None,
        "elapsed_s": 600.0,
        "total_cpu_s": 540.0,
        "max_rss_bytes": 100 * MIB,
        "req_cpus": 1,
        "req_mem_bytes": 200 * MIB,
        "req_walltime_s": 3600.0,
    }
    base.update(columns)
    return pd.DataFrame({k: (v if isinstance(v, list | np.ndarray) else [v] * n) for k, v in base.items()})


def steady() -> pd.DataFrame:
    """101 successes using i x 10 MB and i minutes, i = 0..100, one core busy out of 4."""
    i = np.arange(101)
    return instances(
        "level2MakeTempCoaddExp",
        101,
        max_rss_bytes=list(i * 10 * MIB),
        elapsed_s=list(i * 60.0),
        total_cpu_s=list(i * 60.0),
        req_cpus=4,
        req_mem_bytes=2000 * MIB,
        req_walltime_s=3600.0,
    )


def oom_majority() -> pd.DataFrame:
    """10 successes at 500 MB, 90 killed for memory at their 1000 MB request."""
    return pd.concat(
        [
            instances("level2AssembleCoadd", 10, max_rss_bytes=500 * MIB, req_mem_bytes=1000 * MIB),
            instances(
                "level2AssembleCoadd",
                90,
                state="terminated",
                reason="out-of-memory",
                max_rss_bytes=990 * MIB,
                req_mem_bytes=1000 * MIB,
            ),
        ],
        ignore_index=True,
    )


def few_timeouts() -> pd.DataFrame:
    """98 successes of 10 minutes and 2 TIMEOUTs (as SLURM said, no reason recorded) at a 30 minute limit."""
    return pd.concat(
        [
            instances("mergeDetections", 98, req_walltime_s=1800.0),
            instances(
                "mergeDetections",
                2,
                state="terminated",
                slurm_state="TIMEOUT",
                elapsed_s=1800.0,
                req_walltime_s=1800.0,
            ),
        ],
        ignore_index=True,
    )


def row(table: pd.DataFrame, process: str) -> pd.Series:
    [index] = table.index[table["Process"] == process]
    return table.loc[index]


def test_quantiles_and_suggestions_of_a_known_distribution() -> None:
    table = resource_advice(steady(), quantile=0.95, headroom=1.2)
    assert tuple(table.columns) == ADVICE_COLUMNS
    r = row(table, "level2MakeTempCoaddExp")
    assert (r["Instances"], r["Succeeded"], r["Out of memory"], r["Timed out"]) == (101, 101, 0, 0)
    assert r["Mem used MB"] == 950 and r["Mem suggested MB"] == 1200  # 950 x 1.2 = 1140, up to 100 MB
    assert r["Walltime used min"] == 95 and r["Walltime suggested min"] == 114
    assert (r["Mem requested MB"], r["Walltime requested min"], r["CPUs requested"], r["CPUs used"]) == (
        2000,
        60,
        4,
        1.0,
    )
    assert not r["Mem is lower bound"] and not r["Walltime is lower bound"]
    assert r["Advice"] == (
        "raise walltime to 0-01:54:00 (now 0-01:00:00): 95% take up to 0-01:35:00; "
        "uses about 1.0 of 4 CPUs: request 1"
    )


def test_quantile_and_headroom_are_parameters() -> None:
    r = row(resource_advice(steady(), quantile=0.5, headroom=1.0), "level2MakeTempCoaddExp")
    assert (r["Mem used MB"], r["Mem suggested MB"], r["Walltime suggested min"]) == (500, 500, 50)
    r = row(resource_advice(steady(), quantile=0.95, headroom=1.5), "level2MakeTempCoaddExp")
    assert r["Mem suggested MB"] == 1500  # 950 x 1.5 = 1425


def test_out_of_memory_majority_gives_a_lower_bound() -> None:
    r = row(resource_advice(oom_majority()), "level2AssembleCoadd")
    assert (r["Succeeded"], r["Out of memory"], r["Other failures"]) == (10, 90, 0)
    assert r["Mem is lower bound"]
    assert r["Mem suggested MB"] == 1200  # more than the 1000 MB they were killed at, x 1.2
    assert r["Advice"].startswith(
        "90 of 100 ran out of memory: raise memory to at least 1200 MB (now 1000 MB)"
    )


def test_a_few_out_of_memory_kills_raise_the_estimate_without_making_it_a_bound() -> None:
    frame = pd.concat(
        [
            instances("p", 97, max_rss_bytes=list(np.linspace(100, 900, 97) * MIB), req_mem_bytes=1000 * MIB),
            instances(
                "p",
                3,
                state="terminated",
                reason="out-of-memory",
                max_rss_bytes=1000 * MIB,
                req_mem_bytes=1000 * MIB,
            ),
        ],
        ignore_index=True,
    )
    r = row(resource_advice(frame), "p")
    # The kills sort above every success: the 95th percentile lies among the top successes.
    assert not r["Mem is lower bound"]
    used = np.linspace(100, 900, 97)
    expected = used[94] + 0.05 * (used[95] - used[94])  # position 0.95 x 99 = 94.05 of 100 sorted values
    assert r["Mem used MB"] == round(expected) == 884
    assert r["Mem suggested MB"] == 1100  # 883.75 x 1.2 = 1060.5
    assert "raise memory to 1100 MB (now 1000 MB): 3 ran out of memory" in r["Advice"]


def test_a_few_timeouts_do_not_hide_a_fitting_request() -> None:
    r = row(resource_advice(few_timeouts()), "mergeDetections")
    assert (r["Timed out"], r["Walltime is lower bound"], r["Walltime suggested min"]) == (2, False, 12)
    assert r["Other failures"] == 0
    # A 30 minute limit for 10 minute jobs would be "lower it", but not while some time out.
    assert r["Advice"] == "requests fit: no change"


def test_timeouts_majority_asks_for_more_walltime_or_checkpointing() -> None:
    frame = instances(
        "p", 4, state="terminated", reason="time-limit", elapsed_s=1800.0, req_walltime_s=1800.0
    )
    r = row(resource_advice(frame), "p")
    assert r["Walltime is lower bound"] and r["Walltime suggested min"] == 36
    assert (
        "4 of 4 hit the time limit: raise walltime to at least 0-00:36:00 (now 0-00:30:00), or checkpoint"
        in (r["Advice"])
    )


def test_oversized_requests_are_flagged() -> None:
    frame = instances(
        "p", 20, max_rss_bytes=100 * MIB, req_mem_bytes=4000 * MIB, elapsed_s=300.0, req_walltime_s=4 * 3600.0
    )
    advice = row(resource_advice(frame), "p")["Advice"]
    assert "lower memory to 200 MB (now 4000 MB)" in advice
    assert "lower walltime to 0-00:06:00 (now 0-04:00:00)" in advice


def test_cluster_limits_are_checked_when_given() -> None:
    advice = row(
        resource_advice(steady(), mem_per_core_mb=250, max_walltime_s=3600), "level2MakeTempCoaddExp"
    )["Advice"]
    assert (
        "needs the memory of 5 cores at 250 MB/core: request --cpus-per-task=5 or a high-memory partition"
        in (advice)
    )
    assert "needs more than the queue limit 0-01:00:00: checkpoint or split it" in advice
    assert (
        "needs the memory"
        not in row(resource_advice(steady(), mem_per_core_mb=2000), "level2MakeTempCoaddExp")["Advice"]
    )


def test_payload_failures_are_not_a_resource_problem() -> None:
    frame = pd.concat(
        [
            instances("p", 8, req_walltime_s=900.0),
            instances("p", 2, state="failed", reason="python-exception", req_walltime_s=900.0),
        ],
        ignore_index=True,
    )
    r = row(resource_advice(frame), "p")
    assert r["Other failures"] == 2
    assert r["Advice"] == "2 of 10 failed for other reasons: more resources will not fix those"


def test_nothing_to_learn_from_failures_only() -> None:
    r = row(resource_advice(instances("p", 3, state="failed", reason="segfault")), "p")
    assert pd.isna(r["Mem suggested MB"]) and pd.isna(r["Walltime suggested min"])
    assert r["Advice"].startswith("nothing to learn from yet")


def test_processes_are_kept_apart_in_first_seen_order() -> None:
    table = resource_advice(pd.concat([few_timeouts(), steady(), oom_majority()], ignore_index=True))
    assert list(table["Process"]) == ["mergeDetections", "level2MakeTempCoaddExp", "level2AssembleCoadd"]
    assert table.attrs == {"quantile": 0.95, "headroom": 1.2}
    text = format_text(table)
    assert text.splitlines()[0].startswith("Task") and "yes" in text


def test_empty_frame_gives_an_empty_table() -> None:
    table = resource_advice(pd.DataFrame())
    assert tuple(table.columns) == ADVICE_COLUMNS and table.empty


@pytest.mark.parametrize(("quantile", "headroom"), [(1.5, 1.2), (-0.1, 1.2), (0.95, 0.9)])
def test_bad_parameters_are_refused(quantile: float, headroom: float) -> None:
    with pytest.raises(ValueError, match="quantile|headroom"):
        resource_advice(steady(), quantile=quantile, headroom=headroom)


def test_missing_columns_are_named() -> None:
    with pytest.raises(ValueError, match=r"lacks column\(s\) max_rss_bytes"):
        resource_advice(steady().drop(columns="max_rss_bytes"))


def test_instances_that_used_nothing_still_get_a_request() -> None:
    # Script processes done in 0 s with no memory measured (the DC1 demo's setup scripts).
    table = resource_advice(
        instances(
            "setupEimageRafts",
            5,
            elapsed_s=0.0,
            total_cpu_s=0.0,
            max_rss_bytes=0,
            req_mem_bytes=None,
            req_walltime_s=None,
        )  # fmt: skip
    )
    r = row(table, "setupEimageRafts")
    assert r["Walltime suggested min"] == 1
    assert r["Mem suggested MB"] == 100
    assert "request walltime 0-00:01:00" in r["Advice"]
