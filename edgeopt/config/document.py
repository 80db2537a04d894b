"""A config file's YAML as plain data, with the line of every key and item.

To report `file:line: field: message`, the YAML is composed into nodes and
turned into dicts, lists and scalars here, recording where each mapping key
and sequence item is on the way.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from edgeopt.config.issues import ConfigIssue, Loc, dotted

__all__ = ["Built", "build"]


# libyaml composes about ten times faster than the pure-Python parser. The two
# classes share no base in the type stubs, hence Any.
_BaseLoader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _Loader(_BaseLoader):
    """The safe loader, resolving each distinct plain scalar's tag once.

    A plant's config repeats a few hundred distinct scalars ("1s", "input",
    "normal", ...) across 100k+ places, and PyYAML resolves each one with its
    Python regexes even under libyaml: at 10k tags that was a third of the
    time to load. The safe loader has no path resolvers, so a scalar's tag
    depends on its text and style alone.
    """

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        # An instance attribute over the method: libyaml's composer calls
        # `self.resolve` for every node, and the C-level cache answers it
        # without a Python frame (the cache goes with the loader).
        self.resolve = functools.lru_cache(maxsize=None)(super().resolve)


_MERGE_TAG = "tag:yaml.org,2002:merge"
# A cap on nodes built, aliases expanded each time: a "billion laughs" file
# must fail with an error, not eat the gateway's memory.
_MAX_NODES = 2_000_000


@dataclass
class Built:
    """A file's data (None when unreadable), its lines, and its YAML-level issues."""

    data: Any
    # Line of each mapping key and sequence item, by path.
    lines: dict[Loc, int]
    issues: list[ConfigIssue]
    # Paths whose value could not be read (it became None): schema errors
    # there would only repeat the YAML issue.
    unreadable: set[Loc] = dataclass_field(default_factory=set)


class _TooLarge(Exception):
    pass


def build(text: str, source: str) -> Built:
    """Parse `text` and build plain data from it, noting lines and YAML-level issues."""
    loader = _Loader(text)
    try:
        try:
            node = loader.get_single_node()
        except yaml.MarkedYAMLError as exc:
            return Built(None, {}, [_yaml_issue(source, exc)])
        except yaml.YAMLError as exc:  # e.g. a ReaderError for a control character
            return Built(None, {}, [ConfigIssue(source, None, "", f"invalid YAML: {exc}")])
        except RecursionError:
            return Built(None, {}, [ConfigIssue(source, None, "", "the YAML is nested too deep")])
        if node is None:
            return Built(None, {}, [])
        builder = _Builder(loader, source)
        try:
            data = builder.build(node, ())
        except _TooLarge:
            message = f"the YAML expands to more than {_MAX_NODES} values (aliases?)"
            return Built(None, {}, [ConfigIssue(source, None, "", message)])
        except RecursionError:
            return Built(None, {}, [ConfigIssue(source, None, "", "the YAML is nested too deep")])
        return Built(data, builder.lines, builder.issues, builder.unreadable)
    finally:
        loader.dispose()


def _yaml_issue(source: str, exc: yaml.MarkedYAMLError) -> ConfigIssue:
    mark = exc.problem_mark or exc.context_mark
    line = mark.line + 1 if mark is not None else None
    message = f"invalid YAML: {exc.problem or exc.context or 'syntax error'}"
    if exc.problem and exc.context:
        context = exc.context
        if exc.context_mark is not None and exc.context_mark.line + 1 != line:
            context += f" at line {exc.context_mark.line + 1}"
        message += f" ({context})"
    return ConfigIssue(source, line, "", message)


class _Builder:
    """Turns composed YAML nodes into dicts, lists and scalars.

    Unlike PyYAML's own constructor it records where each key and item is,
    reports duplicate keys, and insists that keys are strings.
    """

    def __init__(self, loader: Any, source: str) -> None:
        self._loader = loader
        self._source = source
        self._active: set[int] = set()  # ids of the collections being built, to catch cycles
        self._count = 0
        # Scalars already built, by (tag, text): all are immutable, so equal
        # ones can share one object (fewer objects to keep, and faster).
        self._scalars: dict[tuple[str, str], Any] = {}
        self.lines: dict[Loc, int] = {}
        self.issues: list[ConfigIssue] = []
        self.unreadable: set[Loc] = set()

    def _issue(self, loc: Loc, node: Node, message: str) -> None:
        self.issues.append(ConfigIssue(self._source, _line(node), dotted(loc), message))

    def build(self, node: Node, loc: Loc) -> Any:
        self._count += 1
        if self._count > _MAX_NODES:
            raise _TooLarge
        if isinstance(node, ScalarNode):
            try:
                return self._scalar(node)
            except yaml.YAMLError as exc:
                problem = getattr(exc, "problem", None) or str(exc)
                self._issue(loc, node, f"cannot read this value: {problem}")
                self.unreadable.add(loc)
                return None
        if id(node) in self._active:
            self._issue(loc, node, "an alias refers to itself")
            self.unreadable.add(loc)
            return None
        self._active.add(id(node))
        try:
            if isinstance(node, SequenceNode):
                items = []
                for index, item in enumerate(node.value):
                    self.lines[(*loc, index)] = _line(item)
                    items.append(self.build(item, (*loc, index)))
                return items
            if isinstance(node, MappingNode):
                return self._mapping(node, loc)
            self._issue(loc, node, "unsupported YAML node")  # pragma: no cover
            return None
        finally:
            self._active.discard(id(node))

    def _mapping(self, node: MappingNode, loc: Loc) -> dict[str, Any]:
        result: dict[str, Any] = {}
        # Merge keys (`<<: *defaults`) first, so keys written here override them.
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:
                sources = value_node.value if isinstance(value_node, SequenceNode) else [value_node]
                # Earlier sources win over later ones, as YAML specifies.
                for source in reversed(sources):
                    if isinstance(source, MappingNode):
                        result.update(self.build(source, loc))
                    else:
                        self._issue(loc, source, "'<<' needs a mapping or a list of mappings")
        first_line: dict[str, int] = {}
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:
                continue
            key = self._key(key_node, loc)
            if key is None:
                continue
            line = _line(key_node)
            if key in first_line:
                self._issue(
                    (*loc, key),
                    key_node,
                    f"duplicate key {key!r} (first at line {first_line[key]})",
                )
            else:
                first_line[key] = line
            # Like PyYAML, the last duplicate wins.
            self.lines[(*loc, key)] = line
            result[key] = self.build(value_node, (*loc, key))
        return result

    def _scalar(self, node: ScalarNode) -> Any:
        key = (node.tag, node.value)
        try:
            return self._scalars[key]
        except KeyError:
            value = self._scalars[key] = self._loader.construct_object(node, deep=True)
            return value

    def _key(self, node: Node, loc: Loc) -> str | None:
        if isinstance(node, ScalarNode):
            try:
                key = self._scalar(node)
            except yaml.YAMLError:
                key = None
            if isinstance(key, str):
                return key
            self._issue(loc, node, f"key {node.value!r} must be a string; quote it")
            return None
        self._issue(loc, node, "a key must be a plain string, not a list or mapping")
        return None


def _line(node: Node) -> int:
    return int(node.start_mark.line) + 1
