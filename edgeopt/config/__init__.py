"""The edgeopt config: YAML in, typed and validated objects out.

`load_config` reads a file and returns a frozen `Config`, or raises
`ConfigError` listing every problem as `file:line: field.path: message`.
"""

from edgeopt.config.durations import format_duration, parse_duration, parse_size
from edgeopt.config.loader import (
    ConfigError,
    ConfigIssue,
    ConfigLoad,
    check_config_main,
    load_config,
    parse_config,
)
from edgeopt.config.model import (
    DEFAULT_COOLDOWNS,
    Config,
    DaemonConfig,
    DeviceConfig,
    MetricsConfig,
    NorthboundTarget,
    OptimizerConfig,
    Priority,
    ResourcesConfig,
    StorageConfig,
    StrategyConfig,
    Table,
    TagConfig,
    Transport,
    WriteConfig,
)

__all__ = [
    "DEFAULT_COOLDOWNS",
    "Config",
    "ConfigError",
    "ConfigIssue",
    "ConfigLoad",
    "DaemonConfig",
    "DeviceConfig",
    "MetricsConfig",
    "NorthboundTarget",
    "OptimizerConfig",
    "Priority",
    "ResourcesConfig",
    "StorageConfig",
    "StrategyConfig",
    "Table",
    "TagConfig",
    "Transport",
    "WriteConfig",
    "check_config_main",
    "format_duration",
    "load_config",
    "parse_config",
    "parse_duration",
    "parse_size",
]
