"""Northbound: tag changes published to MQTT brokers, through a persistent outbox.

`Northbound` is a sink of the poller, like storage. `payload` builds topics and
JSON (pure), `outbox` keeps undelivered messages in SQLite, `publisher` holds
one aiomqtt connection per target. aiomqtt (and paho, ssl) are imported only
when a target is configured: a daemon without MQTT never loads them.
"""

from edgeopt.northbound.outbox import Outbox
from edgeopt.northbound.payload import Batcher, Message, TagRoute
from edgeopt.northbound.sink import Northbound, NorthboundDiff

__all__ = ["Batcher", "Message", "Northbound", "NorthboundDiff", "Outbox", "TagRoute"]
