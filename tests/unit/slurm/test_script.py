from __future__ import annotations

import os
import pathlib
import re
import signal
import subprocess

import pytest

from airflow_desc.slurm.script import (
    ContainerSpec,
    JobSpec,
    container_command,
    measured_payload,
    render_job_script,
)
from tests.unit.fake_conmon import FAKE_CONMON_RUNTIME
from tests.waiting import wait_for

GOLDEN = pathlib.Path(__file__).parents[2] / "data" / "slurm" / "golden"

BASE = {
    "job_name": "run42-processEimage",
    "command": "processEimage.py --visit 159479 --sensor 'R22 S11'\n",
    "partition": "debug",
    "time_limit_s": 1800,
    "mem_mb": 2000,
    "output": "/scratch/run42/%j.out",
    "env": {"DESC_RUN": "run42"},
    "workdir": "/scratch/run42",
}
CONTAINERS = {
    "none": ContainerSpec(),
    "shifter": ContainerSpec("shifter", "lsstdesc/desc-stack:w_2025_01", binds=("/global/cfs/desc:/desc",)),
    "podman-hpc": ContainerSpec(
        "podman-hpc", "lsstdesc/desc-stack:w_2025_01", options=("--gpu",), binds=("/global/cfs/desc:/desc",)
    ),
    "podman": ContainerSpec(
        "podman",
        "localhost/desc-payload:test",
        options=("--pull=never", "--network=none"),
        binds=("/x:/x:ro",),
    ),
    "apptainer": ContainerSpec(
        "apptainer",
        "/sdf/images/desc-stack.sif",
        options=("--cleanenv",),
        binds=("/sdf/group/desc:/desc:ro",),
    ),
}


def sbatch_directive_args(line: str) -> list[str]:
    """Split an #SBATCH line as slurm 22.05's sbatch does (src/sbatch/opt.c, _get_argument)."""
    assert line.startswith("#SBATCH")
    rest, args = line[len("#SBATCH") :], []
    i = 0
    while True:
        while i < len(rest) and rest[i].isspace():
            i += 1
        if i >= len(rest):
            return args
        arg, quote, escaped = "", "", False
        while i < len(rest) and (quote or not rest[i].isspace()) and rest[i] != "\n":
            c = rest[i]
            i += 1
            if escaped:
                escaped = False
            elif c == "\\":
                escaped = True
                continue
            elif quote:
                if c == quote:
                    quote = ""
                    continue
            elif c in "\"'":
                quote = c
                continue
            elif c == "#":
                return args + ([arg] if arg else [])
            arg += c
        assert not quote, f"sbatch would fail: unmatched quote in {line!r}"
        args.append(arg)


def sbatch_options(script: str) -> list[str]:
    """Return the options sbatch reads from a script: #SBATCH lines before the first command."""
    options = []
    for line in script.splitlines()[1:]:
        if line.startswith("#SBATCH"):
            options += sbatch_directive_args(line)
        elif line.strip() and not line.startswith("#"):
            break
    return options


def run_script(
    script: str, tmp_path: pathlib.Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "job.sh"
    path.write_text(script)
    full_env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "SLURM_JOB_ID": "4242", **(env or {})}
    return subprocess.run(
        ["bash", str(path)],
        cwd=tmp_path,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=180,  # a hang guard only: on a loaded machine 1.4 CPU-s took 20 s of wall
        check=False,
    )


# --- golden scripts ---


@pytest.mark.parametrize("runtime", list(CONTAINERS))
def test_golden_script(runtime: str) -> None:
    script = render_job_script(JobSpec(**BASE, container=CONTAINERS[runtime]))  # type: ignore[arg-type]
    assert script == (GOLDEN / f"{runtime}.sh").read_text()


