"""Tests for edgeopt.config: the case folders, the reference config, durations and sizes.

Each folder in tests/configs/ is a case: `config.yaml`, plus `expected.err`
when the config is invalid. Every line of `expected.err` must be found in its
own reported issue, and there must be no other issues, so a case pins the
exact line, field path and message of each error.
"""

from __future__ import annotations

import dataclasses
import gc
import math
import os
import typing
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from edgeopt import forked as forked_module
from edgeopt.config import (
    DEFAULT_COOLDOWNS,
    Config,
    ConfigError,
    ConfigIssue,
    ConfigLoad,
    DeviceConfig,
    TagConfig,
    check_config_main,
    format_duration,
    load_config,
    parse_config,
    parse_duration,
    parse_size,
)
from edgeopt.config import document as document_module
from edgeopt.config import loader as loader_module

TESTS = Path(__file__).parent
CASES = TESTS / "configs"
REFERENCE = TESTS.parent / "config" / "edgeopt.yaml"

MINIMAL = """\
devices:
  - name: meter1
    transport: tcp
    host: 192.0.2.10
    tags:
      - {name: power, table: input, address: 8, type: float32}
"""


def _case_dirs() -> list[Path]:
    return sorted(p for p in CASES.iterdir() if (p / "config.yaml").is_file())


# --- case folders ----------------------------------------------------------------


@pytest.mark.parametrize("case", _case_dirs(), ids=lambda p: p.name)
def test_config_case(case: Path) -> None:
    text = (case / "config.yaml").read_text(encoding="utf-8")
    expected_file = case / "expected.err"
    if not expected_file.exists():
        parse_config(text, "config.yaml")
        return
    expected = [line for line in expected_file.read_text(encoding="utf-8").splitlines() if line]
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "config.yaml")
    reported = [str(issue) for issue in caught.value.issues]
    unmatched = list(reported)
    for want in expected:
        match = next((got for got in unmatched if want in got), None)
        assert match is not None, f"{want!r} not reported; got:\n" + "\n".join(reported)
        unmatched.remove(match)
    assert not unmatched, "unexpected issues:\n" + "\n".join(unmatched)


def test_case_folders_cover_every_error_kind() -> None:
    # The brief's list of error kinds, each pinned by at least one case folder.
    required = {
        "unknown_key_tag",
        "wrong_type_address",
        "duplicate_device_names",
        "duplicate_tag_names",
        "overlap_registers",
        "overlap_same_bit",
        "valid_bits_share_register",
        "address_beyond_end",
        "min_interval_gt_max_staleness",
        "min_interval_gt_interval",
        "interval_gt_max_staleness",
        "coil_non_bool",
        "coil_with_bit",
        "bit_needs_bool",
        "bool_needs_bit",
        "string_needs_length",
        "string_on_discrete",
        "length_only_string",
        "tcp_without_host",
        "rtu_without_port",
        "rtu_port_number",
        "duration_zero",
        "duplicate_yaml_key",
        "yaml_syntax_error",
        "many_issues_reported",
    }
    assert required <= {p.name for p in _case_dirs()}


# --- the reference config ------------------------------------------------------


def test_reference_config_loads() -> None:
    config = load_config(REFERENCE)
    assert config.source == str(REFERENCE)
    assert [d.name for d in config.devices] == ["meter1", "drive1", "drive2", "heatpump"]
    assert config.storage.max_disk == 2_000_000_000
    assert config.metrics.listen == "127.0.0.1:9108"


def _model_keys(model: type[Any], seen: set[type[Any]]) -> set[str]:
    """Every field name of the section `model` and of the sections nested in it."""
    keys: set[str] = set()
    if model in seen:
        return keys
    seen.add(model)
    hints = typing.get_type_hints(model)
    for field in dataclasses.fields(model):
        keys.add(field.name)
        stack: list[Any] = [hints[field.name]]
        while stack:
            annotation = stack.pop()
            if isinstance(annotation, type) and dataclasses.is_dataclass(annotation):
                keys |= _model_keys(annotation, seen)
            stack.extend(typing.get_args(annotation))
    return keys


