"""YAML that remembers where things are: plain data plus the line of any key path.

The cluster-profile loader and the workflow-spec loader both report errors as
``file:line: path: what is wrong; what to do``. This module gives them the data and
the lines, and turns YAML's own failures (syntax errors, duplicate keys) into the
same :class:`YamlProblem` records::

    located = LocatedYaml.load(text, "clusters.yaml")
    located.data                                         # plain dicts, lists, scalars
    located.line_of(("clusters", "perlmutter", "qos"))   # 1-based line of that key

Two departures from PyYAML's ``safe_load``, both to avoid silent surprises:

- a key given twice in one mapping is an error (PyYAML keeps the last one quietly);
- YAML 1.1 reads ``2:00:00`` as the base-60 integer 7200 and ``1:30.5`` as a float.
  Here such scalars stay text, as in YAML 1.2, so that a walltime written without
  quotes reaches the caller as written.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, SequenceNode

__all__ = [
    "KeyPath",
    "LocatedYaml",
    "YamlLoadError",
    "YamlProblem",
    "describe_value",
    "did_you_mean",
    "format_path",
]

#: A path into the data: mapping keys and list indices, e.g. ``("clusters", "s3df", "env", "X")``.
KeyPath = tuple[Hashable, ...]

_INT_TAG = "tag:yaml.org,2002:int"
_FLOAT_TAG = "tag:yaml.org,2002:float"
_MERGE_TAG = "tag:yaml.org,2002:merge"

# PyYAML's own int and float patterns without their base-60 ("sexagesimal") branch.
_INT_RE = re.compile(
    r"""^(?:[-+]?0b[0-1_]+
    |[-+]?0[0-7_]+
    |[-+]?(?:0|[1-9][0-9_]*)
    |[-+]?0x[0-9a-fA-F_]+)$""",
    re.X,
)
_FLOAT_RE = re.compile(
    r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+][0-9]+)?
    |\.[0-9][0-9_]*(?:[eE][-+][0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""",
    re.X,
)
_SYNTAX_HINT = "fix the YAML on this line or the one before (indentation, a missing ':', an unclosed quote)"


def describe_value(value: Any) -> str:
    """Say what a YAML value is, for error messages: ``'abc' (text)``, ``3 (a whole number)``, ``a list``."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"{str(value).lower()} (a boolean)"
    if isinstance(value, int):
        return f"{value} (a whole number)"
    if isinstance(value, float):
        return f"{value} (a number)"
    if isinstance(value, str):
        return f"{value!r} (text)"
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


def did_you_mean(word: str, choices: Iterable[str]) -> str | None:
    """Return the choice closest to ``word`` (a likely typo), or None."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return close[0] if close else None


def format_path(path: Sequence[Hashable]) -> str:
    """Write a key path the way messages show it: ``clusters.s3df.setup_lines[2]``.

    :param path: mapping keys and list indices.
    :return: the keys joined by dots, integer indices in brackets.
    """
    text = ""
    for part in path:
        if isinstance(part, int) and not isinstance(part, bool):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text


@dataclass(frozen=True)
class YamlProblem:
    """One thing wrong with a YAML file, at a line.

    :param line: 1-based line number.
    :param path: where in the data (empty for a syntax error).
    :param message: ``"<what is wrong>; <what to do>"``.
    """

    line: int
    path: KeyPath
    message: str

    def format(self, source: str) -> str:
        """Render as ``source:line: path: message`` (no path part when the path is empty).

        :param source: the file name to show.
        """
        where = f"{source}:{self.line}"
        if self.path:
            return f"{where}: {format_path(self.path)}: {self.message}"
        return f"{where}: {self.message}"


class YamlLoadError(ValueError):
    """The text is not YAML, or a mapping repeats a key.

    :param source: the file name, for messages.
    :param problems: what is wrong, one record per problem.
    :param partial: for duplicate keys only, the data as loaded anyway (the last of
        each repeated key wins), so that a caller can report its own problems too.
    """

    def __init__(
        self, source: str, problems: Sequence[YamlProblem], partial: LocatedYaml | None = None
    ) -> None:
        self.source = source
        self.problems = list(problems)
        self.partial = partial
        super().__init__("\n".join(p.format(source) for p in self.problems))