def test_every_option_becomes_an_sbatch_option() -> None:
    spec = JobSpec(
        job_name="run 42",
        command="true",
        partition="regular",
        qos="debug",
        account="m1727",
        constraint="cpu&large",
        time_limit_s=93784,
        nodes=2,
        ntasks=8,
        cpus_per_task=4,
        mem_per_cpu_mb=1900,
        output="/scratch/my runs/%x-%j.out",
        error="/scratch/my runs/%x-%j.err",
        array="0-9%2",
        signal="B:USR1@60",
        exclusive=True,
        exclude=("nid001234", "nid[002000-002003]"),
        requeue=False,
        acctg_freq="task=5",
        container=ContainerSpec("shifter", "docker:lsstdesc/stack:1"),
        extra_sbatch={"--gpus": "0", "hint": "nomultithread", "--spread-job": None},
    )
    assert sbatch_options(render_job_script(spec)) == [
        "--job-name=run 42",
        "--partition=regular",
        "--qos=debug",
        "--account=m1727",
        "--constraint=cpu&large",
        "--time=1-02:03:04",
        "--nodes=2",
        "--ntasks=8",
        "--cpus-per-task=4",
        "--mem-per-cpu=1900M",
        "--output=/scratch/my runs/%x-%j.out",
        "--error=/scratch/my runs/%x-%j.err",
        "--array=0-9%2",
        "--signal=B:USR1@60",
        "--exclude=nid001234,nid[002000-002003]",
        "--exclusive",
        "--no-requeue",
        "--acctg-freq=task=5",
        "--image=docker:lsstdesc/stack:1",
        "--gpus=0",
        "--hint=nomultithread",
        "--spread-job",
    ]


def test_minimal_spec_sets_only_name_and_accounting_frequency() -> None:
    script = render_job_script(JobSpec(job_name="x", command="true"))
    assert sbatch_options(script) == ["--job-name=x", "--acctg-freq=task=1"]
    assert sbatch_options(render_job_script(JobSpec(job_name="x", command="true", acctg_freq=None))) == [
        "--job-name=x"
    ]
    assert (
        sbatch_options(render_job_script(JobSpec(job_name="x", command="true", requeue=True)))[1]
        == "--requeue"
    )


def test_all_sbatch_lines_come_before_the_first_command() -> None:
    script = render_job_script(JobSpec(**BASE, container=CONTAINERS["shifter"]))  # type: ignore[arg-type]
    lines = script.splitlines()
    last_directive = max(i for i, line in enumerate(lines) if line.startswith("#SBATCH"))
    assert all(line.startswith("#") for line in lines[: last_directive + 1])
    assert lines[0] == "#!/bin/bash"


# --- refusals ---