def _yaml_keys(data: Any) -> set[str]:
    if isinstance(data, dict):
        return set(data) | {k for v in data.values() for k in _yaml_keys(v)}
    if isinstance(data, list):
        return {k for v in data for k in _yaml_keys(v)}
    return set()


def test_reference_config_documents_every_key() -> None:
    # A new config key must be added to config/edgeopt.yaml, with its comment.
    documented = _yaml_keys(yaml.safe_load(REFERENCE.read_text(encoding="utf-8")))
    missing = _model_keys(Config, set()) - documented - {"source"}
    assert not missing, f"config/edgeopt.yaml lacks {sorted(missing)}"


# --- defaults and shapes -------------------------------------------------------


def test_minimal_config_gets_documented_defaults() -> None:
    config = parse_config(MINIMAL)
    assert config.source == "<string>"
    assert config.daemon.state_dir == Path("/var/lib/edgeopt")
    assert config.daemon.socket == Path("/run/edgeopt/edgeopt.sock")
    assert config.daemon.log_level == "info"
    assert config.daemon.socket_group is None and config.daemon.admin_group is None
    storage = config.storage
    assert (storage.hot_retention, storage.warm_retention, storage.cold_retention) == (
        86400.0,
        30 * 86400.0,
        365 * 86400.0,
    )
    assert (storage.cold_resolution, storage.max_disk, storage.flush_interval) == (60.0, None, 1.0)
    assert (storage.flush_rows, storage.archive) == (5000, True)
    optimizer = config.optimizer
    assert (optimizer.quick_every, optimizer.full_every, optimizer.evaluate_after) == (
        300.0,
        3600.0,
        600.0,
    )
    assert (optimizer.min_improvement, optimizer.max_fidelity_loss) == (0.10, 0.02)
    assert {n: s.cooldown for n, s in optimizer.strategies.items()} == DEFAULT_COOLDOWNS
    assert all(s.enabled and s.params == {} for s in optimizer.strategies.values())
    assert (config.resources.cpu_high, config.resources.memory_high) == (80.0, 85.0)
    assert (config.resources.disk_high, config.resources.temp_high) == (90.0, None)
    assert config.metrics.listen is None
    device = config.devices[0]
    assert (device.port, device.unit, device.timeout, device.retries) == (502, 1, 1.0, 1)
    assert (device.max_registers_per_read, device.max_bits_per_read, device.max_gap) == (
        125,
        2000,
        10,
    )
    tag = device.tags[0]
    assert (tag.interval, tag.min_interval, tag.max_staleness) == (1.0, 1.0, 10.0)
    assert (tag.scale, tag.offset, tag.deadband, tag.priority) == (1.0, 0.0, 0.0, "normal")
    assert (tag.byte_order, tag.word_order, tag.bit, tag.length) == ("big", "big", None, None)


def test_tag_timing_defaults_follow_interval() -> None:
    tag = TagConfig.model_validate(
        {"name": "t", "table": "holding", "address": 0, "type": "int16", "interval": "5s"}
    )
    assert (tag.min_interval, tag.max_staleness) == (5.0, 50.0)


def test_coil_type_defaults_to_bool() -> None:
    tag = TagConfig.model_validate({"name": "c", "table": "coil", "address": 7})
    assert tag.type == "bool" and (tag.width, tag.end) == (1, 8)


@pytest.mark.parametrize(
    ("fields", "width"),
    [
        ({"type": "int16"}, 1),
        ({"type": "float32"}, 2),
        ({"type": "uint64"}, 4),
        ({"type": "string", "length": 6}, 6),
        ({"type": "bool", "bit": 2}, 1),
    ],
)
def test_tag_width_and_end(fields: dict[str, Any], width: int) -> None:
    tag = TagConfig.model_validate({"name": "t", "table": "holding", "address": 10, **fields})
    assert (tag.width, tag.end) == (width, 10 + width)


