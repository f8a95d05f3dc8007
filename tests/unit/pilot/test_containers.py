"""A bundled instance in a container: the pilot runs the command the planner wrapped, and says so.

The runtime is a stand-in that behaves as podman does towards the payload: the container sees only
the variables passed with ``--env`` (not the pilot's environment), starts in ``--workdir`` and runs
``bash -c <payload>``, in a process that is not the runtime's child (as conmon's are not: its CPU
is nobody's rusage), while the client waits for it. Real podman runs in
tests/integration/test_containers.py.
"""

from __future__ import annotations

import os
import pathlib
import re
import shlex

import pytest

from airflow_desc.pilot.launcher import add_container_usage, read_container_usage
from airflow_desc.slurm.script import CONTAINER_MARKER, ContainerSpec, container_command, measured_payload
from airflow_desc.workflow.bundle_plan import CONTAINER_ENV
from tests.unit.fake_conmon import FAKE_CONMON_RUNTIME
from tests.unit.pilot.pilot_process import Runner, clean_env, instance
from tests.unit.slurm.test_script import _gone
from tests.waiting import wait_for

FAKE_PODMAN = """#!/bin/bash
printf '%s\\0' "$@" > "$FAKE_ARGV"
shift  # run
vars=()
while [ "$1" != bash ]; do
    case "$1" in
        --env) vars+=("$2=${!2}"); shift 2 ;;
        --workdir) workdir=$2; shift 2 ;;
        --volume) shift 2 ;;
        *) shift ;;  # options and the image
    esac
done
done_file="$FAKE_ARGV.done.$$"
# Double fork: the "container" is orphaned, so its CPU reaches no rusage the pilot reads.
( ( cd "$workdir" && env -i PATH=/usr/bin:/bin "${vars[@]}" "$@"; echo $? > "$done_file.tmp"
    mv "$done_file.tmp" "$done_file" ) & )
while [ ! -e "$done_file" ]; do sleep 0.05; done
rc=$(cat "$done_file"); rm -f "$done_file"
exit "$rc"
"""


def test_an_instance_runs_its_payload_in_its_container_with_the_pilots_variables(
    run_pilot: Runner, tmp_path: pathlib.Path
) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "podman").write_text(FAKE_PODMAN)
    (bin_dir / "podman").chmod(0o755)
    payload = 'echo "in $PWD: $DESC_PILOT_INSTANCE cpus=$OMP_NUM_THREADS payload=$DESC_PAYLOAD [$NOT_PASSED]"'
    image = "localhost/x:1"
    command = container_command(
        ContainerSpec("podman", image, options=("--pull=never",)), payload, CONTAINER_ENV
    )
    argv_file = tmp_path / "argv"
    env = clean_env(
        PATH=f"{bin_dir}:{os.environ['PATH']}",
        FAKE_ARGV=str(argv_file),
        DESC_PAYLOAD="/w/payload.py",
        NOT_PASSED="leak",
    )
    inst = instance("v=1:p", command, container=image, container_runtime="podman")
    run = run_pilot([inst], env=env, name="work")
    rec = run.by_id["v=1:p"]
    assert rec["state"] == "success", run.explain()
    log = pathlib.Path(rec["log_path"]).read_text()
    assert f"airflow-desc-pilot: v=1:p {CONTAINER_MARKER} {image}\n" in log
    assert f"in {run.dir}: v=1:p cpus=1 payload=/w/payload.py []\n" in log
    argv = argv_file.read_text().split("\0")[:-1]
    # Named by the pilot (the job's id, its pid, the instance's index), so that it can remove it.
    assert argv[:2] == ["run", "--name"] and re.fullmatch(r"airflow-desc-0-\d+-0", argv[2]), argv
    assert argv[3:5] == ["--rm", "--pull=never"]
    assert [argv[i + 1] for i, word in enumerate(argv) if word == "--env"] == [
        *CONTAINER_ENV,
        "DESC_USAGE_FILE",
    ]
    assert argv[-4:] == [image, "bash", "-c", measured_payload(payload)]
    assert shlex.split(command)[-1] == measured_payload(payload)
    # The usage file sat beside the log, mounted at its own path; the pilot read it and removed it.
    usage = argv[argv.index("DESC_USAGE_FILE") + 2].split(":")[0]
    assert usage == rec["log_path"][: -len(".log")] + ".usage" and not pathlib.Path(usage).exists()


BURN = (
    "python3 -c 'import time; t = time.process_time(); exec(\"while time.process_time() - t < 0.6: pass\")'"
)