# One entry per key of a mapping node, after merge keys are expanded: (key, key node, value node).
_Entries = list[tuple[Any, Node, Node]]


class _LocatingConstructor:
    """Line bookkeeping and the YAML 1.2 number rules, shared by the C and the pure-Python loader."""

    # Set by the loader classes below (PyYAML's own parts).
    construct_object: Any
    flatten_mapping: Any

    yaml_implicit_resolvers = {
        first: [
            (tag, _INT_RE if tag == _INT_TAG else _FLOAT_RE if tag == _FLOAT_TAG else regexp)
            for tag, regexp in resolvers
        ]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }

    def _init_located(self) -> None:
        self.entries: dict[int, _Entries] = {}
        # (mapping node, key, key node of the repeat, key node of the first occurrence)
        self.duplicates: list[tuple[MappingNode, Any, Node, Node]] = []

    def construct_mapping(self, node: Node, deep: bool = False) -> dict[Hashable, Any]:
        if isinstance(node, MappingNode):
            # Repeats are looked for among the keys written here; a key that overrides
            # one brought in by a merge key ("<<: *defaults") is not a repeat.
            first: dict[Any, Node] = {}
            for key_node, _ in node.value:
                if key_node.tag == _MERGE_TAG:
                    continue
                key = self.construct_object(key_node, deep=True)
                if not isinstance(key, Hashable):
                    continue  # PyYAML reports unhashable keys itself, below
                if key in first:
                    self.duplicates.append((node, key, key_node, first[key]))
                else:
                    first[key] = key_node
            self.flatten_mapping(node)
            entries: _Entries = []
            for key_node, value_node in node.value:
                key = self.construct_object(key_node, deep=True)
                if isinstance(key, Hashable):
                    entries.append((key, key_node, value_node))
            self.entries[id(node)] = entries
        mapping: dict[Hashable, Any] = super().construct_mapping(node, deep=deep)  # type: ignore[misc]
        return mapping


class _Loader(_LocatingConstructor, yaml.SafeLoader):
    """The pure-Python loader: its error messages are the ones users see."""

    def __init__(self, stream: str) -> None:
        yaml.SafeLoader.__init__(self, stream)
        self._init_located()


# libyaml's parser (PyYAML's C extension) composes a spec ~10x faster than the pure-Python one, and
# every task process parses its DAG file, so every task loads its spec. Its error messages are
# worded differently, so a text it rejects is loaded again by _Loader for PyYAML's messages.
_CParser: Any = getattr(yaml, "CSafeLoader", None)


class _FastLoader(_LocatingConstructor, _CParser or yaml.SafeLoader):  # type: ignore[misc]
    def __init__(self, stream: str) -> None:
        super(_LocatingConstructor, self).__init__(stream)
        self._init_located()


def _line(node: Node) -> int:
    return int(node.start_mark.line) + 1


