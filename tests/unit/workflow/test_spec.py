from __future__ import annotations

import textwrap

import pydantic
import pytest

from airflow_desc.emulate.payload import FAILURES
from airflow_desc.exceptions import WorkflowSpecError
from airflow_desc.workflow import spec as spec_module
from airflow_desc.workflow.spec import parse_spec
from airflow_desc.workflow.spec_expressions import Expression, ExpressionError
from airflow_desc.workflow.spec_models import FAILURE_MODES, WorkflowSpec
from airflow_desc.workflow.spec_templates import Template, TemplateError, expand_variables

SMALL = """\
name: W
version: "1.0"
variables:
  scale: 1.0
  sim: imsim
  root: "dc1/{{ sim }}"
  repo: "{{ root }}/repo"
  visits: 3
  level2: true
variants:
  phosim: {sim: phosim}
processes:
  setup:
    type: script
    callable: pkg.setup:visits
    kwargs: {count: "{{ visits }}", label: "v-{{ sim }}", flags: ["{{ level2 }}", 1]}
  ingest:
    type: batch
    command: ingest {{ repo }}
    depends_on: setup
    resources: {walltime: 90}
tasks:
  processVisit:
    streams_from: setup
    stream_var: visit
    expected_streams: 10 * scale
    processes:
      p:
        type: batch
        command: run {{ repo }} {{ visit }}
"""


def test_the_example_in_the_module_docs_loads() -> None:
    doc = spec_module.__doc__
    assert doc is not None
    example = textwrap.dedent(doc.split("::\n\n", 1)[1].split("\nKeys of the top level")[0])
    spec = parse_spec(example, "example.yaml")
    assert spec.name == "DC1-DM12" and spec.version == "1.16"
    assert spec.variant_names == ("imsim", "phosim")
    assert spec.tasks["processVisit"].processes["processEimage"].checks[1].kind == "log_lacks"


def test_a_small_spec_loads_with_its_conveniences() -> None:
    spec = parse_spec(SMALL, "small.yaml")
    assert spec.source == "small.yaml"
    ingest = spec.processes["ingest"]
    assert ingest.depends_on == ("setup",)  # a single name is a list of one
    assert ingest.resources is not None and ingest.resources.walltime == "1:30:00"  # minutes, as a clock
    assert spec.tasks["processVisit"].expected_streams == "10 * scale"
    assert [names for names, _ in spec.iter_tasks()] == [("W",), ("W", "processVisit")]


def test_specs_are_frozen() -> None:
    spec = parse_spec(SMALL, "small.yaml")
    with pytest.raises(pydantic.ValidationError):
        spec.version = "2.0"  # type: ignore[misc]


def test_variables_for_a_variant_and_a_run() -> None:
    spec = parse_spec(SMALL, "small.yaml")
    assert spec.variables_for()["repo"] == "dc1/imsim/repo"
    assert spec.variables_for("phosim")["repo"] == "dc1/phosim/repo"
    values = spec.variables_for("phosim", {"scale": 1, "root": "/scratch/{{ sim }}"})
    assert values["scale"] == 1 and values["repo"] == "/scratch/phosim/repo"


def test_variables_for_refuses_what_the_spec_does_not_know() -> None:
    spec = parse_spec(SMALL, "small.yaml")
    with pytest.raises(WorkflowSpecError) as raised:
        spec.variables_for(None, {"scael": 0.1, "visits": "many", "level2": 1})
    assert str(raised.value).splitlines() == [
        "small.yaml: run conf: scael: not a variable of W; did you mean 'scale'?",
        "small.yaml: run conf: visits: expected a whole number like its default 3, got 'many' (text); "
        "write a whole number",
        "small.yaml: run conf: level2: expected true or false like its default true, got 1 (a whole number); "
        "write true or false",
    ]
    with pytest.raises(
        WorkflowSpecError, match=r"^small.yaml: variants: no variant named 'phosm'; did you mean"
    ):
        spec.variables_for("phosm")
    with pytest.raises(WorkflowSpecError, match="cycle: root -> repo -> root"):
        spec.variables_for(None, {"root": "{{ repo }}"})


def test_a_spec_built_in_python_is_checked_too() -> None:
    data = {
        "name": "W",
        "version": "1",
        "processes": {"a": {"type": "batch", "command": "x", "depends_on": ["b"]}},
    }
    with pytest.raises(pydantic.ValidationError, match="processes.a.depends_on"):
        WorkflowSpec.model_validate(data)


def test_failure_modes_are_the_payloads() -> None:
    assert FAILURE_MODES == FAILURES


