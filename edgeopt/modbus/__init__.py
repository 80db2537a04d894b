"""edgeopt.modbus"""