class LocatedYaml:
    """Loaded YAML data together with the line of every key.

    Build one with :meth:`load` or :meth:`load_file`.

    :param data: the plain Python data.
    :param source: the file name, for messages.
    """

    def __init__(self, data: Any, source: str, root: Node | None, entries: dict[int, _Entries]) -> None:
        self.data = data
        self.source = source
        self._root = root
        self._entries = entries

    @classmethod
    def load(cls, text: str, source: str = "<string>") -> LocatedYaml:
        """Load one YAML document.

        :param text: the YAML text.
        :param source: the file name to show in messages.
        :return: the data and its lines; an empty document gives ``data`` ``None``.
        :raises YamlLoadError: for a syntax error (one problem, with its line) or for
            repeated keys (one problem per repeat, with ``partial`` set).
        """
        fast = _FastLoader(text)
        try:
            root = fast.get_single_node()
            data = fast.construct_document(root) if root is not None else None
        except yaml.YAMLError:
            pass  # loaded again below, for PyYAML's own message
        else:
            return cls._checked(data, source, root, fast)
        finally:
            fast.dispose()
        try:
            loader = _Loader(text)
        except yaml.reader.ReaderError as exc:  # a character YAML does not allow
            line = text.count("\n", 0, exc.position) + 1
            problem = YamlProblem(line, (), f"invalid YAML: {exc.reason} (#x{exc.character:04x}); remove it")
            raise YamlLoadError(source, [problem]) from exc
        try:
            root = loader.get_single_node()
            data = loader.construct_document(root) if root is not None else None
        except yaml.MarkedYAMLError as exc:
            raise YamlLoadError(source, [_syntax_problem(exc)]) from exc
        finally:
            loader.dispose()
        return cls._checked(data, source, root, loader)

    @classmethod
    def _checked(cls, data: Any, source: str, root: Node | None, loader: _LocatingConstructor) -> LocatedYaml:
        located = cls(data, source, root, loader.entries)
        if loader.duplicates:
            paths = located._node_paths()
            problems = [
                YamlProblem(
                    _line(repeat),
                    (*paths.get(id(mapping), ()), key),
                    f"key given twice (first on line {_line(original)}); keep one of them",
                )
                for mapping, key, repeat, original in loader.duplicates
            ]
            raise YamlLoadError(source, sorted(problems, key=lambda p: p.line), partial=located)
        return located

    @classmethod
    def load_file(cls, path: str | os.PathLike[str]) -> LocatedYaml:
        """Read and load a UTF-8 YAML file; messages name it as given.

        :param path: the file.
        :raises OSError: if it cannot be read.
        :raises YamlLoadError: as :meth:`load`.
        """
        with open(path, encoding="utf-8") as stream:
            text = stream.read()
        return cls.load(text, os.fspath(path))

    def line_of(self, path: Sequence[Hashable]) -> int:
        """The 1-based line of a key or list item.

        :param path: mapping keys and list indices from the top, e.g.
            ``("clusters", "perlmutter", "partition")``; ``()`` is the document.
        :return: the line of the key (of the item, for an index); for a path that
            does not exist, the line of its nearest existing parent.
        """
        node = self._root
        if node is None:
            return 1
        line = _line(node)
        for part in path:
            child: tuple[Node, Node] | None = None
            if isinstance(node, MappingNode):
                # The last entry wins, as in the data (merged keys come first).
                for key, key_node, value_node in reversed(self._entries.get(id(node), [])):
                    if key == part:
                        child = key_node, value_node
                        break
            elif isinstance(node, SequenceNode) and isinstance(part, int) and 0 <= part < len(node.value):
                item = node.value[part]
                child = item, item
            if child is None:
                return line
            line, node = _line(child[0]), child[1]
        return line

    def problem(self, path: Sequence[Hashable], message: str) -> YamlProblem:
        """A problem at ``path``, on the line :meth:`line_of` finds.

        :param path: where in the data.
        :param message: ``"<what is wrong>; <what to do>"``.
        """
        return YamlProblem(self.line_of(path), tuple(path), message)

    def _node_paths(self) -> dict[int, KeyPath]:
        """The path of every node reachable from the root, by node id (the first path of an alias)."""
        if self._root is None:
            return {}
        paths: dict[int, KeyPath] = {id(self._root): ()}
        stack: list[Node] = [self._root]
        while stack:
            node = stack.pop()
            children: list[tuple[Hashable, Node]] = []
            if isinstance(node, MappingNode):
                children = [(key, value) for key, _, value in self._entries.get(id(node), [])]
            elif isinstance(node, SequenceNode):
                children = list(enumerate(node.value))
            for part, child in children:
                if id(child) not in paths:
                    paths[id(child)] = (*paths[id(node)], part)
                    stack.append(child)
        return paths


def _syntax_problem(exc: yaml.MarkedYAMLError) -> YamlProblem:
    mark = exc.problem_mark or exc.context_mark
    line = int(mark.line) + 1 if mark is not None else 1
    what = exc.problem or exc.context or "not valid YAML"
    if exc.problem and exc.context:
        context = exc.context
        if exc.context_mark is not None and int(exc.context_mark.line) + 1 != line:
            context += f" on line {int(exc.context_mark.line) + 1}"
        # PyYAML splits some messages in two: "expected a single document ..." + "but found ...".
        what = f"{context}, {exc.problem}" if exc.problem.startswith("but ") else f"{exc.problem} ({context})"
    return YamlProblem(line, (), f"invalid YAML: {what}; {_SYNTAX_HINT}")
