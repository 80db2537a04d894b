"""Simulated Modbus plant: signals with ground truth, served over TCP and RTU.

- `simulators.signals`: deterministic piecewise-constant signals (value, values, change_times).
- `simulators.plant`: PlantTag / PlantDevice / Plant, and the edgeopt config for a plant.
- `simulators.plants`: demo_plant, large_plant, week_plant.
- `simulators.server`: PlantServer (pymodbus SimDevice servers), faults, RequestLog.
- `simulators.line`: PtyLine, an RS-485 line simulator between two ptys.
- `python -m simulators serve|config`: the command line (simulators.cli).
"""
