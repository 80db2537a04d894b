"""The peers section: the gateway's connector config mirrors edgeopt's, and a missing peer skips."""

from __future__ import annotations

from typing import Any

from benchmarks import peers
from benchmarks.peers import PeerUnavailable, measure_peers, tb_modbus_config
from benchmarks.report import Stamp
from benchmarks.sections import render_peers
from simulators.plant import Endpoint
from simulators.plants import large_plant


def test_every_tag_becomes_one_key_with_its_table_type_scale_and_bit() -> None:
    plant = large_plant(1000, 10)
    endpoints = {
        d.name: Endpoint("tcp", d.unit_id, host="127.0.0.1", port=20000 + i)
        for i, d in enumerate(plant.devices)
    }
    cfg = tb_modbus_config(plant, endpoints)
    slaves = cfg["master"]["slaves"]
    assert [s["deviceName"] for s in slaves] == [d.name for d in plant.devices]
    assert [s["port"] for s in slaves] == [20000 + i for i in range(len(plant.devices))]
    for slave, device in zip(slaves, plant.devices, strict=True):
        keys = {k["tag"]: k for k in slave["timeseries"]}
        assert len(keys) == len(device.tags)
        for tag in device.tags:
            key = keys[tag.name]
            assert key["address"] == tag.address
            assert (
                key["functionCode"]
                == {"coil": 1, "discrete": 2, "holding": 3, "input": 4}[tag.table]
            )
            if tag.type == "bool":
                assert key["type"] == "bits" and key["objectsCount"] == 1
                assert key.get("bit") == tag.bit
            else:
                assert key["objectsCount"] == tag.width
                assert key.get("multiplier", 1.0) == tag.scale
        assert slave["pollPeriod"] == 1000


def test_a_peer_that_cannot_run_is_skipped_with_its_reason(monkeypatch: Any) -> None:
    def unavailable(progress: Any = None) -> Any:
        raise PeerUnavailable("no network to install it")

    monkeypatch.setattr(peers, "tb_venv", unavailable)
    result = measure_peers(((1000, 10),), warmup=0, seconds=1)
    assert result == {"points": [], "skipped": "no network to install it"}
    text = render_peers({"stamp": Stamp.now(["peers"]).to_dict(), **result})
    assert "**Not measured:** no network to install it" in text