# --- templates -------------------------------------------------------------------------------------


def test_templates_render_and_keep_what_is_not_known_yet() -> None:
    template = Template.parse("processEimage.py {{repo}} --id visit={{ visit }} raft={{ raft }}")
    assert template.names == ("repo", "visit", "raft")
    assert (
        template.render({"repo": "r", "visit": 2201, "raft": "R22"})
        == "processEimage.py r --id visit=2201 raft=R22"
    )
    assert template.render({"repo": "r"}, keep_missing=True) == (
        "processEimage.py r --id visit={{ visit }} raft={{ raft }}"
    )
    with pytest.raises(TemplateError, match=r"no value for \{\{ visit \}\}"):
        template.render({"repo": "r"})
    assert Template.parse("{{ on }}").render({"on": True}) == "true"
    assert Template.parse("{{ n }}").render_native({"n": 3}) == 3
    assert Template.parse("x{{ n }}").render_native({"n": 3}) == "x3"
    assert Template.parse("echo ${HOME} {a}").names == ()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{{ repo | upper }}", "got 'repo | upper'; Jinja filters and expressions are not supported"),
        ("{{ }}", "got nothing"),
        ("ls {{ repo", "'{{' at character 4 is not closed"),
        ("{% if x %}", "Jinja statements"),
    ],
)
def test_templates_refuse_what_is_not_a_name(text: str, message: str) -> None:
    with pytest.raises(TemplateError, match=message.replace("|", r"\|").replace("{", r"\{")):
        Template.parse(text)


def test_variables_expand_in_order_and_refuse_cycles() -> None:
    assert expand_variables({"c": "{{ b }}/c", "b": "{{ a }}/b", "a": "a"}) == {
        "c": "a/b/c",
        "b": "a/b",
        "a": "a",
    }
    with pytest.raises(TemplateError, match="cycle: a -> b -> a"):
        expand_variables({"a": "{{ b }}", "b": "{{ a }}"})


# --- restricted expressions ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "values", "result"),
    [
        ("dither == 'undithered'", {"dither": "undithered"}, True),
        ("not image_differencing", {"image_differencing": True}, False),
        ("a in ('failed', 'terminated') or b != 'success'", {"a": "failed", "b": "success"}, True),
        ("a in ['failed'] and not b", {"a": "success", "b": False}, False),
        ("0 < scale <= 1", {"scale": 0.001}, True),
        ("visit not in (1, 2)", {"visit": 3}, True),
    ],
)
def test_conditions(text: str, values: dict[str, object], result: bool) -> None:
    assert Expression.parse(text, "condition").evaluate(values) is result


def test_skip_if_refuses_code() -> None:
    with pytest.raises(ExpressionError) as raised:
        Expression.parse("__import__('os')", "condition")
    assert str(raised.value) == (
        "a function call is not allowed (`__import__('os')`); use names of variables or upstream processes, "
        "constants, comparisons and and/or/not, e.g. \"dither == 'undithered'\""
    )


@pytest.mark.parametrize(
    ("text", "what"),
    [
        ("().__class__", "an attribute"),
        ("x[0]", "an index"),
        ("(lambda: 1)()", "a function call"),
        ("(y := 1)", "an assignment"),
        ("a if b else c", "an if-expression"),
        ("f'{a}'", "an f-string"),
        ("a is None", "'is' / 'is not'"),
        ("a + b", "arithmetic"),
        ("~a", "this operator"),
    ],
)
def test_conditions_refuse_everything_else(text: str, what: str) -> None:
    with pytest.raises(ExpressionError, match=f"^{what} is not allowed"):
        Expression.parse(text, "condition")


def test_numbers() -> None:
    expression = Expression.parse("5114.5 * scale", "number")
    assert expression.names == frozenset({"scale"})
    assert expression.evaluate({"scale": 0.001}) == pytest.approx(5.1145)
    assert Expression.parse("-(2 + 4) // 4 / 2", "number").evaluate({}) == -1.0
    for text in ("scale > 1", "'3'", "True", "len(x)"):
        with pytest.raises(ExpressionError, match="not allowed"):
            Expression.parse(text, "number")


def test_evaluation_errors_say_what() -> None:
    with pytest.raises(ExpressionError, match="no value for 'scale'"):
        Expression.parse("2 * scale", "number").evaluate({})
    with pytest.raises(ExpressionError, match="'<' not supported"):
        Expression.parse("a < 1", "condition").evaluate({"a": "x"})
    with pytest.raises(ExpressionError, match="cannot read 'a ==': invalid syntax"):
        Expression.parse("a ==", "condition")
