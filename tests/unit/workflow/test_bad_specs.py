"""The malformed-spec corpus: each file of tests/data/specs/bad with its exact messages."""

from __future__ import annotations

import pathlib

import pytest

from airflow_desc.clusters import parse_cluster_profiles
from airflow_desc.exceptions import WorkflowSpecError
from airflow_desc.workflow import load_spec

BAD = pathlib.Path(__file__).parents[2] / "data" / "specs" / "bad"
CLUSTERS = parse_cluster_profiles((BAD.parents[1] / "clusters" / "site.yaml").read_text(), "clusters.yaml")

# Every message of every file, in order: "<file>:<line>: <dotted.path>: <what>; <what to do>".
BAD_SPECS: dict[str, list[str]] = {
    "bad_bundle.yaml": [
        (
            "bad_bundle.yaml:10: tasks.a.bundle: unknown bundle mode 'sometimes' (text); use one of "
            "auto, always, never"
        ),
        ("bad_bundle.yaml:16: tasks.b.bundle_size: a size is set but bundle is 'never'; remove one of them"),
        "bad_bundle.yaml:21: tasks.c.bundle_size: must be at least 1, got 0; write 1 or more",
    ],
    "bad_callable.yaml": [
        (
            "bad_callable.yaml:6: processes.a.callable: expected 'module.path:function', got "
            "'mypkg.setup.list_visits'; write the module, a colon, then the function"
        ),
        (
            "bad_callable.yaml:9: processes.b.callable: expected 'module.path:function', got 'mypkg:'; "
            "write the module, a colon, then the function"
        ),
        (
            "bad_callable.yaml:12: processes.c.callable: expected 'module.path:function', got "
            "'my-pkg:run'; write the module, a colon, then the function"
        ),
    ],
    "bad_dm_payload.yaml": [
        (
            "bad_dm_payload.yaml:17: tasks.perVisit.processes.processEimage.dm_command: missing; the spec "
            "says payload: dm, which runs each batch process's dm_command, and processEimage has none; add "
            "its real command line as dm_command, or set payload: emulate"
        ),
    ],
    "bad_checks.yaml": [
        (
            "bad_checks.yaml:9: processes.a.checks[0].glob: one check per item: exists and glob are "
            "both set; split them into two '- ' items"
        ),
        (
            "bad_checks.yaml:10: processes.a.checks[1]: no check given; write one of exists, non_empty, "
            "glob, command, log_lacks"
        ),
        (
            "bad_checks.yaml:12: processes.a.checks[2].min_count: only a glob check counts files; "
            "remove min_count or use glob"
        ),
        (
            "bad_checks.yaml:13: processes.a.checks[3].log_lacks: not a regular expression: missing ), "
            "unterminated subpattern at position 4; fix it, or put a backslash before special "
            "characters"
        ),
        "bad_checks.yaml:14: processes.a.checks[4].exits: unknown key; did you mean 'exists'?",
        (
            "bad_checks.yaml:14: processes.a.checks[4]: no check given; write one of exists, non_empty, "
            "glob, command, log_lacks"
        ),
    ],
    "bad_choices.yaml": [
        "bad_choices.yaml:3: payload: unknown payload 'real' (text); use one of emulate, dm",
        (
            "bad_choices.yaml:6: processes.a.type: unknown process type 'Batch' (text); did you mean "
            "'batch'? (one of batch, script)"
        ),
        (
            "bad_choices.yaml:7: processes.a.emulate.fail: unknown failure mode 'oom2' (text); did you "
            "mean 'oom'? (one of none, exit, traceback, missing, oom, timeout, segfault, disk-full)"
        ),
        (
            "bad_choices.yaml:9: processes.b.type: unknown process type 'shell' (text); use one of "
            "batch, script"
        ),
    ],
    "bad_command_and_emulate.yaml": [
        (
            "bad_command_and_emulate.yaml:7: processes.a.emulate: command and emulate are both set; "
            "keep one (the real DM command line goes in dm_command)"
        ),
    ],
    "bad_cycle.yaml": [
        (
            "bad_cycle.yaml:11: processes.b.depends_on[0]: dependency cycle: a -> c -> b -> a (each "
            "waits for the next); remove one of these dependencies"
        ),
    ],
    "bad_duplicates.yaml": [
        "bad_duplicates.yaml:10: processes.a: key given twice (first on line 7); keep one of them",
        (
            "bad_duplicates.yaml:14: tasks.setup: 'setup' is also the name of a process of this task; "
            "rename one"
        ),
        (
            "bad_duplicates.yaml:23: tasks.level1.tasks.W: task name 'W' is also used by the top-level "
            "task; task names must be unique: rename one"
        ),
    ],
    "bad_empty.yaml": [
        (
            "bad_empty.yaml:1: the file is empty; write name, version and processes (see "
            "airflow_desc.workflow.spec)"
        ),
    ],
    "bad_emulate.yaml": [
        ("bad_emulate.yaml:9: processes.a.emulate.cpu_seconds: must be at least 0, got -1; write 0 or more"),
        (
            "bad_emulate.yaml:10: processes.a.emulate.memory_mb: the payload holds 2500 MB but the "
            "process asks for 2000 MB, so it would always run out of memory; lower emulate.memory_mb or "
            "raise resources.memory_mb"
        ),
        ("bad_emulate.yaml:12: processes.a.emulate.fail_rate: must be at most 1, got 1.5; write 1 or less"),
        "bad_emulate.yaml:13: processes.a.emulate.output: unknown key; did you mean 'outputs'?",
    ],
    "bad_expected_streams.yaml": [
        (
            "bad_expected_streams.yaml:13: tasks.a.expected_streams: unknown variable 'scael'; did you "
            "mean 'scale'?"
        ),
        (
            "bad_expected_streams.yaml:18: tasks.b.expected_streams: a function call is not allowed "
            '(`len(visits)`); use numbers, names of numeric variables and + - * / //, e.g. "5115 * '
            'scale"'
        ),
        (
            "bad_expected_streams.yaml:23: tasks.c.expected_streams: variable 'sim' is text; use a "
            "numeric variable"
        ),
        (
            "bad_expected_streams.yaml:28: tasks.d.expected_streams: expected a number or an arithmetic "
            "expression, got a list; write e.g. 5115 * scale"
        ),
    ],
    "bad_missing.yaml": [
        'bad_missing.yaml:1: version: missing; add the task version, e.g. version: "1.0"',
        (
            "bad_missing.yaml:7: processes.a.type: missing; add type: batch (a job on a cluster) or "
            "type: script (a Python function on the worker)"
        ),
        (
            "bad_missing.yaml:10: tasks.sub.streams_from: missing; name the script process of the "
            "parent task that makes this sub-task's streams"
        ),
    ],
    "bad_names.yaml": [
        (
            "bad_names.yaml:1: name: name 'DC1 DM12' is not allowed; use letters, digits, '_' and '-', "
            "starting with a letter"
        ),
        ("bad_names.yaml:2: version: version '1.0 beta' is not allowed; write e.g. \"1.0\" (no spaces)"),
        (
            "bad_names.yaml:6: processes.process eimage: name 'process eimage' is not allowed; use "
            "letters, digits, '_' and '-', starting with a letter"
        ),
        (
            "bad_names.yaml:9: processes.setup.visits: name 'setup.visits' is not allowed; use letters, "
            "digits, '_' and '-', starting with a letter"
        ),
        (
            "bad_names.yaml:18: tasks.processVisit.stream_var: 'visit' is also a variable; rename the "
            "stream variable"
        ),
        (
            "bad_names.yaml:24: tasks.processVisit.tasks.processRaft.stream_var: name '2x' is not "
            "allowed; use letters, digits and '_', not starting with a digit"
        ),
    ],
    "bad_no_processes.yaml": [
        (
            "bad_no_processes.yaml:5: tasks.sub.processes: missing; a task needs at least one process "
            "(or a sub-task)"
        ),
        (
            "bad_no_processes.yaml:6: tasks.sub.streams_from: no process named 'setup' in the parent "
            "task; add a script process to the parent that returns the streams"
        ),
    ],
    "bad_not_mapping.yaml": [
        (
            "bad_not_mapping.yaml:1: expected a mapping, got a list; write name, version and processes "
            "(see airflow_desc.workflow.spec)"
        ),
    ],
    "bad_process_kinds.yaml": [
        (
            "bad_process_kinds.yaml:4: processes.a.command: missing; a batch process needs command (a "
            "shell command) or emulate (the DM-like payload)"
        ),
        (
            "bad_process_kinds.yaml:10: processes.b.callable: a batch process runs a shell command on a "
            "cluster and has no callable; use command or emulate, or make it type: script"
        ),
        (
            "bad_process_kinds.yaml:11: processes.c.callable: missing; a script process needs callable: "
            "'module.path:function'"
        ),
        (
            "bad_process_kinds.yaml:13: processes.c.command: a script process runs on the Airflow "
            "worker and has no command; remove it, or make the process type: batch"
        ),
        (
            "bad_process_kinds.yaml:14: processes.c.resources: a script process runs on the Airflow "
            "worker and has no resources; remove it, or make the process type: batch"
        ),
        (
            "bad_process_kinds.yaml:15: processes.d.callable: missing; a script process needs callable: "
            "'module.path:function'"
        ),
        (
            "bad_process_kinds.yaml:18: processes.d.deferrable: a script process runs on the Airflow "
            "worker and has no deferrable; remove it, or make the process type: batch"
        ),
    ],
    "bad_self_dependency.yaml": [
        (
            "bad_self_dependency.yaml:7: processes.a.depends_on[0]: 'a' waits for itself; remove it "
            "from depends_on"
        ),
    ],
    "bad_skip_if_code.yaml": [
        (
            "bad_skip_if_code.yaml:7: processes.a.skip_if: a function call is not allowed "
            "(`__import__('os').system('rm -rf /')`); use names of variables or upstream processes, "
            "constants, comparisons and and/or/not, e.g. \"dither == 'undithered'\""
        ),
        (
            "bad_skip_if_code.yaml:11: processes.b.skip_if: an attribute is not allowed "
            "(`a.__class__`); use names of variables or upstream processes, constants, comparisons and "
            "and/or/not, e.g. \"dither == 'undithered'\""
        ),
        (
            "bad_skip_if_code.yaml:15: processes.c.skip_if: a comprehension is not allowed (`[x for x "
            "in 'ab']`); use names of variables or upstream processes, constants, comparisons and "
            "and/or/not, e.g. \"dither == 'undithered'\""
        ),
        (
            "bad_skip_if_code.yaml:19: processes.d.skip_if: 'is' / 'is not' is not allowed (`a is "
            "None`); use names of variables or upstream processes, constants, comparisons and "
            "and/or/not, e.g. \"dither == 'undithered'\""
        ),
    ],
    "bad_skip_if_names.yaml": [
        (
            "bad_skip_if_names.yaml:12: processes.assemble.skip_if: 'makeTempExp' is not upstream of "
            "assemble; add it to depends_on or after to use its state"
        ),
        (
            "bad_skip_if_names.yaml:17: processes.wrapup.skip_if: unknown name 'asemble'; did you mean "
            "'assemble'?"
        ),
        (
            "bad_skip_if_names.yaml:17: processes.wrapup.skip_if: unknown name 'image_diferencing'; did "
            "you mean 'image_differencing'?"
        ),
        (
            "bad_skip_if_names.yaml:21: processes.report.skip_if: cannot read 'wrapup ==': invalid "
            "syntax; use names of variables or upstream processes, constants, comparisons and "
            "and/or/not, e.g. \"dither == 'undithered'\""
        ),
    ],
    "bad_streams_from.yaml": [
        (
            "bad_streams_from.yaml:12: tasks.processVisit.streams_from: 'serialingest' is a batch "
            "process; streams come from a script process (its callable returns them): name one: "
            "setupEimageVisits"
        ),
        (
            "bad_streams_from.yaml:16: tasks.processOther.streams_from: no process named "
            "'setupEimageVisit' in the parent task; did you mean 'setupEimageVisits'?"
        ),
    ],
    "bad_syntax.yaml": [
        (
            "bad_syntax.yaml:7: invalid YAML: expected <block end>, but found '<block mapping start>' "
            "(while parsing a block mapping on line 4); fix the YAML on this line or the one before "
            "(indentation, a missing ':', an unclosed quote)"
        ),
    ],
    "bad_templates.yaml": [
        (
            "bad_templates.yaml:11: processes.a.command: only a variable name may stand between {{ and "
            "}}, got 'repo | upper'; Jinja filters and expressions are not supported"
        ),
        (
            "bad_templates.yaml:14: processes.b.command: Jinja statements ({% ... %}) are not "
            "supported; use {{ name }} placeholders only"
        ),
        ("bad_templates.yaml:17: processes.c.command: '{{' at character 4 is not closed; write {{ name }}"),
        (
            "bad_templates.yaml:20: processes.d.command: {{ visit }} is the stream variable of "
            "processVisit, not known here; use it only in processVisit and the tasks below it"
        ),
        (
            "bad_templates.yaml:28: tasks.processVisit.processes.e.command: unknown variable {{ vist "
            "}}; did you mean {{ visit }}?"
        ),
        (
            "bad_templates.yaml:28: tasks.processVisit.processes.e.command: unknown variable {{ sensor "
            "}}; declare it under variables (known here: repo, visit)"
        ),
    ],
    "bad_shell_values.yaml": [
        "bad_shell_values.yaml:5: variables.label: 'run 1' does not match the pattern of label, '[a-z]+'",
        (
            "bad_shell_values.yaml:11: patterns.nosuch: not a variable or stream variable of this "
            "workflow; use one of dirs, label, repo, visits"
        ),
        (
            "bad_shell_values.yaml:12: patterns.dirs: not a regular expression: missing ), unterminated "
            "subpattern at position 0; fix it"
        ),
        (
            "bad_shell_values.yaml:16: processes.a.command: {{ repo }} stands inside double quotes; values "
            "are shell-quoted for you: remove the quotes around it"
        ),
        (
            "bad_shell_values.yaml:16: processes.a.command: {{ label }} stands inside single quotes; values "
            "are shell-quoted for you: remove the quotes around it"
        ),
        (
            "bad_shell_values.yaml:19: processes.b.command: {{ repo | raw }} puts repo's value into the "
            "shell unquoted; declare the shape of its values under patterns (e.g. patterns: {repo: "
            "'[A-Za-z0-9_.,=/-]+'}), or write {{ repo }}"
        ),
        (
            "bad_shell_values.yaml:21: processes.b.checks[0].exists: {{ repo | raw }}: '| raw' is only for "
            "shell text (a command, dm_command, or a check's command); write {{ repo }}"
        ),
    ],
    "bad_types.yaml": [
        (
            'bad_types.yaml:2: version: expected text, got 1.1 (a number); quote it: "1.1" (YAML reads '
            "an unquoted 1.10 as the number 1.1)"
        ),
        "bad_types.yaml:3: description: expected text, got a list; write text",
        "bad_types.yaml:8: processes.a.retries: must be at least 0, got -1; write 0 or more",
        (
            "bad_types.yaml:10: processes.a.resources.cpus: expected a whole number, got 'two' (text); "
            "write a whole number, e.g. 4"
        ),
        (
            "bad_types.yaml:11: processes.a.resources.memory_mb: expected a whole number, got 2.5 (a "
            "number); write a whole number, e.g. 4"
        ),
        (
            "bad_types.yaml:12: processes.a.resources.container: expected text, got 7 (a whole number); "
            "quote it: '7'"
        ),
        (
            "bad_types.yaml:13: processes.a.checks: expected a list, got '{{ repo }}/out.fits' (text); "
            "write a list: [a, b] or one '- ' item per line"
        ),
        # A mapping is the form with thresholds: {name: {min_success: 0.95}}.
        "bad_types.yaml:14: processes.a.depends_on.b: no process or sub-task named 'b' in this task; "
        "there is none to name",
    ],
    "bad_unknown_cluster.yaml": [
        (
            "bad_unknown_cluster.yaml:4: defaults.resources.cluster: no cluster named 'perlmuter' in "
            "clusters.yaml; did you mean 'perlmutter'?"
        ),
        (
            "bad_unknown_cluster.yaml:13: processes.b.resources.cluster: no cluster named 'cori' in "
            "clusters.yaml; known clusters: perlmutter, s3df"
        ),
    ],
    "bad_fallback_cluster.yaml": [
        (
            "bad_fallback_cluster.yaml:9: processes.a.resources.fallback_clusters: names 's3df', the "
            "process's own cluster; list only other clusters"
        ),
        (
            "bad_fallback_cluster.yaml:9: processes.a.resources.fallback_clusters[2]: no cluster named "
            "'nersc' in clusters.yaml; known clusters: perlmutter, s3df"
        ),
    ],
    "bad_unknown_dependency.yaml": [
        (
            "bad_unknown_dependency.yaml:10: processes.ingestRefCat.depends_on[0]: no process or "
            "sub-task named 'serialingst' in this task; did you mean 'serialingest'?"
        ),
        (
            "bad_unknown_dependency.yaml:14: processes.report.after[1]: no process or sub-task named "
            "'wrapUp' in this task; name a process or sub-task of the same task: ingestRefCat, "
            "serialingest"
        ),
    ],
    "bad_unknown_keys.yaml": [
        "bad_unknown_keys.yaml:3: varibles: unknown key; did you mean 'variables'?",
        "bad_unknown_keys.yaml:12: processes.a.depend_on: unknown key; did you mean 'depends_on'?",
        "bad_unknown_keys.yaml:13: processes.a.resource: unknown key; did you mean 'resources'?",
        "bad_unknown_keys.yaml:14: processes.a.resources.cpu: unknown key; did you mean 'cpus'?",
        ("bad_unknown_keys.yaml:14: processes.a.resources.memory: unknown key; did you mean 'memory_mb'?"),
        "bad_unknown_keys.yaml:18: tasks.sub.stream_vars: unknown key; did you mean 'stream_var'?",
    ],
    "bad_unquoted_placeholder.yaml": [
        (
            "bad_unquoted_placeholder.yaml:5: invalid YAML: a value starts with an unquoted '{{', which "
            'YAML reads as a mapping; quote the value, e.g. repo: "{{ root }}/repo"'
        ),
    ],
    "bad_variables.yaml": [
        (
            "bad_variables.yaml:4: variables.root: variables refer to each other in a cycle: root -> "
            "repo -> root; break it"
        ),
        (
            "bad_variables.yaml:6: variables.filters: expected text, a number or true/false, got a "
            "list; a variable holds one value"
        ),
        (
            "bad_variables.yaml:7: variables.1x: name '1x' is not allowed; use letters, digits and '_', "
            "not starting with a digit"
        ),
    ],
    "bad_variants.yaml": [
        (
            "bad_variants.yaml:8: variants.imsim-dithered.dithr: not a variable of this workflow; did "
            "you mean 'dither'?"
        ),
        (
            "bad_variants.yaml:9: variants.phosim-big.scale: expected a number like its default 1.0, "
            "got 'big' (text); write a number"
        ),
        (
            "bad_variants.yaml:10: variants.phosim dithered: variant name 'phosim dithered' is not "
            "allowed; use letters, digits, '_', '.' and '-' (it goes in a DAG id)"
        ),
        (
            "bad_variants.yaml:11: variants.nested.sim: expected text, a number or true/false, got a "
            "list; a variable holds one value"
        ),
    ],
    "bad_walltime.yaml": [
        (
            "bad_walltime.yaml:4: defaults.resources.walltime: cannot read '3 hours' as a walltime; "
            "write D-HH:MM:SS, HH:MM:SS, MM:SS or whole minutes"
        ),
        (
            "bad_walltime.yaml:9: processes.a.resources.walltime: walltime must be positive, got '0'; "
            "write D-HH:MM:SS, HH:MM:SS, MM:SS or whole minutes"
        ),
        (
            "bad_walltime.yaml:13: processes.b.resources.walltime: expected a walltime, got true (a "
            "boolean); write D-HH:MM:SS, HH:MM:SS, MM:SS or whole minutes"
        ),
    ],
}


