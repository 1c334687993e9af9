"""The nats backend's subjects, headers and protocol commands: records in, bytes out.

Pure: no connection, so the dispatcher and its tests share one definition.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from fleetwire.server.metadata import metadata
from fleetwire.server.records import Record

__all__ = ["KINDS", "UNSAFE_TOKEN", "covers", "header_block", "headers", "hpub", "record_header_block",
           "subject", "token"]

KINDS: Mapping[str, str] = {"V": "data", "alerts": "alerts", "errors": "errors", "connectivity": "connectivity"}
"""The last subject token per record type."""

UNSAFE_TOKEN = re.compile(r"[\s.*>]")
_UNSAFE_HEADER = re.compile(r"[\r\n]")


def token(text: str) -> str:
    """One subject token: '.', wildcards and whitespace would split or widen the subject."""
    return UNSAFE_TOKEN.sub("_", text) if UNSAFE_TOKEN.search(text) else text or "_"


def subject(namespace: str, record: Record) -> str:
    """`<namespace>.<VIN>.<kind>` for `record`."""
    return f"{namespace}.{token(record.vin)}.{KINDS.get(record.record_type) or token(record.record_type)}"


def covers(pattern: str, subject: str) -> bool:
    """Whether stream subject `pattern` matches every subject that `subject` (which may
    itself hold wildcards) matches."""
    p, s = pattern.split("."), subject.split(".")
    for i, pt in enumerate(p):
        if pt == ">":
            return len(s) > i
        if i >= len(s):
            return False
        st = s[i]
        if pt == "*":
            if st == ">":
                return False
        elif pt != st:
            return False
    return len(p) == len(s)


def headers(record: Record, deduplicate: bool) -> dict[str, str]:
    """The reference's metadata as NATS headers (no line breaks: they end a header)."""
    out = metadata(record)
    for key, value in out.items():
        if "\r" in value or "\n" in value:
            out[key] = _UNSAFE_HEADER.sub(" ", value)
    if deduplicate and record.record_type != "connectivity":
        # Connectivity records of one connection share their txid (the connection id).
        out["Nats-Msg-Id"] = f"{out['vin']}:{record.record_type}:{out['txid']}"
    return out


def header_block(fields: Mapping[str, str]) -> bytes:
    """The NATS header block (``NATS/1.0``, one ``Key: value`` line each, a blank line)."""
    lines = "".join(f"{key}: {value}\r\n" for key, value in fields.items())
    return f"NATS/1.0\r\n{lines}\r\n".encode()


def _clean(text: str) -> str:
    return _UNSAFE_HEADER.sub(" ", text) if "\r" in text or "\n" in text else text


def record_header_block(record: Record, deduplicate: bool) -> bytes:
    """`header_block(headers(record, deduplicate))`, in one format: this runs per record."""
    vin, txid, kind = _clean(record.vin), _clean(record.txid), record.record_type
    block = (f"NATS/1.0\r\nvin: {vin}\r\nreceivedat: {int(record.received_at * 1000)}\r\ntimestamp: 0\r\n"
             f"txid: {txid}\r\ntxtype: {kind}\r\nversion: 0\r\n"
             f"device_client_version: {_clean(record.client_version)}\r\n")
    if deduplicate and kind != "connectivity":
        block += f"Nats-Msg-Id: {vin}:{kind}:{txid}\r\n"
    return (block + "\r\n").encode()


def hpub(subj: str, reply: str, block: bytes, payload: bytes) -> bytes:
    """One HPUB protocol command: what the client would write for this message."""
    size = len(block)
    line = f"HPUB {subj} {reply} {size} {size + len(payload)}\r\n" if reply else \
        f"HPUB {subj} {size} {size + len(payload)}\r\n"
    return b"".join((line.encode(), block, payload, b"\r\n"))
