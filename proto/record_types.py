"""The record types of the wire protocol, each with the protobuf message it carries.

A vehicle names the type in the envelope's `topic`; `connectivity` records are the
server's own. Every layer that names record types (the server's config, its decoder,
the operator's CRD) takes them from here.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from google.protobuf.message import Message

from fleetwire.proto import vehicle_alert_pb2, vehicle_connectivity_pb2, vehicle_data_pb2, vehicle_error_pb2

RECORD_TYPES: Mapping[str, type[Message]] = MappingProxyType({
    "V": vehicle_data_pb2.Payload,
    "alerts": vehicle_alert_pb2.VehicleAlerts,
    "errors": vehicle_error_pb2.VehicleErrors,
    "connectivity": vehicle_connectivity_pb2.VehicleConnectivity,
})
"""Record type → its message class, in the order the reference documents them."""

SERVER_RECORD_TYPES = frozenset({"connectivity"})
"""Produced by the server itself, never accepted from a vehicle."""