def test_the_corpus_is_complete() -> None:
    files = sorted(p.name for p in BAD.glob("*.yaml"))
    assert files == sorted(BAD_SPECS)
    assert len(files) >= 20


@pytest.mark.parametrize("name", sorted(BAD_SPECS))
def test_bad_spec_message(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(BAD)  # messages name the file as given
    clusters = CLUSTERS if "cluster" in name else None
    with pytest.raises(WorkflowSpecError) as raised:
        load_spec(name, clusters=clusters)
    assert str(raised.value).splitlines() == BAD_SPECS[name]


def test_messages_name_the_file_as_given() -> None:
    path = BAD / "bad_self_dependency.yaml"
    with pytest.raises(WorkflowSpecError) as raised:
        load_spec(path)
    assert str(raised.value) == (
        f"{path}:7: processes.a.depends_on[0]: 'a' waits for itself; remove it from depends_on"
    )


def test_a_missing_file() -> None:
    with pytest.raises(
        WorkflowSpecError, match=r"nowhere\.yaml: cannot read the workflow spec: .*No such file"
    ):
        load_spec(BAD / "nowhere.yaml")


def test_clusters_are_only_checked_when_given() -> None:
    spec = load_spec(BAD / "bad_unknown_cluster.yaml")
    resources = spec.processes["b"].resources
    assert resources is not None and resources.cluster == "cori"
