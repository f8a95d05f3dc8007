from __future__ import annotations

import dataclasses
import os
import pathlib
import pickle
from datetime import datetime, timezone

import pytest

from airflow_desc.cluster_schema import parse_walltime
from airflow_desc.clusters import (
    CLUSTERS_FILE_ENV,
    ClusterProfile,
    ClusterProfiles,
    load_cluster_profiles,
    parse_cluster_profiles,
)
from airflow_desc.exceptions import ClusterProfileError, ResourceLimitError
from airflow_desc.slurm import JobSpec, render_job_script
from tests.unit.conftest import ONE_CLUSTER, s3df_profile, write_one_cluster

# The example of the brief, every key set, plus a cluster reached through a bastion.
FULL = """\
default: perlmutter
clusters:
  perlmutter:
    ssh_conn_id: perlmutter_ssh
    jump_conn_id: null
    slurm_cluster: perlmutter
    partition: regular
    qos: null
    account: desc
    constraint: null
    cores_per_node: 2
    memory_per_node_mb: 4096
    max_walltime: "00:30:00"
    max_queued_jobs: 100
    max_queued_per_task: null
    pool: null
    work_dir: airflow-desc
    container_runtime: none
    container_image: null
    setup_lines: []
    poll_interval: 30
    vanish_grace: 300
    high_memory_partition: null
    key_expires: null
    env: {}
  s3df:
    ssh_conn_id: s3df_ssh
    jump_conn_id: bastion_ssh
    slurm_cluster: sdf
    partition: roma
    qos: preemptable
    account: "rubin:developers"
    constraint: amd
    cores_per_node: 1
    memory_per_node_mb: 8192
    max_walltime: 2:00:00
    max_queued_jobs: 7
    max_queued_per_task: 3
    pool: s3df_jobs
    work_dir: /sdf/scratch/users/d/desc/airflow
    container_runtime: apptainer
    container_image: /sdf/images/desc.sif
    container_options: [--cleanenv]
    container_binds: ["/sdf/group/desc:/desc:ro"]
    setup_lines:
      - module load python
      - export X=1
    poll_interval: 12.5
    pilot_binding: none
    vanish_grace: 0
    high_memory_partition: bigmem
    mem_per_cpu_mb: 8192
    key_expires: 2026-12-07T14:00:00Z
    env:
      OMP_NUM_THREADS: 1
      DESC_SITE: slac
"""


REQUIRED = "    ssh_conn_id: s\n    cores_per_node: 1\n    memory_per_node_mb: 1\n    max_walltime: 5\n"


@pytest.fixture
def full() -> ClusterProfiles:
    return parse_cluster_profiles(FULL, "clusters.yaml")


@pytest.fixture
def site(data_dir: pathlib.Path) -> ClusterProfiles:
    return load_cluster_profiles(data_dir / "clusters" / "site.yaml")


def test_full_example_every_field(full: ClusterProfiles) -> None:
    assert full.names == ("perlmutter", "s3df")
    assert full.default_name == "perlmutter"
    assert full.source == "clusters.yaml"
    s3df = full.get("s3df")
    assert dataclasses.asdict(s3df) == {
        "name": "s3df",
        "ssh_conn_id": "s3df_ssh",
        "jump_conn_id": "bastion_ssh",
        "slurm_cluster": "sdf",
        "partition": "roma",
        "qos": "preemptable",
        "account": "rubin:developers",
        "constraint": "amd",
        "cores_per_node": 1,
        "memory_per_node_mb": 8192,
        "max_walltime": "2:00:00",  # unquoted, and still not YAML 1.1's 7200
        "max_walltime_s": 7200,
        "max_queued_jobs": 7,
        "max_queued_per_task": 3,
        "pool": "s3df_jobs",
        "work_dir": "/sdf/scratch/users/d/desc/airflow",
        "container_runtime": "apptainer",
        "container_image": "/sdf/images/desc.sif",
        "container_options": ("--cleanenv",),
        "container_binds": ("/sdf/group/desc:/desc:ro",),
        "setup_lines": ("module load python", "export X=1"),
        "poll_interval": 12.5,
        "pilot_binding": "none",
        "vanish_grace": 0.0,
        "high_memory_partition": "bigmem",
        "mem_per_cpu_mb": 8192,
        "maintenance": (),
        "key_expires": datetime(2026, 12, 7, 14, tzinfo=timezone.utc),
        "env": {"OMP_NUM_THREADS": "1", "DESC_SITE": "slac"},
        "sbatch_options": {},
    }
    assert s3df.pool_name == "s3df_jobs"
    assert s3df.memory_per_core_mb == 8192.0


