"""docs/CONTRACT.md and the README stay in step with the code.

The README's quickstart commands run against the demo plant; the contract lists
every edgeoptctl command, its YAML example loads, and its example results carry
no key the daemon does not send.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import ctl, run_daemon, serve_plant, wait_for, write_config
from ports import DEMO_DEVICES, free_port_run

from edgeopt.config import load_config
from edgeopt.control.client import build_parser
from simulators.plants import demo_plant

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
CONTRACT = ROOT / "docs" / "CONTRACT.md"
EDGEOPTCTL = [sys.executable, "-m", "edgeopt.control.client"]


def fenced(text: str, lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", text, flags=re.S)


def quickstart_commands() -> list[str]:
    """The edgeoptctl lines of the README's Quickstart section."""
    section = README.read_text().split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    return [
        line.strip()
        for block in fenced(section, "sh")
        for line in block.splitlines()
        if line.strip().startswith(".venv/bin/edgeoptctl")
    ]


def test_readme_quickstart_commands_run_against_the_demo(tmp_path: Path):
    commands = quickstart_commands()
    assert len(commands) >= 4, "the README's quickstart lost its edgeoptctl examples"
    state = tmp_path / "demo"
    env = {
        **os.environ,
        "DEMO_SECONDS": "300",
        "DEMO_BASE_PORT": str(free_port_run(DEMO_DEVICES)),
        "DEMO_STATE": str(state),
    }
    demo = subprocess.Popen(
        [str(ROOT / "scripts" / "demo.sh")],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # one signal stops the script, the plant and the daemon
    )
    try:
        deadline = time.monotonic() + 60
        sock = state / "edgeopt.sock"
        while time.monotonic() < deadline:
            probe = subprocess.run(
                [*EDGEOPTCTL, "--socket", str(sock), "tags"], capture_output=True, timeout=30
            )
            if probe.returncode == 0 and demo.poll() is None:
                break
            assert demo.poll() is None, demo.communicate()[0]
            time.sleep(0.3)
        for line in commands:
            # The README's paths are the repository's; the test's demo lives in tmp.
            argv = shlex.split(line.replace("demo-state/", f"{state}/"))
            result = subprocess.run(
                [*EDGEOPTCTL, *argv[1:]], capture_output=True, text=True, timeout=30
            )
            assert result.returncode == 0, f"README: {line}\n{result.stderr}"
            assert result.stdout.strip(), f"README: {line} printed nothing"
    finally:
        os.killpg(demo.pid, signal.SIGTERM)
        demo.communicate(timeout=30)


def subcommands(parser: argparse.ArgumentParser, prefix: str = "") -> list[str]:
    out = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                nested = subcommands(sub, f"{prefix}{name} ")
                out.extend(nested or [f"{prefix}{name}"])
    return out


def test_the_contract_and_the_readme_list_every_edgeoptctl_command():
    contract, readme = CONTRACT.read_text(), README.read_text()
    commands = subcommands(build_parser())
    assert "status" in commands and "strategy list" in commands
    for command in commands:
        first, _, action = command.partition(" ")
        # `strategy enable|disable NAME` covers both actions.
        pattern = rf"`{first}( [^`]*)?{re.escape(action)}" if action else rf"`{first}[ `]"
        assert re.search(pattern, contract), f"docs/CONTRACT.md does not list {command!r}"
        assert re.search(pattern, readme), f"README.md does not list {command!r}"


def test_the_contract_yaml_example_is_a_valid_config(tmp_path: Path):
    (example,) = fenced(CONTRACT.read_text(), "yaml")
    path = tmp_path / "contract.yaml"
    path.write_text(example)
    config = load_config(path)
    assert [d.name for d in config.devices] == ["meter1"]


def example_results() -> dict[str, Any]:
    """`cmd`: followed by a ```json block, in the Result shapes section."""
    section = CONTRACT.read_text().split("## Result shapes", 1)[1]
    pairs = re.findall(r"^`([a-z ]+)`:\n\n```json\n(.*?)```", section, flags=re.M | re.S)
    return {name: json.loads(body) for name, body in pairs}


def missing_keys(doc: Any, actual: Any, path: str = "") -> list[str]:
    """Keys the example shows that the real result lacks (CAPITALS stand for any name)."""
    if isinstance(doc, dict) and isinstance(actual, dict):
        out = []
        for key, value in doc.items():
            if key.isupper():
                out.extend(m for v in actual.values() for m in missing_keys(value, v, path))
            elif key not in actual:
                out.append(f"{path}.{key}")
            else:
                out.extend(missing_keys(value, actual[key], f"{path}.{key}"))
        return out
    if isinstance(doc, list) and isinstance(actual, list):
        if doc and isinstance(doc[0], dict):
            return [m for item in actual for m in missing_keys(doc[0], item, f"{path}[]")]
        return []
    if isinstance(doc, dict) != isinstance(actual, dict) and actual is not None:
        return [f"{path} (a {type(actual).__name__}, not a {type(doc).__name__})"]
    return []


REQUESTS: dict[str, tuple[str, dict[str, Any]]] = {
    "query": ("query", {"tag": "meter1/voltage_l1", "since": "-5m"}),
    "strategy list": ("strategy", {"action": "list"}),
}


async def test_the_contract_result_examples_match_the_daemon(tmp_path: Path):
    examples = example_results()
    assert {"status", "devices", "tags", "query", "stats", "history"} <= set(examples)
    plant = demo_plant()
    async with serve_plant(plant) as server:
        config = load_config(write_config(plant, server, tmp_path))
        async with run_daemon(config) as daemon:
            await wait_for(lambda: all(t.state.ts for t in daemon.poller.tags.values()), 15)
            await daemon.store.flush()
            checked = []
            for name, example in examples.items():
                cmd, args = REQUESTS.get(name, (name, {}))
                reply = await ctl(config, cmd, **args)
                assert reply["ok"], (name, reply)
                result = reply["result"]
                assert type(result) is type(example), name
                assert missing_keys(example, result) == [], name
                if result:
                    checked.append(name)
            assert {"status", "devices", "tags", "query", "stats", "strategy list"} <= set(checked)


@pytest.mark.parametrize("prog", ["edgeopt.cli", "edgeopt.control.client"])
def test_help_points_at_the_contract(prog: str):
    result = subprocess.run(
        [sys.executable, "-m", prog, "--help"], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0
    assert "docs/CONTRACT.md" in result.stdout
    assert CONTRACT.is_file()
