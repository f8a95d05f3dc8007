"""Two versions of a workflow side by side: DAG ids that carry the version, and what each run records."""

from __future__ import annotations

import hashlib
import pathlib
from typing import Any

import pytest

from airflow_desc.exceptions import WorkflowSpecError
from airflow_desc.workflow.graph import dag_id_for
from airflow_desc.workflow.registry import workflow_for
from airflow_desc.workflow.render import load_workflow_dags
from airflow_desc.workflow.spec import parse_spec
from tests.specs import spec_text

MINI = spec_text("mini")


def versions(tmp_path: pathlib.Path, *, side_by_side: bool) -> pathlib.Path:
    """Write Mini 3.1 and 3.2 (with variants) beside a DAG file; return the DAG file."""
    flag = "side_by_side: true\n" if side_by_side else ""
    variants = "variants:\n  small: {scale: 0.5}\n  large: {scale: 2.0}\n"
    for version in ("3.1", "3.2"):
        text = MINI.replace('version: "3.1"\n', f'version: "{version}"\n{flag}{variants}')
        (tmp_path / f"mini-{version}.yaml").write_text(text)
    return tmp_path / "mini_dags.py"


def test_side_by_side_versions_are_dags_of_their_own(tmp_path: pathlib.Path, clusters: Any) -> None:
    dag_file = versions(tmp_path, side_by_side=True)
    dags = load_workflow_dags(str(dag_file), "mini-3.1.yaml", "mini-3.2.yaml", clusters=clusters)
    assert sorted(dags) == ["Mini_v3.1_large", "Mini_v3.1_small", "Mini_v3.2_large", "Mini_v3.2_small"]
    assert {"version:3.2", "variant:small"} <= set(dags["Mini_v3.2_small"].tags)
    # Each DAG's records carry the workflow's version and the digest of the file that rendered it.
    for version in ("3.1", "3.2"):
        path = tmp_path / f"mini-{version}.yaml"
        batch = dags[f"Mini_v{version}_small"].task_dict["ingest"]
        expected = hashlib.sha256(path.read_bytes()).hexdigest()
        assert workflow_for(str(path.resolve())).spec_digest == expected
        assert (batch.recorder.workflow_version, batch.recorder.spec_digest) == (version, expected)
        bundle = dags[f"Mini_v{version}_small"].task_dict["processVisit.bundle"]
        assert bundle.partial_kwargs["spec_digest"] == expected


def test_without_side_by_side_two_versions_collide_and_the_error_says_what_to_do(
    tmp_path: pathlib.Path, clusters: Any
) -> None:
    dag_file = versions(tmp_path, side_by_side=False)
    with pytest.raises(WorkflowSpecError, match="DAG 'Mini_small' is rendered by .*mini-3.1.yaml too; .*"
                       "give both specs side_by_side: true"):  # fmt: skip
        load_workflow_dags(str(dag_file), "mini-3.1.yaml", "mini-3.2.yaml", clusters=clusters)


def test_a_version_in_a_dag_id_holds_only_what_a_dag_id_may() -> None:
    text = MINI.replace('version: "3.1"\n', 'version: "3.1+local"\nside_by_side: true\n')
    with pytest.raises(
        WorkflowSpecError, match=r"mini.yaml:4: version: side_by_side puts the version in the DAG"
    ):
        parse_spec(text, "mini.yaml")
    # Without side_by_side the version stays out of DAG ids and may hold it.
    spec = parse_spec(text.replace("side_by_side: true\n", ""), "mini.yaml")
    assert dag_id_for(spec) == "Mini"
    assert dag_id_for(parse_spec(text.replace("+local", ""), "mini.yaml")) == "Mini_v3.1"


def test_the_digest_is_the_file_s_sha256sum_whatever_its_line_ends(tmp_path: pathlib.Path) -> None:
    from airflow_desc.workflow.spec import load_spec

    path = tmp_path / "crlf.yaml"
    path.write_bytes(MINI.replace("\n", "\r\n").encode())
    assert load_spec(path).digest == hashlib.sha256(path.read_bytes()).hexdigest()


def test_one_dag_file_may_render_two_versions_inline(clusters: Any) -> None:
    from airflow_desc.workflow.render import render_dags

    dags: dict[str, Any] = {}
    for version in ("3.1", "3.2"):
        text = MINI.replace('version: "3.1"\n', f'version: "{version}"\nside_by_side: true\n')
        dags.update(render_dags(parse_spec(text, "inline_dags.py"), clusters=clusters))
    for dag_id, version in (("Mini_v3.1", "3.1"), ("Mini_v3.2", "3.2")):
        key = dags[dag_id].task_dict["ingest"].workflow_key
        assert key == f"inline_dags.py#Mini@{version}"
        assert workflow_for(key).spec.version == version  # each task finds its own version at run time