def test_defaults_and_derived_values(full: ClusterProfiles) -> None:
    perlmutter = full.get("perlmutter")
    assert perlmutter == ClusterProfile(
        name="perlmutter",
        ssh_conn_id="perlmutter_ssh",
        partition="regular",
        account="desc",
        cores_per_node=2,
        memory_per_node_mb=4096,
        max_walltime="00:30:00",
    )
    assert perlmutter.jump_conn_id is None
    assert perlmutter.slurm_cluster == "perlmutter"
    assert perlmutter.pool_name == "slurm_perlmutter"
    assert perlmutter.max_walltime_s == 1800
    assert perlmutter.memory_per_core_mb == 2048.0
    assert (perlmutter.max_queued_jobs, perlmutter.work_dir, perlmutter.container_runtime) == (
        100,
        "airflow-desc",
        "none",
    )
    assert (perlmutter.poll_interval, perlmutter.vanish_grace) == (30.0, 300.0)
    assert (perlmutter.setup_lines, dict(perlmutter.env)) == ((), {})


def test_site_file_matches_the_local_site(site: ClusterProfiles) -> None:
    assert site.names == ("perlmutter", "s3df")
    assert site.get() is site.get("perlmutter")
    pm, s3 = site.get("perlmutter"), site.get("s3df")
    assert (pm.ssh_conn_id, pm.partition, pm.account, pm.cores_per_node, pm.memory_per_node_mb) == (
        "perlmutter_ssh",
        "regular",
        "desc",
        2,
        4096,
    )
    assert (pm.max_walltime_s, pm.jump_conn_id) == (1800, None)
    assert (s3.ssh_conn_id, s3.partition, s3.account, s3.cores_per_node, s3.memory_per_node_mb) == (
        "s3df_ssh",
        "roma",
        "desc",
        1,
        8192,
    )
    assert (s3.max_walltime_s, s3.jump_conn_id) == (7200, None)


def test_production_example_is_valid(data_dir: pathlib.Path) -> None:
    profiles = load_cluster_profiles(data_dir / "clusters" / "production-example.yaml")
    nersc, slac = profiles.get("perlmutter"), profiles.get("s3df")
    assert (nersc.qos, nersc.constraint, nersc.cores_per_node, nersc.memory_per_node_mb) == (
        "regular",
        "cpu",
        128,
        524288,
    )
    assert nersc.memory_per_core_mb == 4096.0  # 4 GB per core, as NERSC documents
    assert nersc.container_runtime == "shifter"
    assert (slac.partition, slac.cores_per_node, slac.jump_conn_id) == ("milano", 128, "s3df_bastion")
    assert slac.container_runtime == "apptainer"
    lyon = profiles.get("ccin2p3")
    assert (lyon.partition, lyon.high_memory_partition, lyon.account) == ("htc", "htc_highmem", "lsst")
    assert lyon.sbatch_options == {"licenses": "sps"}
    script = render_job_script(
        JobSpec(job_name="j", command="true", extra_sbatch=dict(lyon.sbatch_options), account=lyon.account)
    )
    assert "#SBATCH --licenses=sps\n" in script and "#SBATCH --account=lsst\n" in script


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ("sps", "sbatch_options: expected a mapping of sbatch option to value, got 'sps' (text)"),
        ({"partition": "htc"}, "sbatch_options sets --partition, which airflow-desc sets itself; remove it"),
        ({"L": "sps"}, "sbatch_options key 'L' is not a long sbatch option such as 'gpus'"),
        ({"licenses": "sps # all"}, "sbatch_options['licenses']='sps # all' cannot go on an #SBATCH line"),
        ({"wrap": "true"}, "sbatch_options cannot set --wrap"),
    ],
)
def test_sbatch_options_are_checked_when_the_profile_is_read(options: object, message: str) -> None:
    with pytest.raises(ClusterProfileError) as exc:
        ClusterProfile("lyon", "c", 4, 4096, "1:00:00", sbatch_options=options)  # type: ignore[arg-type]
    assert message in str(exc.value)
    flag = ClusterProfile("lyon", "c", 4, 4096, "1:00:00", sbatch_options={"--exclusive-user": None})
    assert flag.sbatch_options == {"--exclusive-user": None}


