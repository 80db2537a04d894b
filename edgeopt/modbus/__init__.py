"""Modbus access: transports, the codec and the read planner."""
