"""edgeopt: a self-optimizing Modbus polling daemon for Linux edge gateways."""

__version__ = "0.1.0"

__all__ = ["__version__"]
