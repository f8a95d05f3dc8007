from __future__ import annotations

import pathlib
import stat
import subprocess

import pytest

from airflow_desc import slurm

# Every sacct field must be valid for slurm 22.05 (`sacct --helpformat` of 22.05.8).
SACCT_2205_FIELDS = set(
    """Account AdminComment AllocCPUS AllocNodes AllocTRES AssocID AveCPU AveCPUFreq AveDiskRead AveDiskWrite
    AvePages AveRSS AveVMSize BlockID Cluster Comment Constraints ConsumedEnergy ConsumedEnergyRaw Container
    CPUTime CPUTimeRAW DBIndex DerivedExitCode Elapsed ElapsedRaw Eligible End ExitCode Flags GID Group JobID
    JobIDRaw JobName Layout MaxDiskRead MaxDiskReadNode MaxDiskReadTask MaxDiskWrite MaxDiskWriteNode
    MaxDiskWriteTask MaxPages MaxPagesNode MaxPagesTask MaxRSS MaxRSSNode MaxRSSTask MaxVMSize MaxVMSizeNode
    MaxVMSizeTask McsLabel MinCPU MinCPUNode MinCPUTask NCPUS NNodes NodeList NTasks Partition Priority QOS
    QOSRAW Reason ReqCPUFreq ReqCPUFreqGov ReqCPUFreqMax ReqCPUFreqMin ReqCPUS ReqMem ReqNodes ReqTRES
    Reservation ReservationId Reserved ResvCPU ResvCPURAW Start State Submit SubmitLine Suspended
    SystemComment SystemCPU Timelimit TimelimitRaw TotalCPU UID User UserCPU WCKey WCKeyID WorkDir""".split()
)

# Values a shell would mangle or execute if they were not quoted.
NASTY = [
    "plain",
    "with space",
    "it's",
    'double "quoted"',
    "semi;colon",
    "$(touch PWNED)",
    "`touch PWNED`",
    "a && touch PWNED",
    "pipe|touch PWNED",
    "glob*?[x]",
    "$HOME",
    "back\\slash",
    "-starts-with-dash",
    "tab\there",
    "émoji ✓",
]


def run_with_fake_slurm(command: str, cwd: pathlib.Path, stdin: str = "") -> list[str]:
    """Run a built command in bash with sbatch/sacct/squeue/scancel replaced by argv printers."""
    fakes = "".join(
        f'{tool}() {{ printf "%s\\0" {tool} "$@"; }}; ' for tool in ("sbatch", "sacct", "squeue", "scancel")
    )
    result = subprocess.run(
        ["bash", "-c", fakes + command],
        cwd=cwd,
        input=stdin,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,  # a hang guard
    )
    assert not (cwd / "PWNED").exists(), "a value was executed by the shell"
    return result.stdout.split("\0")[:-1]


def test_sacct_fields_are_valid_for_slurm_2205() -> None:
    assert set(slurm.SACCT_FIELDS) <= SACCT_2205_FIELDS
    assert slurm.SACCT_FIELDS[0] == "JobID"
    assert len(set(slurm.SACCT_FIELDS)) == len(slurm.SACCT_FIELDS)


def test_sacct_by_ids() -> None:
    assert slurm.sacct_command(["1", "2", "3_4"], fields=("JobID", "State")) == (
        "sacct -P -n --noconvert -o JobID,State -j 1,2,3_4"
    )


def test_sacct_default_fields() -> None:
    cmd = slurm.sacct_command(["7"])
    assert cmd.startswith("sacct -P -n --noconvert -o JobID,JobName,State,ExitCode,")
    assert cmd.endswith(" -j 7")


def test_sacct_by_name_needs_start() -> None:
    with pytest.raises(ValueError, match="midnight"):
        slurm.sacct_command(name="run42")
    assert slurm.sacct_command(name="run42", start="2025-11-01T00:00:00", fields=("JobID",)) == (
        "sacct -P -n --noconvert -o JobID --name=run42 -S 2025-11-01T00:00:00"
    )


def test_sacct_by_ids_and_name_and_clusters() -> None:
    cmd = slurm.sacct_command(["5"], name="run 42", end="now", clusters=["alpha", "beta"], fields=("JobID",))
    assert cmd == "sacct -P -n --noconvert -o JobID -j 5 '--name=run 42' -E now --clusters=alpha,beta"


def test_sacct_needs_a_filter() -> None:
    with pytest.raises(ValueError, match="job_ids or name"):
        slurm.sacct_command()


@pytest.mark.parametrize("fields", [(), ("JobID", "State;id"), ("Job ID",)])
def test_sacct_rejects_bad_fields(fields: tuple[str, ...]) -> None:
    with pytest.raises(ValueError, match="field"):
        slurm.sacct_command(["1"], fields=fields)


@pytest.mark.parametrize("start", ["now -1day", "a\nb", ""])
def test_sacct_rejects_bad_times(start: str) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - the message varies with the defect
        slurm.sacct_command(name="x", start=start)


