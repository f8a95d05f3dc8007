from __future__ import annotations

import pathlib

import pytest
import yaml

from airflow_desc._yaml_lines import LocatedYaml, YamlLoadError, YamlProblem, format_path

SPEC = """\
# a comment first
campaign: dc2
tasks:
  - name: calexp
    time: 2:00:00
    env:
      A: 1
  - name: coadd
    files:
      - a.fits
      - b.fits
defaults: &defaults
  queue: regular
  mem: 2000
stage:
  <<: *defaults
  mem: 4000
"""


@pytest.fixture
def spec() -> LocatedYaml:
    return LocatedYaml.load(SPEC, "spec.yaml")


def test_data_is_plain_python(spec: LocatedYaml) -> None:
    assert spec.data == {
        "campaign": "dc2",
        "tasks": [
            {"name": "calexp", "time": "2:00:00", "env": {"A": 1}},
            {"name": "coadd", "files": ["a.fits", "b.fits"]},
        ],
        "defaults": {"queue": "regular", "mem": 2000},
        "stage": {"queue": "regular", "mem": 4000},
    }
    assert spec.source == "spec.yaml"


@pytest.mark.parametrize(
    ("path", "line"),
    [
        ((), 2),  # the document starts at its first key, after the comment
        (("campaign",), 2),
        (("tasks",), 3),
        (("tasks", 0), 4),
        (("tasks", 0, "name"), 4),
        (("tasks", 0, "time"), 5),
        (("tasks", 0, "env", "A"), 7),
        (("tasks", 1), 8),
        (("tasks", 1, "files", 1), 11),
        (("stage", "mem"), 17),  # the key written here overrides the merged one
        (("stage", "queue"), 13),  # a merged key: where the anchor defines it
    ],
)
def test_line_of(spec: LocatedYaml, path: tuple[object, ...], line: int) -> None:
    assert spec.line_of(path) == line


@pytest.mark.parametrize(
    ("path", "line"),
    [
        (("nope",), 2),
        (("tasks", 0, "nope"), 4),
        (("tasks", 1, "files", 7), 9),
        (("tasks", "name"), 3),  # a key into a list
        (("campaign", "x", "y"), 2),  # below a scalar
    ],
)
def test_line_of_missing_path_is_the_nearest_parent(
    spec: LocatedYaml, path: tuple[object, ...], line: int
) -> None:
    assert spec.line_of(path) == line


def test_problem_uses_line_of(spec: LocatedYaml) -> None:
    problem = spec.problem(["tasks", 0, "time"], "too long; ask for less")
    assert problem == YamlProblem(5, ("tasks", 0, "time"), "too long; ask for less")
    assert problem.format("spec.yaml") == "spec.yaml:5: tasks[0].time: too long; ask for less"
    assert YamlProblem(3, (), "bad; fix it").format("f.yaml") == "f.yaml:3: bad; fix it"


def test_empty_document() -> None:
    located = LocatedYaml.load("# only a comment\n", "empty.yaml")
    assert located.data is None
    assert located.line_of(("anything",)) == 1


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("2:00:00", "2:00:00"),  # YAML 1.1 would give 7200
        ("1:30", "1:30"),  # YAML 1.1 would give 90
        ("-1:30", "-1:30"),
        ("1:30.5", "1:30.5"),  # YAML 1.1 would give 90.5
        ("00:30:00", "00:30:00"),
        ("90", 90),
        ("-7", -7),
        ("0x1F", 31),
        ("0o17", "0o17"),  # YAML 1.1 has no 0o prefix; unchanged from PyYAML
        ("017", 15),
        ("1_000", 1000),
        ("1.5", 1.5),
        ("-0.5", -0.5),
        ("-.5", "-.5"),  # PyYAML's float needs a digit before the dot after a sign; unchanged
        (".inf", float("inf")),
        ("1e3", "1e3"),  # PyYAML needs a dot in a float; unchanged
        ("yes", True),
        ("~", None),
    ],
)
def test_scalars_are_yaml_1_1_without_base_60(text: str, value: object) -> None:
    assert LocatedYaml.load(f"v: {text}\n").data == {"v": value}


@pytest.mark.parametrize(
    "text",
    ["12", "-3", "0b101", "0x1F", "017", "1_000", "3.25", "-1.5e+3", ".nan", "-.inf", "null", "off", "x"],
)
def test_scalars_without_colons_read_as_pyyaml_reads_them(text: str) -> None:
    ours = LocatedYaml.load(f"v: {text}\n").data["v"]
    theirs = yaml.safe_load(f"v: {text}\n")["v"]
    assert type(ours) is type(theirs)
    assert ours == theirs or (ours != ours and theirs != theirs)  # nan


def test_duplicate_keys_are_all_reported_with_both_lines() -> None:
    text = "a: 1\nb:\n  c: 1\n  d: 2\n  c: 3\na: 4\nlist:\n  - x: 1\n    x: 2\n"
    with pytest.raises(YamlLoadError) as caught:
        LocatedYaml.load(text, "dup.yaml")
    assert str(caught.value) == (
        "dup.yaml:5: b.c: key given twice (first on line 3); keep one of them\n"
        "dup.yaml:6: a: key given twice (first on line 1); keep one of them\n"
        "dup.yaml:9: list[0].x: key given twice (first on line 8); keep one of them"
    )
    assert [p.path for p in caught.value.problems] == [("b", "c"), ("a",), ("list", 0, "x")]
    partial = caught.value.partial
    assert partial is not None
    assert partial.data == {"a": 4, "b": {"c": 3, "d": 2}, "list": [{"x": 2}]}
    assert partial.line_of(("b", "c")) == 5  # the value kept is the last one