@pytest.mark.parametrize(
    ("fields", "key"),
    [
        ({"transport": "tcp", "host": "192.0.2.1"}, "192.0.2.1:502"),
        ({"transport": "rtu_over_tcp", "host": "gw.local", "port": 4001}, "gw.local:4001"),
        ({"transport": "tcp", "host": "2001:db8::1", "port": 1502}, "[2001:db8::1]:1502"),
        ({"transport": "rtu", "port": "/dev/ttyUSB0"}, "/dev/ttyUSB0"),
    ],
)
def test_device_line_key(fields: dict[str, Any], key: str) -> None:
    tag = {"name": "t", "table": "input", "address": 0, "type": "int16"}
    device = DeviceConfig.model_validate({"name": "d", "tags": [tag], **fields})
    assert device.line_key == key


def test_strategies_merge_with_defaults() -> None:
    text = (
        "optimizer:\n  strategies:\n    cluster:\n      enabled: false\n"
        "      params: {k_max: 8, metric: corr, verbose: true, alpha: 0.5}\n" + MINIMAL
    )
    strategies = parse_config(text).optimizer.strategies
    assert set(strategies) == set(DEFAULT_COOLDOWNS)
    cluster = strategies["cluster"]
    assert not cluster.enabled and cluster.cooldown == DEFAULT_COOLDOWNS["cluster"]
    assert cluster.params == {"k_max": 8, "metric": "corr", "verbose": True, "alpha": 0.5}
    assert type(cluster.params["k_max"]) is int and type(cluster.params["verbose"]) is bool


def test_anchors_and_merge_keys() -> None:
    config = parse_config((CASES / "valid_anchors_and_merge" / "config.yaml").read_text())
    meter2 = config.devices[1]
    assert (meter2.name, meter2.host, meter2.timeout) == ("meter2", "192.0.2.11", 2.0)
    assert (meter2.tags[0].interval, meter2.tags[0].deadband) == (5.0, 0.5)


def test_config_is_frozen_and_comparable() -> None:
    config = parse_config(MINIMAL)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.devices[0].name = "other"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.devices[0].tags[0].address = 9  # type: ignore[misc]
    assert parse_config(MINIMAL) == config  # a reload can diff by ==


def test_models_enforce_rules_without_the_loader() -> None:
    with pytest.raises(ValidationError, match="min_interval: 5s is longer than interval 1s"):
        TagConfig.model_validate(
            {
                "name": "t",
                "table": "input",
                "address": 0,
                "type": "int16",
                "interval": 1,
                "min_interval": 5,
            }
        )


# --- loading, errors, the CLI helper -----------------------------------------------


def test_issue_and_error_formatting() -> None:
    first = ConfigIssue("a.yaml", 3, "devices[0].name", "bad")
    assert str(first) == "a.yaml:3: devices[0].name: bad"
    assert str(ConfigIssue("a.yaml", None, "devices", "missing")) == "a.yaml: devices: missing"
    assert str(ConfigIssue("a.yaml", 1, "", "invalid YAML")) == "a.yaml:1: invalid YAML"
    error = ConfigError([first, ConfigIssue("a.yaml", 9, "x", "y")])
    assert isinstance(error, ValueError)
    assert str(error) == "a.yaml:3: devices[0].name: bad\na.yaml:9: x: y"


def test_load_config_reads_files(tmp_path: Path) -> None:
    path = tmp_path / "edgeopt.yaml"
    path.write_text("\ufeff" + MINIMAL, encoding="utf-8")  # a BOM is tolerated
    assert load_config(path).source == str(path)
    with pytest.raises(ConfigError, match="cannot read the file"):
        load_config(tmp_path / "missing.yaml")