# The usage file sits in the logs directory, whose path reaches a shell and podman's --volume.
@pytest.mark.parametrize("name", ["work", "w d;$(touch PWNED)'`touch PWNED`", "w:1,2"])
def test_an_instances_record_has_its_containers_cpu(
    run_pilot: Runner, tmp_path: pathlib.Path, name: str
) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "podman").write_text(FAKE_PODMAN)
    (bin_dir / "podman").chmod(0o755)
    command = container_command(ContainerSpec("podman", "localhost/x:1"), BURN, CONTAINER_ENV)
    env = clean_env(PATH=f"{bin_dir}:{os.environ['PATH']}", FAKE_ARGV=str(tmp_path / "argv"))
    run = run_pilot([instance("v=1:p", command, container="localhost/x:1")], env=env, name=name)
    rec = run.by_id["v=1:p"]
    assert rec["state"] == "success", run.explain()
    assert not list(tmp_path.rglob("PWNED"))
    usage = (tmp_path / "argv").read_text().split("\0")[:-1]
    usage = usage[usage.index("DESC_USAGE_FILE") + 2].split(":")[0]
    # Beside the log, or (a ':' or ',' podman's --volume would misread) a temporary file; removed.
    assert usage.startswith(str(run.dir) if ":" not in name else "/tmp/airflow-desc-usage."), usage
    assert not pathlib.Path(usage).exists()
    # The client's own rusage misses the orphaned payload; the container's times have it.
    assert rec["total_cpu_s"] >= 0.6 and rec["container_usage"]["cpu_s"] >= 0.6, rec
    assert rec["total_cpu_s"] < rec["container_usage"]["cpu_s"] + 0.6, rec  # the client's is small


def test_a_usage_file_is_read_and_added_to_the_clients(tmp_path: pathlib.Path) -> None:
    usage = tmp_path / "u"
    usage.write_text("0m0.010s 0m0.002s\n0m2.500s 0m0,500s\n104857600\n0\n")
    read = read_container_usage(str(usage))
    assert read == {"cpu_s": 3.0, "max_rss_bytes": 104857600, "oom_kills": 0}
    values = {"total_cpu_s": 0.25, "max_rss_bytes": 17 * 1024 * 1024}
    add_container_usage(values, read)
    assert values == {
        "total_cpu_s": 3.25,
        "max_rss_bytes": 104857600 + 17 * 1024 * 1024,
        "container_usage": read,
    }
    usage.write_text("0m0.010s 0m0.002s\n0m2.500s 0m0.500s\n\n\n")  # no memory cgroup to read
    assert read_container_usage(str(usage)) == {"cpu_s": 3.0, "max_rss_bytes": None, "oom_kills": None}
    for text in ("", "garbled\n"):  # never ran; cut short
        usage.write_text(text)
        assert read_container_usage(str(usage)) is None
    assert read_container_usage(str(tmp_path / "missing")) is None
    values = {"total_cpu_s": 0.25, "max_rss_bytes": None}
    add_container_usage(values, None)
    assert values == {"total_cpu_s": 0.25, "max_rss_bytes": None}


# A payload that ignores TERM, in a container that outlives its client (tests/unit/fake_conmon.py).
STUBBORN = "trap '' TERM; sleep 300 & echo $! > child; wait; echo after > after"


@pytest.mark.parametrize(
    ("grace", "stopped_by"),
    [("10", "its command's shell: stop -t 2"), ("0.3", "the pilot: rm -f, after SIGKILL")],
)
def test_an_instance_past_its_walltime_leaves_no_container(
    run_pilot: Runner, tmp_path: pathlib.Path, grace: str, stopped_by: str
) -> None:
    bin_dir, state = tmp_path / "bin", tmp_path / "state"
    bin_dir.mkdir()
    state.mkdir()
    (bin_dir / "podman").write_text(FAKE_CONMON_RUNTIME)
    (bin_dir / "podman").chmod(0o755)
    calls = tmp_path / "calls"
    command = container_command(ContainerSpec("podman", "localhost/x:1"), STUBBORN, CONTAINER_ENV)
    env = clean_env(PATH=f"{bin_dir}:{os.environ['PATH']}", FAKE_CALLS=str(calls), FAKE_STATE=str(state))
    inst = instance("v=1:p", command, container="localhost/x:1", container_runtime="podman", walltime_s=1)
    run = run_pilot([inst], "--kill-grace", grace, env=env, name="work")
    rec = run.by_id["v=1:p"]
    assert (rec["state"], rec["reason"]) == ("terminated", "time-limit"), run.explain()
    child = int((run.dir / "child").read_text())
    wait_for(lambda: _gone(child), timeout=30, what=f"the container's payload {child} to end", interval=0.05)
    assert list(state.iterdir()) == [], stopped_by
    assert not (run.dir / "after").exists()
    run_call, *rest = [call.split("\0")[:-1] for call in calls.read_text().split("\x1e")[:-1]]
    name = run_call[2]
    assert re.fullmatch(r"airflow-desc-0-\d+-0", name), run_call  # the pilot's: job, its pid, the index
    assert ["rm", "-f", "-i", "-t", "0", name] in rest, rest
    if grace == "10":
        assert rest[0] == ["stop", "-i", "-t", "2", name], rest
