"""`fleetwire vehicles <resource>`: the per-vehicle table, read from the cluster.

The operator keeps one record per vehicle in ConfigMaps `<resource>-vehicles-<n>` (the
resource's own status holds only the counts, so that 10,000 vehicles never reach the
object size limit). This reads them with the `kubernetes` client and the current
kubeconfig, and prints VIN, state, firmware, reason, last push, the `ca` the vehicle holds
(its fingerprint's start: which vehicles a rotation still waits for), the configured fields
the vehicle's firmware is too old to send (they never arrive until it updates) and last
error, then the counts, a staged certificate's progress and the `VehiclesConfigured`
condition from the resource's status.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from collections.abc import Iterable, Mapping
from typing import Any, TextIO

from fleetwire.operator.resource import crd
from fleetwire.operator.stores.records import decode_record, shard_name
from fleetwire.operator.policies.vehicles import (
    STATES,
    VEHICLES_CONFIGURED,
    VehicleRecord,
    count_too_new,
    counts,
    too_new_names,
)

__all__ = ["format_table", "read_vehicles", "run"]

_ORDER = {state: i for i, state in enumerate(("failing", "skipped", "pending", "pushed", "applied"))}
CA_SHOWN = 12
"""Hex digits of the held `ca`'s fingerprint in the table (the start of `status.vehicles.caFingerprint`)."""


def read_vehicles(name: str, namespace: str, api: Any = None) -> tuple[list[VehicleRecord], dict[str, Any]]:
    """The records of every shard, and the resource's status; raises LookupError when the
    resource does not exist."""
    import kubernetes

    core = kubernetes.client.CoreV1Api(api)
    custom = kubernetes.client.CustomObjectsApi(api)
    try:
        resource = custom.get_namespaced_custom_object(crd.GROUP, crd.VERSION, namespace, crd.PLURAL, name)
    except kubernetes.client.ApiException as exc:
        if exc.status == 404:
            raise LookupError(f"no {crd.KIND} {namespace}/{name}") from None
        raise
    records: list[VehicleRecord] = []
    index = 0
    while True:
        try:
            shard = core.read_namespaced_config_map(shard_name(name, index), namespace)
        except kubernetes.client.ApiException as exc:
            if exc.status == 404:
                break
            raise
        for vin, text in sorted((shard.data or {}).items()):
            record = decode_record(vin, text)
            if record is not None:
                records.append(record)
        index += 1
    return records, dict(resource.get("status") or {})


def _when(epoch: float | None) -> str:
    if epoch is None:
        return "-"
    return dt.datetime.fromtimestamp(epoch, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


def format_table(records: Iterable[VehicleRecord], status: Mapping[str, Any], *, width: int | None = 80) -> str:
    """The table, worst states first (failing, skipped, pending, pushed, applied), then the
    counts and the condition. A skipped vehicle's reason starts with its code (missing_key,
    max_configs, ...); reasons, fields and errors are cut at `width` characters (None: never).
    FIRMWARE is the version `fleet_status` last reported ("-": not known yet)."""
    rows = sorted(records, key=lambda r: (_ORDER.get(r.state, 9), r.vin))

    def cut(text: str) -> str:
        return text if width is None or len(text) <= width else text[:width - 1] + "…"

    def reason(record: VehicleRecord) -> str:
        return f"{record.skip}: {record.reason}" if record.skip and record.state == "skipped" else record.reason

    def firmware(record: VehicleRecord) -> str:
        return record.firmware.split()[0] if record.firmware.strip() else "-"

    def held(record: VehicleRecord) -> str:
        held_fp = record.held_ca_fp or (record.ca_fp if record.state in ("applied", "failing") else "")
        return held_fp[:CA_SHOWN] if held_fp else "-"

    table = [("VIN", "STATE", "FIRMWARE", "REASON", "LAST PUSH (UTC)", "CA", "FIELDS TOO NEW", "LAST ERROR")]
    table += [(r.vin, r.state, firmware(r), cut(reason(r)), _when(r.pushed_at), held(r),
               cut(",".join(too_new_names(r))) or "-", cut(r.last_error) or "-") for r in rows]
    last = len(table[0]) - 1
    widths = [max(len(row[i]) for row in table) for i in range(last)]
    lines = ["  ".join(cell.ljust(widths[i]) if i < last else cell for i, cell in enumerate(row)).rstrip()
             for row in table]
    tally = counts(rows)
    lines.append("")
    lines.append(f"{len(rows)} vehicles: " + ", ".join(f"{tally[state]} {state}" for state in STATES))
    missing = count_too_new(rows)
    if missing:
        lines.append(f"{missing} vehicle{'s' if missing != 1 else ''} on firmware too old to send some configured "
                     f"fields (FIELDS TOO NEW): they arrive once {'they update' if missing != 1 else 'it updates'}")
    vehicles = status.get("vehicles") or {}
    if vehicles.get("caFingerprint") or vehicles.get("lastPush"):
        lines.append(f"ca {vehicles.get('caFingerprint', '-')}, last push {vehicles.get('lastPush', '-')}")
    upcoming = vehicles.get("next") or {}
    if upcoming:
        lines.append(f"next certificate staged: {upcoming.get('ready', 0):,} of {upcoming.get('total', 0):,} vehicles "
                     f"hold a ca accepting it ({upcoming.get('behindCount', 0):,} behind)")
    condition = next((c for c in status.get("conditions") or () if c.get("type") == VEHICLES_CONFIGURED), None)
    if condition is not None:
        lines.append(f"{VEHICLES_CONFIGURED}={condition.get('status')} ({condition.get('reason')}): "
                     f"{condition.get('message')}")
    return "\n".join(lines)


def run(args: argparse.Namespace, out: TextIO = sys.stdout) -> int:
    """`fleetwire vehicles`: 0 when printed, 1 when the resource does not exist, 2 without a cluster."""
    import kubernetes

    try:
        kubernetes.config.load_kube_config(context=args.context)
    except (kubernetes.config.ConfigException, OSError) as exc:
        print(f"fleetwire vehicles: no usable kubeconfig: {exc}", file=sys.stderr)
        return 2
    namespace = args.namespace
    if namespace is None:
        _contexts, current = kubernetes.config.list_kube_config_contexts()
        namespace = (current or {}).get("context", {}).get("namespace") or "default"
    try:
        records, status = read_vehicles(args.resource, namespace)
    except LookupError as exc:
        print(f"fleetwire vehicles: {exc}", file=sys.stderr)
        return 1
    if args.output == "json":
        vehicles = [{**r.as_dict(), **({"fields_too_new": list(too_new_names(r))} if r.too_new else {})}
                    for r in records]
        out.write(json.dumps({"vehicles": vehicles, "status": status.get("vehicles") or {}}, indent=2) + "\n")
    else:
        out.write(format_table(records, status, width=None if args.wide else 80) + "\n")
    return 0