def test_collection_protocol(full: ClusterProfiles) -> None:
    assert [p.name for p in full] == ["perlmutter", "s3df"]
    assert len(full) == 2
    assert "s3df" in full
    assert "cori" not in full
    assert full.get(None).name == "perlmutter"


def test_the_only_cluster_is_the_default() -> None:
    text = f"clusters:\n  solo:\n{REQUIRED}"
    profiles = parse_cluster_profiles(text)
    assert profiles.default_name == "solo"
    assert profiles.get().max_walltime == "0:05:00"  # an int is minutes
    assert profiles.get().max_walltime_s == 300


def test_no_default_among_several(full: ClusterProfiles) -> None:
    profiles = ClusterProfiles(list(full), source="two.yaml")
    assert profiles.default_name is None
    with pytest.raises(ClusterProfileError) as caught:
        profiles.get()
    assert str(caught.value) == (
        "no cluster given and two.yaml sets no default; "
        "name one of perlmutter, s3df or add 'default: <name>' to two.yaml"
    )


@pytest.mark.parametrize(
    ("name", "message"),
    [
        (
            "perlmuter",
            "no cluster named 'perlmuter' in clusters.yaml; did you mean 'perlmutter'? "
            "known clusters: perlmutter, s3df",
        ),
        ("cori", "no cluster named 'cori' in clusters.yaml; known clusters: perlmutter, s3df"),
    ],
)
def test_unknown_cluster_name(full: ClusterProfiles, name: str, message: str) -> None:
    with pytest.raises(ClusterProfileError) as caught:
        full.get(name)
    assert str(caught.value) == message


def test_collection_refuses_repeats_and_a_missing_default(full: ClusterProfiles) -> None:
    pm = full.get("perlmutter")
    with pytest.raises(ClusterProfileError) as caught:
        ClusterProfiles([pm, pm], source="x")
    assert str(caught.value) == "x: cluster 'perlmutter' is defined twice; keep one"
    with pytest.raises(ClusterProfileError) as caught:
        ClusterProfiles([pm], default="s3df", source="x")
    assert str(caught.value) == "x: default: no cluster named 's3df' in x; known clusters: perlmutter"


# --- errors in files -----------------------------------------------------------------------------


def bad(data_dir: pathlib.Path, name: str) -> tuple[str, str]:
    """(the path as messages show it, the error message)."""
    path = data_dir / "clusters" / name
    with pytest.raises(ClusterProfileError) as caught:
        load_cluster_profiles(path)
    return str(path), str(caught.value)


def test_unknown_keys(data_dir: pathlib.Path) -> None:
    f, message = bad(data_dir, "bad_unknown_key.yaml")
    assert message == (
        f"{f}:1: defualt: unknown key; did you mean 'default'?\n"
        f"{f}:5: clusters.perlmutter.partiton: unknown key; did you mean 'partition'?\n"
        f"{f}:9: clusters.perlmutter.colour: unknown key; use one of ssh_conn_id, cores_per_node, "
        "memory_per_node_mb, max_walltime, jump_conn_id, slurm_cluster, partition, qos, account, constraint, "
        "max_queued_jobs, max_queued_per_task, pool, work_dir, container_runtime, container_image, "
        "container_options, container_binds, setup_lines, poll_interval, pilot_binding, vanish_grace, "
        "high_memory_partition, mem_per_cpu_mb, maintenance, key_expires, env, sbatch_options"
    )


def test_mem_per_cpu_mb_is_a_whole_number_of_mb() -> None:
    with pytest.raises(ClusterProfileError) as caught:
        parse_cluster_profiles(f"clusters:\n  c:\n{REQUIRED}    mem_per_cpu_mb: 1.5\n", "c.yaml")
    assert str(caught.value) == (
        "c.yaml:7: clusters.c.mem_per_cpu_mb: expected a whole number, got 1.5 (a number); write e.g. 2000"
    )