@pytest.mark.parametrize(
    "job_id",
    [
        "",
        "abc",
        "1;rm -rf /",
        "$(id)",
        "`id`",
        "1 2",
        "1\n2",
        "1\n",  # "$" alone would accept a trailing newline
        "\u0661\u0662",  # Arabic-Indic digits: \d without re.ASCII
        "1.b\u00e4tch",
        "1,2",
        "-1",
        "1_",
        "1.",
        "1_2_3",
        "1.batch.x",
        " 1",
    ],
)
def test_invalid_job_ids_are_refused(job_id: str) -> None:
    with pytest.raises(ValueError, match="job id"):
        slurm.validate_job_id(job_id)
    with pytest.raises(ValueError, match="job id"):
        slurm.sacct_command(["1", job_id])
    with pytest.raises(ValueError, match="job id"):
        slurm.scancel_command([job_id])
    with pytest.raises(ValueError, match="job id"):
        slurm.squeue_command([job_id])


@pytest.mark.parametrize(
    "job_id", ["1", "123456789", "12_3", "12.batch", "12.extern", "12_3.0", "12.4294967294"]
)
def test_valid_job_ids(job_id: str) -> None:
    assert slurm.validate_job_id(job_id) == job_id


def test_a_single_string_is_not_a_list_of_ids() -> None:
    with pytest.raises(TypeError):
        slurm.sacct_command("12")
    with pytest.raises(ValueError, match="no job ids"):
        slurm.sacct_command([])


def test_chunked_sacct_commands() -> None:
    ids = [str(n) for n in range(1, 2501)] + ["5", "17"]  # duplicates are dropped
    commands = slurm.chunked_sacct_commands(ids, max_ids=1000, fields=("JobID",))
    assert len(commands) == 3
    chunks = [cmd.split(" -j ")[1].split(",") for cmd in commands]
    assert [len(c) for c in chunks] == [1000, 1000, 500]
    assert [i for c in chunks for i in c] == [str(n) for n in range(1, 2501)]
    assert max(len(cmd) for cmd in commands) < 8000
    assert slurm.chunked_sacct_commands([]) == []
    with pytest.raises(ValueError, match="max_ids"):
        slurm.chunked_sacct_commands(["1"], max_ids=0)


def test_sbatch_command() -> None:
    assert slurm.sbatch_command("/scratch/run 1/job.sh") == "sbatch --parsable '/scratch/run 1/job.sh'"
    assert slurm.sbatch_command("~/jobs/a.sh", cluster="perlmutter", extra=("--hold",)) == (
        'sbatch --parsable --clusters=perlmutter --hold "$HOME"/jobs/a.sh'
    )
    with pytest.raises(ValueError, match="cluster"):
        slurm.sbatch_command("a.sh", cluster="x;y")
    with pytest.raises(ValueError, match="line break"):
        slurm.sbatch_command("a\n.sh")


def test_submit_script_command() -> None:
    assert slurm.submit_script_command("/scratch/desc/run42", "p1.sh") == (
        "(umask 077 && mkdir -p -- /scratch/desc/run42 && cat > /scratch/desc/run42/p1.sh) && "
        "sbatch --parsable /scratch/desc/run42/p1.sh"
    )


