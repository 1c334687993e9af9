"""Records for the nats dispatcher's tests, and the mark of those that need a nats-server."""

from __future__ import annotations

import pytest
from brokers.nats_server import nats_server_binary
from fleetwire.proto import vehicle_connectivity_pb2, vehicle_data_pb2
from fleetwire.server.records import Record


VIN = "5YJ3E1EA7KF000001"
T0 = 1_700_000_000
NS = "tesla_telemetry"

needs_server = pytest.mark.skipif(nats_server_binary() is None, reason="nats-server is not installed")


# -- records -------------------------------------------------------------------------


def vehicle_data(txid: str, soc: int = 80, vin: str = VIN) -> Record:
    message = vehicle_data_pb2.Payload(vin=vin)
    message.created_at.seconds = T0
    message.data.add(key=vehicle_data_pb2.Soc).value.int_value = soc
    return Record("V", vin, "vehicle_device", txid, "conn-1", message.SerializeToString(), message,
                  float(T0), T0 + 0.25, client_version="2026.2.3")


def connectivity(connection_id: str) -> Record:
    message = vehicle_connectivity_pb2.VehicleConnectivity(
        vin=VIN, connection_id=connection_id, status=vehicle_connectivity_pb2.CONNECTED)
    return Record("connectivity", VIN, "vehicle_device", connection_id, connection_id,
                  message.SerializeToString(), message, float(T0), float(T0))
