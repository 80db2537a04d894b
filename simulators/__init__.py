"""Simulated Modbus plant: signals with ground truth, served over TCP and RTU."""