@pytest.mark.parametrize(
    "field", ["job_name", "partition", "qos", "account", "constraint", "output", "error"]
)
@pytest.mark.parametrize(
    "bad", ['a"b', "a'b", "a\\b", "a#b", "$SCRATCH/x", "a`id`", "a\nb", "a\rb", "a\tb", ""]
)
def test_values_an_sbatch_line_cannot_hold_are_refused(field: str, bad: str) -> None:
    kwargs: dict[str, object] = {"job_name": "ok", "command": "true", field: bad}
    with pytest.raises(ValueError, match=f"JobSpec.{field}"):
        JobSpec(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", ["a|b", "a,b"])
def test_job_names_that_break_sacct_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="sacct"):
        JobSpec(job_name=bad, command="true")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"mem_mb": 100, "mem_per_cpu_mb": 10}, "mutually exclusive"),
        ({"mem_mb": 0}, "mem_mb"),
        ({"nodes": -1}, "nodes"),
        ({"ntasks": True}, "ntasks"),
        ({"cpus_per_task": 1.5}, "cpus_per_task"),
        ({"time_limit_s": 0}, "positive"),
        ({"array": "0-9;id"}, "array"),
        ({"signal": "USR1; id"}, "signal"),
        ({"exclude": ("nid1 nid2",)}, "exclude"),
        ({"env": {"1BAD": "x"}}, "env key"),
        ({"env": {"A-B": "x"}}, "env key"),
        ({"env": {"A": "x\ny"}}, "line break"),
        ({"setup_lines": ("module load a\nmodule load b",)}, "line break"),
        ({"workdir": "/a\n/b"}, "line break"),
        ({"workdir": ""}, "workdir"),
        ({"command": "  \n"}, "command is empty"),
        ({"command": "echo \0"}, "NUL"),
        ({"extra_sbatch": {"time": "10"}}, "time_limit_s"),
        ({"extra_sbatch": {"--mem": "1G"}}, "mem_mb"),
        ({"extra_sbatch": {"image": "x"}}, "container"),
        ({"extra_sbatch": {"wrap": "id"}}, "wrap"),
        ({"extra_sbatch": {"-t": "10"}}, "long sbatch option"),
        ({"extra_sbatch": {"gpus=1": None}}, "long sbatch option"),
        ({"extra_sbatch": {"gres": "gpu:1 #x"}}, "extra_sbatch"),
    ],
)
def test_invalid_specs_are_refused(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        JobSpec(**{"job_name": "ok", "command": "true", **kwargs})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"runtime": "docker", "image": "x"}, "runtime"),
        ({"runtime": "shifter"}, "image is required"),
        ({"runtime": "apptainer", "image": "a b.sif"}, "whitespace"),
        ({"runtime": "none", "image": "x"}, "takes no image"),
        ({"runtime": "podman-hpc", "image": "x", "binds": ("",)}, "empty"),
        ({"runtime": "podman-hpc", "image": "x", "options": ("--a\n--b",)}, "line break"),
        ({"runtime": "shifter", "image": "repo/img#1"}, "ContainerSpec.image"),
    ],
)
def test_invalid_containers_are_refused(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        ContainerSpec(**kwargs)  # type: ignore[arg-type]


def test_spec_is_frozen_and_copies_its_mappings() -> None:
    env = {"A": "1"}
    spec = JobSpec(job_name="x", command="true", env=env)
    env["A"] = "2"
    assert spec.env["A"] == "1"
    with pytest.raises(AttributeError):
        spec.job_name = "y"  # type: ignore[misc]
    with pytest.raises(TypeError):
        spec.env["B"] = "x"  # type: ignore[index]
    assert hash(spec) == hash(JobSpec(job_name="x", command="true", env={"A": "1"}))


@pytest.mark.parametrize(
    ("image", "expected"),
    [("lsstdesc/a:1", "docker:lsstdesc/a:1"), ("docker:a:1", "docker:a:1"), ("id:abc", "id:abc")],
)
def test_shifter_image_gets_a_source_prefix(image: str, expected: str) -> None:
    assert ContainerSpec("shifter", image).shifter_image == expected


# --- the rendered script, run by a real bash (the #SBATCH lines are comments to it) ---

NASTY_VALUES = [
    "with space",
    "it's",
    'dq"x',
    "semi;colon",
    "$(touch PWNED)",
    "`touch PWNED`",
    "a\\b",
    "*",
    "~",
]


def test_payload_exit_code_is_recorded_and_returned(tmp_path: pathlib.Path) -> None:
    result = run_script(render_job_script(JobSpec(job_name="x", command="echo hello\nexit 3")), tmp_path)
    assert result.returncode == 3
    lines = result.stdout.splitlines()
    assert lines[0].startswith("airflow-desc: job 4242 payload starting on ")
    assert lines[1] == "hello"
    assert lines[2].startswith("airflow-desc: job 4242 payload exit code 3 at ")


def test_exit_code_also_goes_to_stderr_when_it_is_a_separate_file(tmp_path: pathlib.Path) -> None:
    spec = JobSpec(job_name="x", command="false", output="o.log", error="e.log")
    result = run_script(render_job_script(spec), tmp_path)
    assert result.returncode == 1
    assert "payload exit code 1" in result.stdout
    assert "payload exit code 1" in result.stderr


def test_payload_killed_by_a_signal_reports_128_plus_n(tmp_path: pathlib.Path) -> None:
    result = run_script(render_job_script(JobSpec(job_name="x", command="kill -SEGV $BASHPID")), tmp_path)
    assert result.returncode == 139
    assert "payload exit code 139" in result.stdout


@pytest.mark.parametrize("value", NASTY_VALUES)
def test_env_values_reach_the_payload_literally(value: str, tmp_path: pathlib.Path) -> None:
    spec = JobSpec(job_name="x", command='printf "%s" "$DESC_VALUE" > value.txt', env={"DESC_VALUE": value})
    result = run_script(render_job_script(spec), tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "value.txt").read_text() == value
    assert not (tmp_path / "PWNED").exists()


@pytest.mark.parametrize("value", NASTY_VALUES)
def test_workdir_is_entered_literally(value: str, tmp_path: pathlib.Path) -> None:
    workdir = tmp_path / f"work {value}"
    workdir.mkdir()
    spec = JobSpec(job_name="x", command="pwd > where.txt", workdir=str(workdir))
    result = run_script(render_job_script(spec), tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert (workdir / "where.txt").read_text().strip() == str(workdir)
    assert not (tmp_path / "PWNED").exists()


def test_workdir_under_home(tmp_path: pathlib.Path) -> None:
    (tmp_path / "runs dir").mkdir()
    spec = JobSpec(job_name="x", command="pwd > where.txt", workdir="~/runs dir")
    assert run_script(render_job_script(spec), tmp_path).returncode == 0
    assert (tmp_path / "runs dir" / "where.txt").read_text().strip() == str(tmp_path / "runs dir")


def test_failing_setup_line_stops_the_job_before_the_payload(tmp_path: pathlib.Path) -> None:
    spec = JobSpec(job_name="x", command="touch RAN", setup_lines=("echo setting up", "false", "echo never"))
    result = run_script(render_job_script(spec), tmp_path)
    assert result.returncode == 1
    assert "never" not in result.stdout
    assert "airflow-desc: job 4242 setup failed with exit code 1" in result.stdout
    assert not (tmp_path / "RAN").exists()


def test_missing_workdir_stops_the_job(tmp_path: pathlib.Path) -> None:
    spec = JobSpec(job_name="x", command="touch RAN", workdir=str(tmp_path / "nope"))
    result = run_script(render_job_script(spec), tmp_path)
    assert result.returncode != 0
    assert "setup failed" in result.stdout
    assert not (tmp_path / "RAN").exists()


def test_payload_runs_with_default_shell_options(tmp_path: pathlib.Path) -> None:
    # Neither errexit nor pipefail of the prologue leak into the user's program.
    command = "false\nfalse | true\necho pipe=$?\necho opts=$-"
    result = run_script(render_job_script(JobSpec(job_name="x", command=command)), tmp_path)
    assert result.returncode == 0
    assert "pipe=0" in result.stdout
    assert "e" not in result.stdout.split("opts=")[1].splitlines()[0]


def test_payload_text_is_verbatim(tmp_path: pathlib.Path) -> None:
    command = "cat <<'EOF' > out.txt\n$HOME `x` 'q' \"dq\"\nEOF\ncase a in\n  a) echo matched ;;\nesac"
    result = run_script(render_job_script(JobSpec(job_name="x", command=command)), tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out.txt").read_text() == "$HOME `x` 'q' \"dq\"\n"
    assert "matched" in result.stdout


def test_batch_signal_is_forwarded_to_the_payload(tmp_path: pathlib.Path) -> None:
    command = "trap 'echo got USR1; exit 42' USR1\ntouch ready\nwhile :; do sleep 0.05; done"
    path = tmp_path / "job.sh"
    path.write_text(render_job_script(JobSpec(job_name="x", command=command, signal="B:USR1@60")))
    env = {"PATH": os.environ["PATH"], "SLURM_JOB_ID": "4242"}
    with subprocess.Popen(
        ["bash", str(path)], cwd=tmp_path, env=env, stdout=subprocess.PIPE, text=True
    ) as proc:
        wait_for(lambda: (tmp_path / "ready").exists(), timeout=60, interval=0.01, what="the payload starts")
        proc.send_signal(signal.SIGUSR1)  # SLURM's B: signals go to the batch shell only
        out, _ = proc.communicate(timeout=60)  # hang guards: a loaded machine is slow
    assert proc.returncode == 42
    assert "got USR1" in out
    assert "payload exit code 42" in out


def test_no_forwarding_without_b_prefix() -> None:
    script = render_job_script(JobSpec(job_name="x", command="true", signal="USR1@60"))
    assert "trap 'interrupted" not in script
    assert "\nrc=$?\n" in script


FAKE_RUNTIME = """#!/bin/bash
# Record argv, then run what follows the image like the real runtime would: "bash -c <payload>".
printf '%s\\0' "$(basename "$0")" "$@" > "$FAKE_ARGV"
while [ "$1" != bash ]; do shift; done
exec "$@"
"""


def run_in_fake_runtime(
    runtime: str, spec: JobSpec, tmp_path: pathlib.Path
) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    """Run the job script with a stand-in for ``runtime`` on the PATH; return the result and its argv."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / runtime).write_text(FAKE_RUNTIME)
    (bin_dir / runtime).chmod(0o755)
    argv_file = tmp_path / "argv"
    result = run_script(
        render_job_script(spec),
        tmp_path,
        env={"PATH": f"{bin_dir}:{os.environ['PATH']}", "FAKE_ARGV": str(argv_file), "TMPDIR": str(tmp_path)},
    )
    return result, argv_file.read_text().split("\0")[:-1]


@pytest.mark.parametrize("runtime", ["shifter", "podman-hpc", "podman", "apptainer"])
def test_container_runtimes_get_the_payload_intact(runtime: str, tmp_path: pathlib.Path) -> None:
    command = "printf '%s|' \"it's\" '$(touch PWNED)' \"$DESC_RUN\" > payload.txt\nexit 7"
    spec = JobSpec(
        job_name="x",
        command=command,
        env={"DESC_RUN": "run 42"},
        container=ContainerSpec(runtime, "img:1", options=("--opt",), binds=("/a b:/c",)),  # type: ignore[arg-type]
    )
    result, argv = run_in_fake_runtime(runtime, spec, tmp_path)
    assert result.returncode == 7, result.stdout + result.stderr
    assert "payload exit code 7" in result.stdout
    assert "airflow-desc: job 4242 payload runs in container image img:1\n" in result.stdout
    assert (tmp_path / "payload.txt").read_text() == "it's|$(touch PWNED)|run 42|"
    assert not (tmp_path / "PWNED").exists()
    podman = runtime in ("podman", "podman-hpc")
    # podman's container runs the payload in a shell that measures it (measured_payload).
    assert argv[-3:] == ["bash", "-c", measured_payload(command) if podman else command]
    usage = argv[argv.index("DESC_USAGE_FILE") + 2].split(":")[0] if podman else ""
    name = argv[3] if podman else ""
    if podman:  # the job's id, the shell's pid, a random number
        assert re.fullmatch(r"airflow-desc-4242-\d+-\d+", name), argv
    podman_argv = [
        "run",
        "--name",
        name,
        "--rm",
        "--opt",
        "--volume",
        "/a b:/c",
        "--env",
        "DESC_RUN",
        "--env",
        "DESC_USAGE_FILE",
    ]
    podman_argv += ["--volume", f"{usage}:{usage}"]
    podman_argv += ["--volume", f"{tmp_path}:{tmp_path}", "--workdir", str(tmp_path), "img:1"]
    expected_prefix = {
        "shifter": ["shifter", "--image=docker:img:1", "--volume=/a b:/c", "--opt"],
        "podman-hpc": ["podman-hpc", *podman_argv],
        "podman": ["podman", *podman_argv],
        "apptainer": ["apptainer", "exec", "--opt", "--bind", "/a b:/c", "img:1"],
    }[runtime]
    assert argv[:-3] == expected_prefix
    if podman:
        # The file the container wrote what it used into: in $TMPDIR, read by the script, removed.
        assert usage.startswith(f"{tmp_path}/airflow-desc-usage."), usage
        assert not pathlib.Path(usage).exists()
        assert "container 0m" in result.stdout.splitlines()[-1], result.stdout


HOSTILE = "x';touch PWNED;'$(touch PWNED)`touch PWNED`\"$HOME"
# An image has no whitespace: ${IFS} is the shell's way around that.
HOSTILE_WORD = HOSTILE.replace(" ", "${IFS}")


@pytest.mark.parametrize("runtime", ["podman-hpc", "podman", "apptainer", "shifter"])
def test_hostile_container_values_reach_the_runtime_as_words(runtime: str, tmp_path: pathlib.Path) -> None:
    # shifter's image also goes on an #SBATCH line, which refuses quotes and '$' (tested above).
    image = "img:1" if runtime == "shifter" else f"localhost/{HOSTILE_WORD}"
    container = ContainerSpec(
        runtime,  # type: ignore[arg-type]
        image,
        options=(f"--label={HOSTILE}", "--x=a b"),
        binds=(f"/a b:/c;{HOSTILE}",),
    )
    spec = JobSpec(job_name="x", command="echo ran > out.txt", env={"V": HOSTILE}, container=container)
    result, argv = run_in_fake_runtime(runtime, spec, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "out.txt").read_text() == "ran\n"
    assert not (tmp_path / "PWNED").exists()
    assert f"--label={HOSTILE}" in argv and "--x=a b" in argv
    assert any(HOSTILE in word for word in argv if word.startswith(("/a b", "--volume=/a b"))), argv
    if runtime != "shifter":
        assert image in argv
        assert f"payload runs in container image {image}\n" in result.stdout


def test_container_command_refuses_what_is_not_a_variable_name() -> None:
    with pytest.raises(ValueError, match="not a shell variable name"):
        container_command(ContainerSpec("podman", "img"), "true", ["OK", "A;B"])
    with pytest.raises(ValueError, match="needs a container runtime"):
        container_command(ContainerSpec(), "true")


def test_podman_gets_the_workdir_mounted_and_set(tmp_path: pathlib.Path) -> None:
    (tmp_path / "w d").mkdir()
    spec = JobSpec(
        job_name="x", command="true", workdir="~/w d", container=ContainerSpec("podman-hpc", "img")
    )
    result, argv = run_in_fake_runtime("podman-hpc", spec, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    workdir = str(tmp_path / "w d")
    assert argv[9:14] == ["--volume", f"{workdir}:{workdir}", "--workdir", workdir, "img"]
    assert argv[14:] == ["bash", "-c", measured_payload("true")]


def test_the_containers_shell_passes_signals_to_all_of_the_payload(tmp_path: pathlib.Path) -> None:
    # As the container's PID 1 it would ignore them; a multi-command payload's children get them too.
    payload = f"sleep 60 & echo $! > {tmp_path}/child; wait; echo after > {tmp_path}/after"
    usage = tmp_path / "usage"
    proc = subprocess.Popen(
        ["bash", "-c", measured_payload(payload)],
        env={"PATH": os.environ["PATH"], "DESC_USAGE_FILE": str(usage)},
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    wait_for(
        lambda: (tmp_path / "child").exists() and (tmp_path / "child").read_text().strip(),
        timeout=30,
        what="the payload's child",
        interval=0.05,
    )
    child = int((tmp_path / "child").read_text())
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 128 + signal.SIGTERM
    wait_for(lambda: _gone(child), timeout=30, what=f"the payload's child {child} to end", interval=0.05)
    assert not (tmp_path / "after").exists()
    # It still wrote what the payload used (here: no memory cgroup of a container's own).
    assert len(usage.read_text().splitlines()) == 4 and usage.read_text().startswith("0m")


def _gone(pid: int) -> bool:
    """Whether a process has ended (a zombie waiting for its new parent counts)."""
    try:
        return pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return True


@pytest.mark.parametrize(
    ("how", "name"),
    [
        ("TERM to the job", None),
        ("KILL to the client", None),
        ("TERM to the job", HOSTILE),
        ("USR1 to the batch shell", None),
    ],
)
def test_a_stopped_podman_job_leaves_no_container(how: str, name: str | None, tmp_path: pathlib.Path) -> None:
    # scancel / the time limit TERM the job's processes, not the container's; a killed client leaves it;
    # --signal=B:USR1@60 reaches only the batch shell, which passes it on to the container.
    bin_dir, state = tmp_path / "bin", tmp_path / "state"
    bin_dir.mkdir()
    state.mkdir()
    (bin_dir / "podman").write_text(FAKE_CONMON_RUNTIME)
    (bin_dir / "podman").chmod(0o755)
    calls = tmp_path / "calls"
    payload = f"sleep 300 & echo $! > {tmp_path}/child; wait; echo after > {tmp_path}/after"
    script = tmp_path / "job.sh"
    sig = "B:USR1@60" if how.startswith("USR1") else None
    spec = JobSpec(job_name="x", command=payload, container=CONTAINERS["podman"], signal=sig)
    script.write_text(render_job_script(spec))
    env = {
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "HOME": str(tmp_path),
        "SLURM_JOB_ID": "4242",
        "TMPDIR": str(tmp_path),
        "FAKE_CALLS": str(calls),
        "FAKE_STATE": str(state),
        **({"DESC_CONTAINER_NAME": name} if name else {}),
    }
    job = subprocess.Popen(
        ["bash", str(script)], cwd=tmp_path, env=env, stdout=subprocess.PIPE, text=True,
        start_new_session=True,
    )  # fmt: skip
    child_file = tmp_path / "child"
    wait_for(
        lambda: child_file.exists() and child_file.read_text().strip() and list(state.iterdir()),
        timeout=30,
        what="the payload, in its container",
    )
    child = int(child_file.read_text())
    if how == "TERM to the job":
        os.killpg(job.pid, signal.SIGTERM)  # every process of the job, as slurmstepd does
    elif how.startswith("USR1"):
        os.kill(job.pid, signal.SIGUSR1)
    else:
        (container,) = (p.read_text() for p in state.iterdir())
        ps = subprocess.run(["ps", "-o", "ppid=", container], capture_output=True, text=True, check=True)
        os.kill(int(ps.stdout), signal.SIGKILL)  # its parent: podman's client
    out, _ = job.communicate(timeout=60)
    wait_for(lambda: _gone(child), timeout=30, what=f"the container's payload {child} to end", interval=0.05)
    assert not (tmp_path / "after").exists()
    assert list(state.iterdir()) == []  # removed
    run, *rest = [call.split("\0")[:-1] for call in calls.read_text().split("\x1e")[:-1]]
    assert run[:3] == ["run", "--name", name or run[2]] and run[2].startswith(name or "airflow-desc-4242-")
    assert ["rm", "-f", "-i", "-t", "0", run[2]] in rest, rest
    if how == "TERM to the job":
        assert rest[0] == ["stop", "-i", "-t", "2", run[2]], rest
        assert "payload exit code 143" in out, out
    elif how.startswith("USR1"):  # passed on as it is (the payload's default: to end)
        assert rest[0] == ["kill", "-s", "USR1", run[2]], rest
        assert "payload exit code 138" in out, out
    assert not (tmp_path / "PWNED").exists()
