"""The metadata the reference attaches to a record (Kafka headers, Pub/Sub attributes).

One pure function of a `Record`, so every backend that carries metadata carries the same
keys with the same values: ``vin``, ``receivedat`` (milliseconds since the epoch),
``timestamp`` and ``version`` (always ``"0"``: the reference never sets them), ``txid``,
``txtype`` (the record type) and ``device_client_version`` (the vehicle's Version header).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fleetwire.server.records import Record

__all__ = ["KEYS", "metadata", "metadata_headers"]

KEYS = ("vin", "receivedat", "timestamp", "txid", "txtype", "version", "device_client_version")


def metadata(record: Record) -> dict[str, str]:
    """The reference's metadata of `record`, as text."""
    return {
        "vin": record.vin,
        "receivedat": str(int(record.received_at * 1000)),
        "timestamp": "0",
        "txid": record.txid,
        "txtype": record.record_type,
        "version": "0",
        "device_client_version": record.client_version,
    }


def metadata_headers(record: Record) -> list[tuple[str, bytes]]:
    """`metadata` as (name, UTF-8 bytes) pairs, the shape of Kafka message headers."""
    return [
        ("vin", record.vin.encode()),
        ("receivedat", str(int(record.received_at * 1000)).encode()),
        ("timestamp", b"0"),
        ("txid", record.txid.encode()),
        ("txtype", record.record_type.encode()),
        ("version", b"0"),
        ("device_client_version", record.client_version.encode()),
    ]