def test_check_config_main(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good, bad = tmp_path / "good.yaml", tmp_path / "bad.yaml"
    good.write_text(MINIMAL)
    bad.write_text(MINIMAL.replace("address: 8", "address: -1"))
    assert check_config_main(good) == 0
    assert capsys.readouterr().out == "ok\n"
    assert check_config_main(bad) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == (
        f"{bad}:6: devices[0].tags[0].address: must be greater than or equal to 0, got -1\n"
    )


def test_alias_expansion_is_capped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(document_module, "_MAX_NODES", 1000)
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 5)]
    with pytest.raises(ConfigError, match="expands to more than 1000 values"):
        parse_config("\n".join(lines))


def test_recursive_alias_is_an_error() -> None:
    with pytest.raises(
        ConfigError, match=r"^config.yaml:1: devices\[0\]: an alias refers to itself$"
    ):
        parse_config("devices: &d [*d]\n", "config.yaml")


# --- durations and sizes -------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("250ms", 0.25),
        ("10s", 10.0),
        ("5m", 300.0),
        ("2h", 7200.0),
        ("7d", 604800.0),
        ("1w", 604800.0),
        ("1.5s", 1.5),
        (".5s", 0.5),
        ("1h30m", 5400.0),
        ("1m30s500ms", 90.5),
        ("-10m", -600.0),
        ("+5s", 5.0),
        (" 3s ", 3.0),
        ("10", 10.0),
        ("0.1", 0.1),
        (10, 10.0),
        (2.5, 2.5),
        ("0s", 0.0),
    ],
)
def test_parse_duration(text: str | int | float, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    "text",
    ["", "10 sec", "5M", "1h30", "abc", "s", "1e400s", "--5s", True, None, [], float("nan")],
)
def test_parse_duration_rejects(text: Any) -> None:
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration(text)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (0.25, "250ms"),
        (10, "10s"),
        (90, "90s"),
        (300, "5m"),
        (86400, "1d"),
        (-600, "-10m"),
    ],
)
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


@given(st.floats(allow_nan=False, allow_infinity=False))
def test_duration_round_trips_through_format(seconds: float) -> None:
    assert parse_duration(format_duration(seconds)) == seconds


@given(
    st.integers(min_value=0, max_value=10**6),
    st.sampled_from([("ms", 0.001), ("s", 1), ("m", 60), ("h", 3600), ("d", 86400)]),
)
def test_duration_units(count: int, unit: tuple[str, float]) -> None:
    name, factor = unit
    assert math.isclose(parse_duration(f"{count}{name}"), count * factor, rel_tol=1e-12)
    assert parse_duration(f"-{count}{name}") == -parse_duration(f"{count}{name}")


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("2GB", 2_000_000_000),
        ("512MB", 512_000_000),
        ("10KiB", 10_240),
        ("1.5GiB", 1_610_612_736),
        ("10 kB", 10_000),
        ("1024", 1024),
        ("0B", 0),
        (4096, 4096),
    ],
)
def test_parse_size(text: str | int, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["2XB", "GB", "", "-1", -1, "1.5B", 1.5, True, "1e3"])
def test_parse_size_rejects(text: Any) -> None:
    with pytest.raises(ValueError, match="invalid size"):
        parse_size(text)


# --- the daemon's isolated load ----------------------------------------------------


def test_isolated_load_gives_the_same_config(tmp_path: Path) -> None:
    # The daemon parses in a forked child; what comes back must be the same config.
    assert load_config(REFERENCE, isolated=True) == load_config(REFERENCE)
    demo = TESTS.parent / "config" / "demo.yaml"
    assert load_config(demo, isolated=True) == load_config(demo)


