"""The systemd-style install, as the README documents it, used by a non-root operator.

The shipped sysusers.d and tmpfiles.d snippets are applied to a scratch root
(`--root`, nothing on this machine changes). A venv in its `/opt/edgeopt`,
owned by root, runs the daemon as the `edgeopt` user they create (Group,
SupplementaryGroups and UMask as in the unit) and `edgeoptctl` as an operator
in the daemon's group, as an outsider, and as root.

The venv's interpreter is the system's Python 3.11 (the one `sudo python3 -m
venv /opt/edgeopt` would use); the dev venv's interpreter lives under /root,
which other users cannot enter. Its packages come from the dev venv through a
.pth file instead of `pip install`, which would need the network.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import stat
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml
from conftest import serve_plant, write_config

from simulators.plants import demo_plant

ROOT = Path(__file__).resolve().parent.parent
SYSTEM_PYTHON = Path(f"/usr/bin/python{sys.version_info.major}.{sys.version_info.minor}")
NOBODY = 65534

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs root"),
    pytest.mark.skipif(not SYSTEM_PYTHON.exists(), reason=f"needs {SYSTEM_PYTHON}"),
    pytest.mark.skipif(
        shutil.which("systemd-sysusers") is None or shutil.which("systemd-tmpfiles") is None,
        reason="needs systemd-sysusers and systemd-tmpfiles (make test installs them)",
    ),
]


@pytest.fixture
def scratch_root() -> Iterator[Path]:
    """A root directory other users can enter (pytest's tmp_path is private to root)."""
    path = Path(tempfile.mkdtemp(prefix="edgeopt-root-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def apply_snippets(root: Path) -> None:
    (root / "etc").mkdir()
    (root / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (root / "etc" / "group").write_text("root:x:0:\ndialout:x:20:\n")
    for tool, snippet, extra in (
        ("systemd-sysusers", "edgeopt.sysusers", []),
        ("systemd-tmpfiles", "edgeopt.tmpfiles", ["--create"]),
    ):
        text = (ROOT / "systemd" / snippet).read_text()
        result = subprocess.run(
            [tool, f"--root={root}", *extra, "-"], input=text, capture_output=True, text=True
        )
        assert result.returncode == 0, f"{tool}: {result.stderr}"


def ids(root: Path) -> tuple[dict[str, int], dict[str, int]]:
    users = {
        line.split(":")[0]: int(line.split(":")[2])
        for line in (root / "etc" / "passwd").read_text().splitlines()
    }
    groups = {
        line.split(":")[0]: int(line.split(":")[2])
        for line in (root / "etc" / "group").read_text().splitlines()
    }
    return users, groups


def opt_venv(root: Path) -> Path:
    """`python3 -m venv /opt/edgeopt`, with edgeopt's console scripts, owned by root."""
    venv = root / "opt" / "edgeopt"
    subprocess.run([str(SYSTEM_PYTHON), "-m", "venv", "--without-pip", str(venv)], check=True)
    site = venv / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}"
    dev_site = sysconfig.get_paths()["purelib"]
    (site / "site-packages" / "edgeopt-dev.pth").write_text(f"{ROOT}\n{dev_site}\n")
    for name, module in (("edgeopt", "edgeopt.cli"), ("edgeoptctl", "edgeopt.control.client")):
        script = venv / "bin" / name
        script.write_text(
            f"#!{venv}/bin/python\nimport sys\nfrom {module} import main\nsys.exit(main())\n"
        )
        script.chmod(0o755)
    return venv


def as_user(uid: int, gid: int, groups: list[int], umask: int = 0o022) -> Callable[[], None]:
    def drop() -> None:
        os.setgroups(groups)
        os.setgid(gid)
        os.setuid(uid)
        os.umask(umask)

    return drop


def mode(path: Path) -> tuple[str, int, int]:
    info = path.stat()
    return oct(stat.S_IMODE(info.st_mode)), info.st_uid, info.st_gid


async def test_an_operator_in_the_daemons_group_runs_edgeoptctl(scratch_root: Path):
    root = scratch_root
    apply_snippets(root)
    users, groups = ids(root)
    uid, gid = users["edgeopt"], groups["edgeopt"]
    assert "edgeopt-admin" in groups
    # What tmpfiles.d made: the group may enter the runtime, state and config dirs.
    assert mode(root / "run" / "edgeopt") == ("0o750", uid, gid)
    assert mode(root / "var" / "lib" / "edgeopt") == ("0o750", uid, gid)
    assert mode(root / "etc" / "edgeopt") == ("0o750", 0, gid)
    unit = (ROOT / "systemd" / "edgeopt.service").read_text()
    for line in ("User=edgeopt", "Group=edgeopt", "SupplementaryGroups=dialout", "UMask=0007"):
        assert line in unit.splitlines()

    venv = opt_venv(root)
    sock = root / "run" / "edgeopt" / "edgeopt.sock"
    plant = demo_plant()
    async with serve_plant(plant) as server:
        made = write_config(plant, server, root / "etc" / "edgeopt")
        config = yaml.safe_load(made.read_text())
        # socket_group is the daemon's own group here (`edgeopt` in the README): the
        # scratch root's group names mean nothing to this machine, its gids do.
        config["daemon"].update(state_dir=str(root / "var/lib/edgeopt"), socket=str(sock))
        config["daemon"].pop("socket_group", None)
        path = root / "etc" / "edgeopt" / "edgeopt.yaml"
        made.rename(path)
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        os.chown(path, 0, gid)  # install -m 0640 -g edgeopt
        path.chmod(0o640)

        daemon = await asyncio.create_subprocess_exec(
            str(venv / "bin" / "edgeopt"),
            "run",
            "--config",
            str(path),
            cwd=root / "var" / "lib" / "edgeopt",
            env={"PATH": "/usr/bin:/bin"},
            preexec_fn=as_user(uid, gid, [groups["dialout"]], umask=0o007),
            stderr=asyncio.subprocess.PIPE,
        )

        def ctl(who: Callable[[], None], *args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [str(venv / "bin" / "edgeoptctl"), "--socket", str(sock), *args],
                preexec_fn=who,
                env={"PATH": "/usr/bin:/bin"},
                capture_output=True,
                text=True,
                timeout=30,
            )

        operator = as_user(NOBODY, NOBODY, [gid])
        outsider = as_user(NOBODY, NOBODY, [])
        try:
            async with asyncio.timeout(30):
                while (await asyncio.to_thread(ctl, operator, "status")).returncode != 0:
                    assert daemon.returncode is None, (await daemon.communicate())[1].decode()
                    await asyncio.sleep(0.3)
            assert mode(sock) == ("0o660", uid, gid)
            status = await asyncio.to_thread(ctl, operator, "status")
            assert status.returncode == 0 and "devices 4" in status.stdout, status.stderr
            tags = await asyncio.to_thread(ctl, operator, "tags", "--device", "meter1", "--json")
            assert tags.returncode == 0 and '"meter1"' in tags.stdout, tags.stderr
            denied = await asyncio.to_thread(ctl, operator, "reload")
            assert denied.returncode == 1 and "forbidden" in denied.stderr
            away = await asyncio.to_thread(ctl, outsider, "status")
            assert away.returncode == 3 and "Permission denied" in away.stderr, away.stderr
            admin = await asyncio.to_thread(ctl, lambda: None, "reload")
            assert admin.returncode == 0, admin.stderr
        finally:
            if daemon.returncode is None:
                daemon.send_signal(signal.SIGTERM)
            _, err = await asyncio.wait_for(daemon.communicate(), 15)
        assert daemon.returncode == 0, err.decode()
        assert "Traceback" not in err.decode()
