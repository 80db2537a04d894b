"""Load a YAML config file into a validated `Config`, or report every problem in it.

Each problem becomes a `ConfigIssue` that names the file, the line and the
field path (`edgeopt.yaml:42: devices[0].tags[3].min_interval: ...`). The
YAML is read into data with lines (`document`) and validated (`validation`)
in a forked child, so neither PyYAML nor pydantic loads in the daemon.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import math
import pickle
import sys
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from edgeopt.config.issues import ConfigError, ConfigIssue
from edgeopt.config.model import Config, TagConfig
from edgeopt.forked import ChildLost, ForkedWork, WorkFailed

__all__ = [
    "ConfigError",
    "ConfigIssue",
    "ConfigLoad",
    "check_config_main",
    "load_config",
    "parse_config",
]


def load_config(path: str | Path, *, isolated: bool = False) -> Config:
    """Read and validate a config file.

    With `isolated`, as `ConfigLoad(path).result()`: parsed in a forked child.

    Raises:
        ConfigError: the file cannot be read, is not valid YAML, or breaks the schema.
    """
    if isolated:
        return ConfigLoad(path).result()
    return parse_config(_read(path), str(path))


def parse_config(text: str, source: str = "<string>") -> Config:
    """Validate a config given as YAML text; `source` names it in errors and in `Config.source`.

    Raises:
        ConfigError: the text is not valid YAML or breaks the schema.
    """
    with _gc_paused():
        data = _validated(text, source)
    gc.collect()  # the parse's temporaries hold cycles (nodes, the loader)
    return _unpickled(data)


class ConfigLoad:
    """A config file parsed and validated in a forked child while the caller goes on.

    The daemon starts one before it imports the rest of itself, so the two
    overlap on a gateway's cores, and only the finished config comes back:
    none of the parse's temporaries ever occupy (and fragment) the daemon's
    own heap (at 10k tags, 13 MB of RSS for the config instead of 34 MB).
    Where no child can be forked, the file is parsed here, at once.

    Raises:
        ConfigError: (at once) the file cannot be read.
    """

    def __init__(self, path: str | Path) -> None:
        self.source = str(path)
        self._text = _read(path)
        text, source = self._text, self.source

        def work() -> Iterator[tuple[bool, Any]]:
            try:
                with _gc_paused():
                    data = _validated(text, source)
            except ConfigError as exc:
                yield False, exc.issues
            else:
                yield True, data

        self._child: ForkedWork[tuple[bool, Any]] | None = ForkedWork(work)

    def result(self) -> Config:
        """The config; waits for the child.

        Raises:
            ConfigError: the YAML is not valid or breaks the schema.
        """
        child, self._child = self._child, None
        # The text is not kept: the caller may hold this object as long as it runs.
        text, self._text = self._text, ""
        if child is None:
            raise RuntimeError("ConfigLoad.result() was called twice")
        try:
            ((ok, payload),) = child.items_now()
        except (ChildLost, WorkFailed):
            # The child failed unexpectedly: parse here, where the error shows.
            return parse_config(text, self.source)
        if not ok:
            raise ConfigError(payload)
        return _unpickled(typing.cast(bytes, payload))


def _read(path: str | Path) -> str:
    try:
        # utf-8-sig: editors on Windows like to start files with a BOM.
        return Path(path).read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigError(
            [ConfigIssue(str(path), None, "", f"cannot read the file: {reason}")]
        ) from None


def _unpickled(data: bytes) -> Config:
    # The config comes out of a pickle round trip (~0.1 s at 10k tags), built
    # anew once every temporary of the parse is gone. Built among the parse's
    # far larger temporaries (nodes, marks, the data with its lines), its
    # objects would pin the allocator's arenas they share with them: at 10k
    # tags about 80 MB that the daemon would keep for its whole life.
    with _gc_paused():
        config = typing.cast(Config, pickle.loads(data))
    _share_numbers(config)
    return config


_TAG_FIELDS = tuple(f.name for f in dataclasses.fields(TagConfig))


def _share_numbers(config: Config) -> None:
    """One object per distinct number in the tags' fields.

    A pickle carries each float and each int beyond the small ones as a
    value of its own: at 10k tags, 60k float objects (1.4 MB) for a handful
    of intervals, deadbands and scales.
    """
    shared: dict[tuple[type, float, float], float] = {}
    for device in config.devices:
        for tag in device.tags:
            for name in _TAG_FIELDS:
                value = getattr(tag, name)
                kind = type(value)
                if kind is float or (kind is int and not -5 <= value <= 256):
                    # The sign tells -0.0 from 0.0, which are equal as keys.
                    key = (kind, value, math.copysign(1.0, value))
                    one = shared.setdefault(key, value)
                    if one is not value:
                        object.__setattr__(tag, name, one)  # frozen: set before anyone reads it


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """No cyclic collections while a parse builds 100k+ objects that all live on.

    Each automatic collection would walk every object built so far: at 10k
    tags, loading took 1.6-1.8 s with them and 0.7-1.0 s without.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _validated(text: str, source: str) -> bytes:
    """The valid config of `parse_config`, pickled; or ConfigError."""
    # PyYAML and pydantic: only in the process that parses (the forked child).
    from edgeopt.config.document import build
    from edgeopt.config.validation import validated_config

    built = build(text, source)
    issues = list(built.issues)
    data = built.data
    if data is None:
        if not issues:
            issues.append(ConfigIssue(source, None, "", "the config is empty"))
        raise ConfigError(issues)
    if not isinstance(data, dict):
        message = "the top level must be a mapping of sections (daemon:, devices:, ...)"
        raise ConfigError([*issues, ConfigIssue(source, 1, "", message)])

    config = validated_config(data, source, built.lines, built.unreadable, issues)
    return pickle.dumps(config, pickle.HIGHEST_PROTOCOL)


def check_config_main(path: str | Path) -> int:
    """`edgeopt check-config FILE`: print `ok` and return 0, or print the issues and return 2."""
    try:
        load_config(path)
    except ConfigError as exc:
        for issue in exc.issues:
            print(issue, file=sys.stderr)
        return 2
    print("ok")
    return 0