@pytest.mark.parametrize("case", ["overlap_registers", "duplicate_yaml_key", "bad_yaml_tag"])
def test_isolated_load_reports_the_same_issues(case: str, tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text((CASES / case / "config.yaml").read_text(encoding="utf-8"), encoding="utf-8")
    with pytest.raises(ConfigError) as here:
        load_config(path)
    with pytest.raises(ConfigError) as isolated:
        load_config(path, isolated=True)
    assert isolated.value.issues == here.value.issues
    assert isolated.value.issues  # each case has at least one


def test_a_pending_load_lets_go_of_the_file_text_once_it_has_the_config(tmp_path: Path) -> None:
    # `edgeopt run` holds its ConfigLoad for the daemon's whole life: the YAML
    # text (1.7 MB at 10k tags) must not live as long.
    text = REFERENCE.read_text(encoding="utf-8")
    pending = ConfigLoad(REFERENCE)
    assert any(isinstance(v, str) and len(v) >= len(text) for v in gc.get_referents(pending))
    assert pending.result() == load_config(REFERENCE)
    assert not any(isinstance(v, str) and len(v) >= len(text) for v in gc.get_referents(pending))


def test_the_isolated_load_keeps_one_object_per_distinct_number(tmp_path: Path) -> None:
    # A pickle sends each float as a value of its own; 10k tags would come
    # back with 60k float objects for a handful of values.
    lines = [
        f"      - {{name: t{i}, table: holding, address: {1000 + i}, type: int16, interval: 2.5s,"
        f" deadband: 0.5, offset: {'-0.0' if i == 3 else '0.0'}}}"
        for i in range(6)
    ]
    path = tmp_path / "edgeopt.yaml"
    path.write_text(
        MINIMAL.split("    tags:")[0] + "    tags:\n" + "\n".join(lines) + "\n", encoding="utf-8"
    )
    tags = load_config(path, isolated=True).devices[0].tags
    assert len({id(t.interval) for t in tags}) == 1 and tags[0].interval == 2.5
    assert len({id(t.deadband) for t in tags}) == 1
    # -0.0 equals 0.0 but is not the same number to show: it keeps its own.
    assert [math.copysign(1.0, t.offset) for t in tags] == [1, 1, 1, -1, 1, 1]
    assert [t.address for t in tags] == [1000 + i for i in range(6)]


def test_isolated_load_falls_back_when_it_cannot_fork(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_fork() -> int:
        raise OSError("fork refused")

    monkeypatch.setattr(forked_module.os, "fork", no_fork)
    assert load_config(REFERENCE, isolated=True) == load_config(REFERENCE)


def test_isolated_load_parses_here_when_the_child_dies(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def dying(text: str, source: str) -> bytes:
        os._exit(3)  # in the child only: the parent parses with the real one

    monkeypatch.setattr(forked_module, "_lost", [])
    monkeypatch.setattr(loader_module, "_validated", dying)
    pending = ConfigLoad(REFERENCE)
    monkeypatch.undo()
    monkeypatch.setattr(forked_module, "_lost", [])
    assert pending.result() == load_config(REFERENCE)


def test_tags_are_slotted_records_that_survive_the_isolated_load(tmp_path: Path) -> None:
    # A tag keeps no dict of its own (1.2 KB a tag as a model, 10 MB at 10k
    # tags); it comes back whole from the forked parse, and a changed copy
    # leaves the original as it was. A copy made in code is checked by
    # model_validate, as the loader checks the file.
    path = tmp_path / "edgeopt.yaml"
    path.write_text(MINIMAL)
    config = load_config(path, isolated=True)
    power = config.devices[0].tags[0]
    assert not hasattr(power, "__dict__")
    assert power == parse_config(MINIMAL).devices[0].tags[0]
    changed = dataclasses.replace(power, unit="kW")
    assert changed.unit == "kW" and power.unit is None
    with pytest.raises(dataclasses.FrozenInstanceError):
        power.unit = "kW"  # type: ignore[misc]
    fields = {f.name: getattr(power, f.name) for f in dataclasses.fields(power)}
    assert TagConfig.model_validate(fields) == power
    with pytest.raises(ValidationError, match="greater than or equal to 0"):
        TagConfig.model_validate({**fields, "address": -1})