def test_key_expires_is_a_time_with_its_zone() -> None:
    text = "clusters:\n" + "".join(
        f"  {name}:\n{REQUIRED}    key_expires: {value}\n"
        for name, value in [("utc", "2026-12-07T14:00:00Z"), ("quoted", "'2026-12-07T15:00:00+01:00'"),
                            ("naive", "2026-12-07 14:00:00"), ("words", "tomorrow"), ("number", "3")]
    )  # fmt: skip
    with pytest.raises(ClusterProfileError) as caught:
        parse_cluster_profiles(text, "k.yaml")
    example = "write e.g. '2026-12-07T14:00:00Z' (the time sshproxy printed, with its zone)"
    assert str(caught.value).splitlines() == [
        f"k.yaml:19: clusters.naive.key_expires: the time 2026-12-07T14:00:00 has no time zone; add one "
        f"('Z' for UTC): {example}",
        f"k.yaml:25: clusters.words.key_expires: 'tomorrow' (text) is not an ISO 8601 time; {example}",
        f"k.yaml:31: clusters.number.key_expires: expected a time, got 3 (a whole number); {example}",
    ]
    good = parse_cluster_profiles(text.split("  naive:")[0], "k.yaml")
    at = datetime(2026, 12, 7, 14, tzinfo=timezone.utc)
    assert good.get("utc").key_expires == good.get("quoted").key_expires == at
    assert s3df_profile().key_expires is None


def test_wrong_types_and_negative_numbers_all_at_once(data_dir: pathlib.Path) -> None:
    f, message = bad(data_dir, "bad_types.yaml")
    p = f"{f}:{{}}: clusters.perlmutter."
    assert message.splitlines() == [
        p.format(4) + "account: expected text, got 1234 (a whole number); quote it: '1234'",
        p.format(5) + "cores_per_node: expected a whole number, got 'two' (text); write e.g. 128",
        p.format(6) + "memory_per_node_mb: must be at least 1, got -4096; write e.g. 512000",
        p.format(8) + "max_queued_jobs: must be at least 1, got 0; write e.g. 100",
        p.format(9) + "poll_interval: must be more than 0 seconds, got 0; write e.g. 30",
        p.format(10) + "vanish_grace: must be 0 or more seconds, got -1; write e.g. 300",
        p.format(11) + "setup_lines: expected a list of shell lines, got 'module load python' (text); "
        "write each line as a '- ' item",
        p.format(13)
        + "env.1BAD: not an environment variable name; use letters, digits and '_', not a leading digit",
        p.format(14) + "env.DEBUG: expected text or a number, got true (a boolean); quote it",
    ]


def test_missing_required_fields_point_at_the_cluster(data_dir: pathlib.Path) -> None:
    f, message = bad(data_dir, "bad_missing.yaml")
    assert message == (
        f"{f}:8: clusters.s3df.ssh_conn_id: missing; "
        "add the Airflow connection id of the cluster's login node\n"
        f"{f}:8: clusters.s3df.cores_per_node: missing; add the number of cores of one compute node\n"
        f"{f}:8: clusters.s3df.max_walltime: missing; "
        "add the longest walltime the partition allows, e.g. '2-00:00:00'"
    )


def test_bad_walltimes(data_dir: pathlib.Path) -> None:
    f, message = bad(data_dir, "bad_walltime.yaml")
    forms = "write D-HH:MM:SS, HH:MM:SS, MM:SS or whole minutes"
    assert message.splitlines() == [
        f"{f}:6: clusters.a.max_walltime: cannot read '3 hours' as a walltime; {forms}",
        f"{f}:11: clusters.b.max_walltime: 'UNLIMITED' is not a finite walltime; {forms}",
        f"{f}:16: clusters.c.max_walltime: walltime must be positive, got '00:00:00'; {forms}",
        f"{f}:21: clusters.d.max_walltime: cannot read '00:61:00' as a walltime; {forms}",
    ]


def test_container_settings(data_dir: pathlib.Path) -> None:
    f, message = bad(data_dir, "bad_container.yaml")
    assert message.splitlines() == [
        f"{f}:7: clusters.perlmutter.container_runtime: unknown container runtime 'podmn' (text); "
        "did you mean 'podman'? (one of none, shifter, podman-hpc, podman, apptainer)",
        f"{f}:13: clusters.s3df.container_image: an image is set but container_runtime is 'none'; "
        "set container_runtime (shifter, podman-hpc, podman, apptainer) or remove container_image",
        f"{f}:14: clusters.s3df.container_options: runtime options are set but container_runtime is 'none'; "
        "set container_runtime (shifter, podman-hpc, podman, apptainer) or remove container_options",
        f"{f}:21: clusters.local.container_options: expected a list, got '--pull=never' (text); write each "
        "word as a '- ' item, e.g. container_options: [--pull=never, --network=none]",
        f"{f}:22: clusters.local.container_binds[1]: the entry contains a line break, which is not allowed "
        "here: '/b\\n:/b'; write one word per entry",
    ]