def test_the_submitted_script_is_its_owners_alone_and_sbatch_keeps_the_logins_umask(
    tmp_path: pathlib.Path,
) -> None:
    """Run under bash with a stand-in sbatch that reports the umask the job would get."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    sbatch = bin_dir / "sbatch"
    sbatch.write_text('#!/bin/bash\numask > "$SBATCH_UMASK_FILE"\necho 4242\n')
    sbatch.chmod(0o755)
    remote = tmp_path / "work" / "run 1"
    done = subprocess.run(
        ["bash", "-c", f"umask 022 && {slurm.submit_script_command(str(remote), 't1.sh')}"],
        input="#!/bin/bash\ntrue\n", capture_output=True, text=True, check=True,
        env={"PATH": f"{bin_dir}:/usr/bin:/bin", "SBATCH_UMASK_FILE": str(tmp_path / "umask")},
    )  # fmt: skip
    assert done.stdout.strip() == "4242"
    assert stat.S_IMODE(remote.stat().st_mode) == 0o700
    assert stat.S_IMODE((remote / "t1.sh").stat().st_mode) == 0o600
    assert (tmp_path / "umask").read_text().strip() == "0022"


@pytest.mark.parametrize("name", ["", "a/b", "..", ".", "x\ny"])
def test_submit_script_command_rejects_bad_names(name: str) -> None:
    with pytest.raises(ValueError, match="script_name"):
        slurm.submit_script_command("/tmp", name)


def test_squeue_command() -> None:
    assert slurm.squeue_command() == "squeue -h '--format=%i|%j|%T|%r|%M|%l|%N'"
    assert slurm.squeue_command(mine=True) == "squeue -h '--format=%i|%j|%T|%r|%M|%l|%N' --me"
    assert slurm.squeue_command(["1", "2_3"], name="run42", user="desc", clusters="all") == (
        "squeue -h '--format=%i|%j|%T|%r|%M|%l|%N' -j 1,2_3 --name=run42 --user=desc --clusters=all"
    )
    with pytest.raises(ValueError, match="user"):
        slurm.squeue_command(user="a b")
    with pytest.raises(ValueError, match="name"):
        slurm.squeue_command(name="a,b")


def test_scancel_command() -> None:
    assert slurm.scancel_command(["1", "2_3"]) == "scancel 1 2_3"
    signalled = slurm.scancel_command(["1"], signal="USR1", cluster="alpha")
    assert signalled == "scancel --signal=USR1 --clusters=alpha 1"
    with pytest.raises(ValueError, match="signal"):
        slurm.scancel_command(["1"], signal="USR1; id")


# --- the built commands, run by a real bash with the SLURM tools replaced by argv printers ---


@pytest.mark.parametrize("value", NASTY)
def test_names_reach_sacct_and_squeue_literally(value: str, tmp_path: pathlib.Path) -> None:
    argv = run_with_fake_slurm(
        slurm.sacct_command(["1"], name=value, start="now-1days", fields=("JobID",)), tmp_path
    )
    assert argv == [
        "sacct",
        "-P",
        "-n",
        "--noconvert",
        "-o",
        "JobID",
        "-j",
        "1",
        f"--name={value}",
        "-S",
        "now-1days",
    ]
    argv = run_with_fake_slurm(slurm.squeue_command(name=value), tmp_path)
    assert argv == ["squeue", "-h", "--format=%i|%j|%T|%r|%M|%l|%N", f"--name={value}"]


@pytest.mark.parametrize("value", NASTY)
def test_paths_and_extra_args_reach_sbatch_literally(value: str, tmp_path: pathlib.Path) -> None:
    argv = run_with_fake_slurm(slurm.sbatch_command(f"/x/{value}/job.sh", extra=(value,)), tmp_path)
    assert argv == ["sbatch", "--parsable", value, f"/x/{value}/job.sh"]


def test_home_relative_path_expands_to_home(tmp_path: pathlib.Path) -> None:
    command = f"HOME={tmp_path}; " + slurm.sbatch_command("~/runs/job.sh")
    assert run_with_fake_slurm(command, tmp_path) == ["sbatch", "--parsable", f"{tmp_path}/runs/job.sh"]


@pytest.mark.parametrize("value", [v for v in NASTY if "/" not in v])
def test_submit_script_writes_the_script_at_a_nasty_path(value: str, tmp_path: pathlib.Path) -> None:
    remote_dir = tmp_path / f"runs {value}" / "deeper"
    script = "#!/bin/bash\necho 'it works'\n"
    command = slurm.submit_script_command(str(remote_dir), f"{value}.sh")
    argv = run_with_fake_slurm(command, tmp_path, stdin=script)
    written = remote_dir / f"{value}.sh"
    assert written.read_text() == script
    assert argv == ["sbatch", "--parsable", str(written)]


@pytest.mark.parametrize("value", ["a\nb", "a\rb", "nul\0byte"])
def test_line_breaks_and_nul_are_refused(value: str) -> None:
    with pytest.raises(ValueError, match="line break|NUL"):
        slurm.sacct_command(name=value, start="now")
    with pytest.raises(ValueError, match="line break|NUL"):
        slurm.squeue_command(name=value)
    with pytest.raises(ValueError, match="line break|NUL"):
        slurm.submit_script_command(f"/tmp/{value}", "a.sh")


def test_controller_jobs_command_asks_once_per_id_in_one_line() -> None:
    from airflow_desc.slurm.commands import controller_jobs_command

    assert controller_jobs_command(["12", "13_4"]) == (
        "scontrol -o show job 12; scontrol -o show job 13_4; true"
    )
    with pytest.raises(ValueError, match="not a SLURM job id"):
        controller_jobs_command(["12; rm -rf ~"])


def test_write_file_command_writes_whole_files_at_hostile_paths(tmp_path: pathlib.Path) -> None:
    """The path is data: quoted, never run; the file appears whole and is its owner's alone."""
    canary = tmp_path / "CANARY"
    directory = tmp_path / "run $(touch CANARY) `touch CANARY` ; x"
    directory.mkdir()
    path = directory / "offer.json"
    for text in ('{"a": 1}', '{"b": 2}'):  # the second replaces the first
        subprocess.run(
            ["bash", "-c", f"umask 022 && {slurm.write_file_command(str(path))}"],
            input=text,
            check=True,
            text=True,
        )
    assert path.read_text() == '{"b": 2}' and not canary.exists()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(p.name for p in directory.iterdir()) == ["offer.json"]
    with pytest.raises(ValueError, match="path"):
        slurm.write_file_command("/tmp/dir/")
