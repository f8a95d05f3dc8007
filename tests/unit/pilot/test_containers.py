"""A bundled instance in a container: the pilot runs the command the planner wrapped, and says so.

The runtime is a stand-in that behaves as podman does towards the payload: the container sees only
the variables passed with ``--env`` (not the pilot's environment), starts in ``--workdir`` and runs
``bash -c <payload>``. Real podman runs in tests/integration/test_containers.py.
"""

from __future__ import annotations

import os
import pathlib
import shlex

from airflow_desc.slurm.script import CONTAINER_MARKER, ContainerSpec, container_command
from airflow_desc.workflow.bundle_plan import CONTAINER_ENV
from tests.unit.pilot.pilot_process import Runner, clean_env, instance

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
cd "$workdir" && exec env -i PATH=/usr/bin:/bin "${vars[@]}" "$@"
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
    run = run_pilot([instance("v=1:p", command, container=image)], env=env, name="work")
    rec = run.by_id["v=1:p"]
    assert rec["state"] == "success", run.explain()
    log = pathlib.Path(rec["log_path"]).read_text()
    assert f"airflow-desc-pilot: v=1:p {CONTAINER_MARKER} {image}\n" in log
    assert f"in {run.dir}: v=1:p cpus=1 payload=/w/payload.py []\n" in log
    argv = argv_file.read_text().split("\0")[:-1]
    assert argv[:3] == ["run", "--rm", "--pull=never"]
    assert [argv[i + 1] for i, word in enumerate(argv) if word == "--env"] == list(CONTAINER_ENV)
    assert argv[-4:] == [image, "bash", "-c", payload]
    assert shlex.split(command)[-1] == payload


def test_the_manifest_names_no_container_when_none_is_asked_for(run_pilot: Runner) -> None:
    run = run_pilot([instance("v=1:p", "echo plain")])
    log = pathlib.Path(run.by_id["v=1:p"]["log_path"]).read_text()
    assert run.returncode == 0 and "plain\n" in log and CONTAINER_MARKER not in log