def test_default_naming_a_missing_cluster(data_dir: pathlib.Path) -> None:
    f, message = bad(data_dir, "bad_default.yaml")
    assert message == f"{f}:1: default: no cluster named 'perlmuter'; did you mean 'perlmutter'?"


def test_duplicate_keys_are_reported_with_the_other_problems(data_dir: pathlib.Path) -> None:
    f, message = bad(data_dir, "bad_duplicate.yaml")
    assert message.splitlines() == [
        f"{f}:6: clusters.perlmutter.partition: key given twice (first on line 4); keep one of them",
        f"{f}:14: clusters.perlmutter: key given twice (first on line 2); keep one of them",
        # The second perlmutter is the one YAML keeps, and it is checked too.
        f"{f}:16: clusters.perlmutter.cores_per_node: must be at least 1, got -2; write e.g. 128",
    ]


def test_yaml_syntax_error(data_dir: pathlib.Path) -> None:
    f, message = bad(data_dir, "bad_syntax.yaml")
    assert message == (
        f"{f}:5: invalid YAML: mapping values are not allowed here; "
        "fix the YAML on this line or the one before (indentation, a missing ':', an unclosed quote)"
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "f.yaml:1: the file is empty; add a 'clusters:' mapping of named cluster profiles"),
        (
            "- a\n- b\n",
            "f.yaml:1: expected a mapping with 'clusters' and 'default', got a list; "
            "see the example in the airflow_desc.clusters documentation",
        ),
        (
            "# profiles\ndefault: x\n",
            # No second error for the default: there is nothing it could name.
            "f.yaml:2: clusters: missing; add a 'clusters:' mapping of named cluster profiles",
        ),
        (
            "clusters: {}\n",
            "f.yaml:1: clusters: expected a mapping of cluster names to profiles, got no clusters; "
            "add at least one cluster",
        ),
        (
            "clusters:\n  - a\n",
            "f.yaml:1: clusters: expected a mapping of cluster names to profiles, got a list; "
            "add at least one cluster",
        ),
        (
            "clusters:\n  a:\n",
            "f.yaml:2: clusters.a: expected a mapping of settings, got null; "
            "add ssh_conn_id, cores_per_node, memory_per_node_mb and max_walltime",
        ),
        (
            f"clusters:\n  my cluster:\n{REQUIRED}",
            "f.yaml:2: clusters.my cluster: cluster name 'my cluster' (text) is not allowed; "
            "use letters, digits, '_', '.' and '-', starting with a letter or digit",
        ),
        (
            f"default: 3\nclusters:\n  a:\n{REQUIRED}",
            "f.yaml:1: default: expected a cluster name, got 3 (a whole number); name one of a",
        ),
        (
            f"clusters:\n  a:\n{REQUIRED}    ssh_conn_id: t\n",
            "f.yaml:7: clusters.a.ssh_conn_id: key given twice (first on line 3); keep one of them",
        ),
        (
            f"clusters:\n  a:\n{REQUIRED}    work_dir: ''\n    pool: [a]\n    poll_interval: fast\n",
            "f.yaml:7: clusters.a.work_dir: is empty; write a value or remove the key\n"
            "f.yaml:8: clusters.a.pool: expected text, got a list; write a single value\n"
            "f.yaml:9: clusters.a.poll_interval: expected a number of seconds, got 'fast' (text); "
            "write e.g. 30",
        ),
        (
            "clusters:\n  a:\n    ssh_conn_id: s\n    cores_per_node: 1\n    memory_per_node_mb: 1\n"
            "    max_walltime: 1.5\n",
            "f.yaml:6: clusters.a.max_walltime: expected a walltime, got 1.5 (a number); "
            "write D-HH:MM:SS, HH:MM:SS, MM:SS or whole minutes",
        ),
        (
            f"clusters:\n  a:\n{REQUIRED}    setup_lines:\n      - ok\n      - 3\n"
            "    container_runtime: docker\n",
            "f.yaml:9: clusters.a.setup_lines[1]: expected text, got 3 (a whole number); "
            "quote the shell line\n"
            "f.yaml:10: clusters.a.container_runtime: unknown container runtime 'docker' (text); "
            "use one of none, shifter, podman-hpc, podman, apptainer",
        ),
        (
            f"clusters:\n  a:\n{REQUIRED}    pilot_binding: pinned\n",
            "f.yaml:7: clusters.a.pilot_binding: expected cores or none, got 'pinned' (text); cores pins a "
            "bundle's instances to CPUs of their own, none lets the kernel place them",
        ),
    ],
)
def test_document_shape_errors(text: str, message: str) -> None:
    with pytest.raises(ClusterProfileError) as caught:
        parse_cluster_profiles(text, "f.yaml")
    assert str(caught.value) == message