def test_overriding_a_merged_key_is_not_a_duplicate() -> None:
    text = "base: &b {x: 1, y: 2}\nderived:\n  <<: *b\n  x: 3\n"
    assert LocatedYaml.load(text).data == {"base": {"x": 1, "y": 2}, "derived": {"x": 3, "y": 2}}


def test_equal_keys_of_different_types_are_duplicates() -> None:
    # 1 and 1.0 are the same dict key: the data would silently lose one.
    with pytest.raises(YamlLoadError, match=r"^f\.yaml:2: 1\.0: key given twice \(first on line 1\)"):
        LocatedYaml.load("1: a\n1.0: b\n", "f.yaml")


HINT = "fix the YAML on this line or the one before (indentation, a missing ':', an unclosed quote)"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a: 1\n b: 2\n", f"bad.yaml:2: invalid YAML: mapping values are not allowed here; {HINT}"),
        (
            "a:\n  - x\n  - [y\nb: 1\n",
            f"bad.yaml:4: invalid YAML: expected ',' or ']', but got ':' "
            f"(while parsing a flow sequence on line 3); {HINT}",
        ),
        (
            "a:\n\t- x\n",
            f"bad.yaml:2: invalid YAML: found character '\\t' that cannot start any token "
            f"(while scanning for the next token); {HINT}",
        ),
        (
            "a: 'open\nb: 1\n",
            f"bad.yaml:3: invalid YAML: found unexpected end of stream "
            f"(while scanning a quoted scalar on line 1); {HINT}",
        ),
        ("a: *nowhere\n", f"bad.yaml:1: invalid YAML: found undefined alias 'nowhere'; {HINT}"),
        (
            "a: 1\n---\nb: 2\n",
            f"bad.yaml:2: invalid YAML: expected a single document in the stream on line 1, "
            f"but found another document; {HINT}",
        ),
        (
            "a: 1\nb: [1]\n? [x]\n: 2\n",
            f"bad.yaml:3: invalid YAML: found unhashable key "
            f"(while constructing a mapping on line 1); {HINT}",
        ),
        (
            "a: 1\nb: \x07\n",
            "bad.yaml:2: invalid YAML: special characters are not allowed (#x0007); remove it",
        ),
    ],
)
def test_syntax_errors_name_the_line(text: str, message: str) -> None:
    with pytest.raises(YamlLoadError) as caught:
        LocatedYaml.load(text, "bad.yaml")
    assert str(caught.value) == message
    assert caught.value.partial is None
    assert len(caught.value.problems) == 1


def test_load_file_names_the_file_as_given(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "x.yaml"
    path.write_text("a:\n  b: 1\n  b: 2\n", encoding="utf-8")
    with pytest.raises(YamlLoadError, match=f"^{path}:3: a.b: key given twice"):
        LocatedYaml.load_file(path)
    path.write_text("a:\n  b: 1\n", encoding="utf-8")
    located = LocatedYaml.load_file(str(path))
    assert (located.source, located.data, located.line_of(("a", "b"))) == (str(path), {"a": {"b": 1}}, 2)


@pytest.mark.parametrize(
    ("path", "text"),
    [
        ((), ""),
        (("clusters",), "clusters"),
        (("clusters", "s3df", "env", "X"), "clusters.s3df.env.X"),
        (("clusters", "s3df", "setup_lines", 2), "clusters.s3df.setup_lines[2]"),
        (("tasks", 0, 1), "tasks[0][1]"),
        ((True,), "True"),
    ],
)
def test_format_path(path: tuple[object, ...], text: str) -> None:
    assert format_path(path) == text


WORKFLOWS = pathlib.Path(__file__).parents[2] / "dags" / "workflows"


def _key_paths(data: object, prefix: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    paths = [prefix]
    if isinstance(data, dict):
        for key, value in data.items():
            paths += _key_paths(value, (*prefix, key))
    elif isinstance(data, list):
        for index, value in enumerate(data):
            paths += _key_paths(value, (*prefix, index))
    return paths


@pytest.mark.parametrize(
    "text",
    [
        SPEC,
        *(p.read_text() for p in sorted(WORKFLOWS.glob("*.yaml"))),
    ],
)
def test_libyaml_loads_the_same_data_and_lines_as_pure_python(
    text: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Specs are composed by libyaml when PyYAML has it (7x faster: every task process loads its spec)."""
    from airflow_desc import _yaml_lines

    assert _yaml_lines._CParser is not None, "PyYAML without libyaml: specs load ~7x slower"
    fast = LocatedYaml.load(text, "s.yaml")
    monkeypatch.setattr(_yaml_lines, "_FastLoader", _yaml_lines._Loader)
    pure = LocatedYaml.load(text, "s.yaml")
    assert fast.data == pure.data
    paths = _key_paths(pure.data)
    assert [fast.line_of(p) for p in paths] == [pure.line_of(p) for p in paths]