# --- the profile in Python -----------------------------------------------------------------------


def test_profile_made_in_python_is_checked_too() -> None:
    with pytest.raises(ClusterProfileError) as caught:
        s3df_profile(name="bad name", cores_per_node=0, env={"X": None})
    assert str(caught.value).splitlines() == [
        "clusters.bad name: cluster name 'bad name' (text) is not allowed; "
        "use letters, digits, '_', '.' and '-', starting with a letter or digit",
        "clusters.bad name.cores_per_node: must be at least 1, got 0; write e.g. 128",
        "clusters.bad name.env.X: expected text or a number, got null; quote it",
    ]


def test_profile_is_frozen_and_hashable() -> None:
    profile = s3df_profile(env={"A": 1}, setup_lines=["module load x"])
    with pytest.raises(dataclasses.FrozenInstanceError):
        profile.cores_per_node = 4  # type: ignore[misc]
    assert profile.env == {"A": "1"}
    assert profile.setup_lines == ("module load x",)
    assert {profile: 1}[s3df_profile(env={"A": "1"}, setup_lines=("module load x",))] == 1
    assert dataclasses.replace(profile, max_walltime="1-00:00:00").max_walltime_s == 86400


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("1-00:00:00", 86400),
        ("2-12", 216000),
        ("02:00:00", 7200),
        ("2:00:00", 7200),
        ("30:00", 1800),
        ("00:30", 30),
        ("90", 5400),
        (90, 5400),
        (" 00:30:00 ", 1800),
    ],
)
def test_parse_walltime(value: str | int, seconds: int) -> None:
    assert parse_walltime(value) == seconds


@pytest.mark.parametrize("value", ["", "UNLIMITED", "0", 0, -5, "00:00:00", "00:00:01.5", "2h", True, 1.5])
def test_parse_walltime_refuses(value: object) -> None:
    with pytest.raises(ValueError, match="walltime|fractions"):
        parse_walltime(value)  # type: ignore[arg-type]


# --- limits --------------------------------------------------------------------------------------


def test_request_within_limits_passes(site: ClusterProfiles) -> None:
    s3df = site.get("s3df")
    s3df.check_request(cpus=1, mem_mb=8192, time_limit_s=7200)  # exactly at every limit
    s3df.check_request(cpus=1, mem_mb=None, time_limit_s=None, nodes=4)


def limit_error(profile: ClusterProfile, **request: int | None) -> str:
    with pytest.raises(ResourceLimitError) as caught:
        profile.check_request(**request)  # type: ignore[arg-type]
    return str(caught.value)


def test_walltime_limit(site: ClusterProfiles) -> None:
    assert limit_error(site.get("s3df"), cpus=1, mem_mb=1000, time_limit_s=3 * 3600) == (
        "walltime 3:00:00 exceeds the 2:00:00 maximum of cluster s3df (partition roma): "
        "ask for less, checkpoint, or pick another cluster"
    )
    assert limit_error(site.get("perlmutter"), cpus=1, mem_mb=None, time_limit_s=1801) == (
        "walltime 0:30:01 exceeds the 0:30:00 maximum of cluster perlmutter (partition regular): "
        "ask for less, checkpoint, or pick another cluster"
    )


def test_walltime_of_days_and_a_cluster_without_partition() -> None:
    profile = s3df_profile(partition=None, qos="regular", max_walltime="2-00:00:00")
    assert limit_error(profile, cpus=1, mem_mb=None, time_limit_s=3 * 86400 + 61) == (
        "walltime 3-00:01:01 exceeds the 2-00:00:00 maximum of cluster s3df (qos regular): "
        "ask for less, checkpoint, or pick another cluster"
    )
    assert limit_error(s3df_profile(partition=None), cpus=2, mem_mb=None, time_limit_s=None).startswith(
        "2 CPUs per node exceed the 1 cores of a node of cluster s3df: "
    )


def test_memory_limit(site: ClusterProfiles) -> None:
    assert limit_error(site.get("perlmutter"), cpus=1, mem_mb=4097, time_limit_s=None) == (
        "memory 4097 MB per node exceeds the 4096 MB of a node of cluster perlmutter (partition regular): "
        "ask for less, split the work, or pick another cluster"
    )
    high = s3df_profile(high_memory_partition="bigmem")
    assert limit_error(high, cpus=1, mem_mb=9000, time_limit_s=None) == (
        "memory 9000 MB per node exceeds the 8192 MB of a node of cluster s3df (partition roma): "
        "ask for less, use the high-memory partition bigmem, or pick another cluster"
    )


def test_cores_limit(site: ClusterProfiles) -> None:
    assert limit_error(site.get("perlmutter"), cpus=3, mem_mb=None, time_limit_s=None, nodes=2) == (
        "3 CPUs per node exceed the 2 cores of a node of cluster perlmutter (partition regular): "
        "ask for fewer, spread the work over more nodes, or pick another cluster"
    )


def test_every_limit_exceeded_is_named(site: ClusterProfiles) -> None:
    message = limit_error(site.get("s3df"), cpus=4, mem_mb=10000, time_limit_s=86400)
    assert [line.split(" exceed")[0] for line in message.splitlines()] == [
        "4 CPUs per node",
        "memory 10000 MB per node",
        "walltime 1-00:00:00",
    ]


@pytest.mark.parametrize(
    "request_",
    [
        {"cpus": 0, "mem_mb": None, "time_limit_s": None},
        {"cpus": 1, "mem_mb": 0, "time_limit_s": None},
        {"cpus": 1, "mem_mb": None, "time_limit_s": -1},
        {"cpus": 1, "mem_mb": None, "time_limit_s": None, "nodes": 0},
    ],
)
def test_nonsense_requests_are_programming_errors(
    site: ClusterProfiles, request_: dict[str, int | None]
) -> None:
    with pytest.raises(ValueError, match="must be positive"):
        site.get("perlmutter").check_request(**request_)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("cores", "node_mb", "mem_mb", "expected"),
    [
        (2, 4096, 1, 1),
        (2, 4096, 2048, 1),
        (2, 4096, 2049, 2),  # the "more cores for memory" rule on 2 GB/core nodes
        (2, 4096, 4096, 2),
        (128, 524288, 5000, 2),
        (128, 524288, 400000, 98),
        (3, 8192, 2731, 2),  # 2730.67 MB per core: no float rounding
        (3, 8192, 2730, 1),
        (1, 8192, 8192, 1),
    ],
)
def test_cores_for_memory(cores: int, node_mb: int, mem_mb: int, expected: int) -> None:
    assert s3df_profile(cores_per_node=cores, memory_per_node_mb=node_mb).cores_for_memory(mem_mb) == expected


def test_cores_for_memory_refuses_nothing() -> None:
    with pytest.raises(ValueError, match="positive"):
        s3df_profile().cores_for_memory(0)


# --- finding and caching the file ----------------------------------------------------------------


@pytest.mark.usefixtures("no_config")
def test_explicit_path_as_str_or_path(tmp_path: pathlib.Path) -> None:
    path = write_one_cluster(tmp_path / "c.yaml", 3)
    assert load_cluster_profiles(str(path)).get().cores_per_node == 3
    assert load_cluster_profiles(path).source == str(path)


@pytest.mark.usefixtures("no_config")
def test_explicit_path_wins_over_the_environment(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(CLUSTERS_FILE_ENV, str(write_one_cluster(tmp_path / "env.yaml", 5)))
    assert load_cluster_profiles(write_one_cluster(tmp_path / "given.yaml", 6)).get().cores_per_node == 6
    assert load_cluster_profiles().get().cores_per_node == 5


@pytest.mark.usefixtures("no_config")
def test_home_is_expanded(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    write_one_cluster(tmp_path / "c.yaml", 9)
    monkeypatch.setenv(CLUSTERS_FILE_ENV, "~/c.yaml")
    assert load_cluster_profiles().get().cores_per_node == 9


NOT_CONFIGURED = (
    "no cluster profile file is configured; set the environment variable DESC_CLUSTERS_FILE "
    "to the path of a YAML file of cluster profiles"
)


@pytest.mark.usefixtures("no_config")
def test_nothing_configured() -> None:
    with pytest.raises(ClusterProfileError) as caught:
        load_cluster_profiles()
    assert str(caught.value) == NOT_CONFIGURED


# Without airflow.configuration, only the environment names the file: tests/unit/test_config.py.


@pytest.mark.usefixtures("no_config")
def test_missing_file_names_where_the_name_came_from(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ClusterProfileError) as caught:
        load_cluster_profiles(missing)
    assert str(caught.value) == (
        f"{missing}: no such cluster profile file (named by the path given); "
        "create it or name an existing file"
    )
    monkeypatch.setenv(CLUSTERS_FILE_ENV, str(missing))
    with pytest.raises(ClusterProfileError) as caught:
        load_cluster_profiles()
    assert str(caught.value) == (
        f"{missing}: no such cluster profile file (named by $DESC_CLUSTERS_FILE); "
        "create it or name an existing file"
    )


def test_cache_returns_the_same_object_until_the_file_changes(tmp_path: pathlib.Path) -> None:
    path = write_one_cluster(tmp_path / "c.yaml", 2)
    first = load_cluster_profiles(path)
    assert load_cluster_profiles(path) is first
    stamp = path.stat().st_mtime_ns

    write_one_cluster(path, 4)  # same size: only the mtime tells
    os.utime(path, ns=(stamp + 10**9, stamp + 10**9))
    second = load_cluster_profiles(path)
    assert second is not first
    assert second.get().cores_per_node == 4

    write_one_cluster(path, 16)  # one byte longer, with the same mtime: the size tells
    os.utime(path, ns=(stamp + 10**9, stamp + 10**9))
    assert load_cluster_profiles(path).get().cores_per_node == 16


def test_an_invalid_file_is_not_cached(tmp_path: pathlib.Path) -> None:
    path = write_one_cluster(tmp_path / "c.yaml", 2)
    assert load_cluster_profiles(path).get().cores_per_node == 2
    path.write_text(ONE_CLUSTER.format(cores="x"), encoding="utf-8")
    os.utime(path, ns=(1, 1))
    for _ in range(2):
        with pytest.raises(
            ClusterProfileError, match=r"c\.yaml:4: clusters\.one\.cores_per_node: expected a whole"
        ):
            load_cluster_profiles(path)
    write_one_cluster(path, 3)
    assert load_cluster_profiles(path).get().cores_per_node == 3


def test_profiles_survive_pickling(full: ClusterProfiles) -> None:
    # Executors and triggerers may hand profiles between processes.
    copy = pickle.loads(pickle.dumps(full))
    assert list(copy) == list(full)
    assert copy.get("s3df").env == {"OMP_NUM_THREADS": "1", "DESC_SITE": "slac"}
    assert copy.default_name == "perlmutter"


# --- maintenance windows by hand ------------------------------------------------------------------


def test_maintenance_windows_by_hand() -> None:
    text = (
        "clusters:\n  a:\n    ssh_conn_id: a\n    cores_per_node: 1\n    memory_per_node_mb: 1\n"
        "    max_walltime: 10\n    maintenance:\n"
        "      - {start: 2026-12-10T07:00:00-08:00, end: '2026-12-10T19:00:00-08:00'}\n"
    )
    profile = parse_cluster_profiles(text).get("a")
    (window,) = profile.maintenance_windows
    assert window.start == datetime(2026, 12, 10, 15, tzinfo=timezone.utc)
    assert window.end == datetime(2026, 12, 11, 3, tzinfo=timezone.utc)
    assert window.nodes is None and window.source == "the profile's maintenance window"
    assert hash(profile)
    assert parse_cluster_profiles(text.split("    maintenance")[0]).get("a").maintenance_windows == []


def test_bad_maintenance_windows(data_dir: pathlib.Path) -> None:
    f, message = bad(data_dir, "bad_maintenance.yaml")
    zone = "write e.g. '2026-12-10T07:00:00-08:00' or '2026-12-10T15:00:00Z'"
    assert message.splitlines() == [
        f"{f}:9: clusters.perlmutter.maintenance[1].start: 2026-12-10T07:00:00 has no time zone; {zone}",
        f"{f}:10: clusters.perlmutter.maintenance[2].start: cannot read 'next tuesday' (text) as a date and "
        f"time; {zone}",
        f"{f}:11: clusters.perlmutter.maintenance[3]: end 2026-12-11T07:00:00+00:00 is not after start "
        "2026-12-11T19:00:00+00:00; swap or fix them",
        f"{f}:12: clusters.perlmutter.maintenance[4].end: missing; add it",
        f"{f}:18: clusters.s3df.maintenance: expected a list of windows, got a mapping; write each as "
        "'- {start: 2026-12-10T07:00:00-08:00, end: 2026-12-10T19:00:00-08:00}'",
    ]
