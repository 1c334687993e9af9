"""The kinesis backend (Amazon Kinesis Data Streams), addressed as the reference does.

- Stream per record type: ``kinesis.streams[<record type>]``, overridden by the
  environment variable ``KINESIS_STREAM_<RECORD TYPE IN CAPITALS>``, else
  ``<namespace>_<record type>``.
- Partition key: the VIN from the vehicle's certificate; no metadata. The data is the
  record's protobuf, or its protobuf-JSON with ``transmit_decoded_records``.
- ``max_retries`` (1 when absent, as in the reference) is the AWS client's retries per
  request; ``override_host`` its endpoint (LocalStack, a VPC endpoint). Region and
  credentials come from the standard AWS chain: ``AWS_*`` variables, ``~/.aws`` files,
  a web-identity token, a pod or instance role. One ``ListStreams`` at start checks the
  connection; a failure there is logged, not fatal: publishing retries.

Where the reference calls PutRecord once per record in the vehicle's read loop, this sends
PutRecords, up to 500 records or 5 MiB a call. Such a call may succeed while refusing some
entries (a shard over its throughput, an internal failure): only those are sent again, and
`publish` returns once Kinesis gave every record a sequence number — nothing else confirms
a record. Records accepted by a publish that failed anyway are remembered, so that the
queue's retry of the batch does not write them twice.

Ordering: Kinesis does not promise the order of the entries of one PutRecords call, and a
refused entry sent again lands after later ones. A consumer that needs one vehicle's
records in order sorts them by ``created_at``.
"""

from __future__ import annotations

import asyncio
import collections
import configparser
import contextlib
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from fleetwire.server.dispatch import DispatchError
from fleetwire.server.environment import process_environment
from fleetwire.proto.record_types import RECORD_TYPES
from fleetwire.server.records import Record
from fleetwire.strictjson import ConfigError, Reader, looks_secret, show, suggest

if TYPE_CHECKING:
    from fleetwire.server.config import ServerConfig

log = logging.getLogger("fleetwire.dispatch.kinesis")

DEFAULT_MAX_RETRIES = 1
"""The reference's retries per request when `max_retries` is absent."""

MAX_RECORDS_PER_CALL = 500
MAX_BYTES_PER_CALL = 5 * 1024 * 1024
MAX_RECORD_BYTES = 1024 * 1024  # data plus partition key
_STREAM_NAME = re.compile(r"[a-zA-Z0-9_.-]{1,128}")
_STREAM_FORM = "a Kinesis stream name: 1 to 128 letters, digits, '_', '.' or '-'"
# Whole-call errors that the same request can never get past.
_REFUSED = frozenset({"ValidationException", "InvalidArgumentException", "SerializationException"})
CONNECT_TIMEOUT_SECONDS = 5.0
READ_TIMEOUT_SECONDS = 30.0


def stream_variable(record_type: str) -> str:
    """The environment variable that names `record_type`'s stream, as the reference reads it."""
    return f"KINESIS_STREAM_{record_type.upper()}"


@dataclass(frozen=True, slots=True)
class KinesisSettings:
    max_retries: int | None = None
    override_host: str = ""
    streams: Mapping[str, str] = field(default_factory=dict)
    env_streams: Mapping[str, str] = field(default_factory=dict)  # KINESIS_STREAM_* found set
    region: str = ""  # resolved from the AWS chain when kinesis is in use

    @property
    def retries(self) -> int:
        return DEFAULT_MAX_RETRIES if self.max_retries is None else self.max_retries

    @property
    def endpoint_url(self) -> str | None:
        """`override_host` as a URL; without a scheme it is https, as the reference's SDK reads it."""
        host = self.override_host
        if not host:
            return None
        return host if "://" in host else f"https://{host}"

    def stream(self, record_type: str, namespace: str) -> str:
        """The stream `record_type`'s records go to."""
        return (self.env_streams.get(record_type) or self.streams.get(record_type)
                or f"{namespace}_{record_type}")


def _check_stream_name(key: str, name: str, where: str = "") -> None:
    if not _STREAM_NAME.fullmatch(name):
        raise ConfigError(key, f"{where}expected {_STREAM_FORM}, got {show(name)}")


def _aws_file(env: Mapping[str, str], variable: str, default: str) -> Path:
    value = env.get(variable)
    if value:
        return Path(value).expanduser()
    return Path(env.get("HOME") or str(Path.home())) / ".aws" / default


def aws_region(env: Mapping[str, str]) -> str:
    """The region the AWS chain would use: AWS_REGION, AWS_DEFAULT_REGION, then the profile's
    `region` in the shared config file; "" if none."""
    for variable in ("AWS_REGION", "AWS_DEFAULT_REGION"):
        if env.get(variable):
            return env[variable]
    profile = env.get("AWS_PROFILE") or env.get("AWS_DEFAULT_PROFILE") or "default"
    parser = configparser.RawConfigParser()
    try:
        parser.read(_aws_file(env, "AWS_CONFIG_FILE", "config"), encoding="utf-8")
    except (configparser.Error, OSError, UnicodeDecodeError):
        return ""  # botocore reports a broken file itself
    for section in (f"profile {profile}", profile):
        if parser.has_option(section, "region"):
            return parser.get(section, "region").strip()
    return ""


def _check_aws_environment(env: Mapping[str, str]) -> str:
    """The region; raises ConfigError for an AWS environment the chain cannot use."""
    if bool(env.get("AWS_ACCESS_KEY_ID")) != bool(env.get("AWS_SECRET_ACCESS_KEY")):
        present, absent = (("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY") if env.get("AWS_ACCESS_KEY_ID")
                           else ("AWS_SECRET_ACCESS_KEY", "AWS_ACCESS_KEY_ID"))
        raise ConfigError(absent, f"missing from the environment while {present} is set: the kinesis "
                          "dispatcher needs both (or neither, to use a profile or a role)")
    for variable in ("AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE", "AWS_WEB_IDENTITY_TOKEN_FILE"):
        value = env.get(variable)
        if value and not Path(value).expanduser().is_file():
            raise ConfigError(variable, f"file not found: {show(value)} (set in the environment)")
    region = aws_region(env)
    if not region:
        raise ConfigError("kinesis", "no AWS region: set AWS_REGION (or AWS_DEFAULT_REGION) in the "
                          "environment, or `region` in the profile of ~/.aws/config")
    return region


def parse_settings(s: Reader, env: Mapping[str, str], in_use: bool) -> KinesisSettings:
    s.known(("max_retries", "override_host", "streams"))
    streams: dict[str, str] = {}
    if "streams" in s.data:
        st = s.section("streams")
        for record_type in st.data:
            if record_type not in RECORD_TYPES:
                s.warnings.append(f"{st.key(record_type)}: not a record type (expected one of "
                                  f"{', '.join(RECORD_TYPES)}){suggest(record_type, RECORD_TYPES)}")
            name = st.string(record_type, "")
            if name:  # empty means the namespace's name, as in the reference
                _check_stream_name(st.key(record_type), name)
            streams[record_type] = name
    env_streams: dict[str, str] = {}
    for record_type in RECORD_TYPES:
        variable = stream_variable(record_type)
        value = env.get(variable, "")
        if value:
            if in_use:
                _check_stream_name(variable, value, "set in the environment: ")
            env_streams[record_type] = value
    override_host = s.string("override_host", "")
    if override_host:
        url = override_host if "://" in override_host else f"https://{override_host}"
        try:
            parts = urlsplit(url)
            parts.port  # noqa: B018 - raises for a bad port
        except ValueError:
            parts = None
        if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(s.key("override_host"), "expected an endpoint URL such as "
                              f"\"http://localstack:4566\" or a host name, got {show(override_host)}")
    return KinesisSettings(
        max_retries=s.integer("max_retries", None, minimum=0, maximum=100),
        override_host=override_host,
        streams=streams,
        env_streams=env_streams,
        region=_check_aws_environment(env) if in_use else "",
    )


# -- the dispatcher ------------------------------------------------------------------


def _error_code(exc: BaseException) -> str:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return str(response.get("Error", {}).get("Code", "")) or type(exc).__name__
    return type(exc).__name__


class KinesisDispatcher:
    """Puts records into their streams with PutRecords; one client, its own connection pool.

    `client` replaces the AWS client (tests); `patience` is how long one publish keeps
    re-sending refused entries before it fails, so that the queue's back-off and metrics
    take over.
    """

    name = "kinesis"

    def __init__(
        self,
        settings: KinesisSettings,
        streams: Mapping[str, str],
        *,
        namespace: str = "",
        decoded: bool = False,
        client: Any = None,
        retry_initial: float = 0.05,
        retry_max: float = 1.0,
        patience: float = 10.0,
    ) -> None:
        self.settings = settings
        self.streams = dict(streams)
        self._namespace = namespace
        self._decoded = decoded
        self._client = client
        self._retry_initial = retry_initial
        self._retry_max = retry_max
        self._patience = patience
        self._exit = contextlib.AsyncExitStack()
        self._closed = False
        self._check: asyncio.Task[None] | None = None
        # Records of the batch being published that Kinesis already holds (id → record).
        self._accepted: dict[int, Record] = {}
        # state, read by metrics and tests
        self.calls = 0
        self.records_put = 0
        self.entries_refused = 0  # entries a PutRecords call refused (and that were sent again)
        self.refusals: collections.Counter[str] = collections.Counter()  # by ErrorCode
        self.last_error: str | None = None

    @property
    def endpoint(self) -> str:
        return self.settings.endpoint_url or f"Kinesis in {self.settings.region or 'the default region'}"

    async def start(self) -> None:
        """Create the client and check the connection in the background (ListStreams)."""
        if self._client is None:
            from aiobotocore.config import AioConfig
            from aiobotocore.session import get_session

            session = get_session()
            try:
                credentials = await session.get_credentials()
            except Exception as exc:  # noqa: BLE001 - a profile that is not there, a broken file, a partial set
                detail = str(exc)[:300]
                raise ConfigError("kinesis", "cannot use the AWS credentials: "
                                  + ("(details not shown)" if looks_secret(detail) else detail)) from None
            if credentials is None:
                raise ConfigError("kinesis", "no AWS credentials found: set AWS_ACCESS_KEY_ID and "
                                  "AWS_SECRET_ACCESS_KEY, or AWS_PROFILE with ~/.aws/credentials, or run "
                                  "with a pod or instance role")
            config = AioConfig(
                retries={"total_max_attempts": self.settings.retries + 1, "mode": "standard"},
                connect_timeout=CONNECT_TIMEOUT_SECONDS,
                read_timeout=READ_TIMEOUT_SECONDS,
                max_pool_connections=16,
                parameter_validation=False,
            )
            self._client = await self._exit.enter_async_context(session.create_client(
                "kinesis",
                region_name=self.settings.region or None,
                endpoint_url=self.settings.endpoint_url,
                config=config,
            ))
        self._check = asyncio.get_running_loop().create_task(self._connection_check(), name="kinesis-check")

    async def _connection_check(self) -> None:
        try:
            await self._client.list_streams(Limit=1)
        except Exception as exc:  # noqa: BLE001 - logged: publishing retries
            self.last_error = f"{_error_code(exc)}: {exc}"
            log.warning("kinesis: connection check (ListStreams) at %s failed; publishing will retry: %s",
                        self.endpoint, self.last_error)
        else:
            log.info("kinesis: connected to %s; streams %s", self.endpoint,
                     ", ".join(f"{t} → {s}" for t, s in self.streams.items()) or "by namespace")

    async def close(self) -> None:
        self._closed = True
        check, self._check = self._check, None
        if check is not None:
            check.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await check
        await self._exit.aclose()

    def stream(self, record_type: str) -> str:
        name = self.streams.get(record_type)
        if name is None:
            name = self.streams[record_type] = self.settings.stream(record_type, self._namespace)
        return name

    # -- publishing --------------------------------------------------------------------

    async def publish(self, batch: Sequence[Record]) -> None:
        if self._client is None or self._closed:
            raise DispatchError("the kinesis dispatcher is " + ("closed" if self._closed else "not started"),
                                retryable=not self._closed)
        accepted = self._accepted
        decoded = self._decoded
        by_stream: dict[str, list[tuple[Record, dict[str, Any], int]]] = {}
        too_large: list[tuple[Record, int]] = []
        for record in batch:
            if accepted.get(id(record)) is record:
                continue  # in Kinesis since an earlier attempt at this batch
            data = record.json(self.name) if decoded else record.payload
            size = len(data) + len(record.vin.encode())
            if size > MAX_RECORD_BYTES:
                too_large.append((record, size))
                continue
            entries = by_stream.get(record.record_type)
            if entries is None:
                entries = by_stream[record.record_type] = []
            entries.append((record, {"Data": data, "PartitionKey": record.vin}, size))
        calls = [
            self._put(self.stream(record_type), chunk)
            for record_type, entries in by_stream.items()
            for chunk in _chunks(entries)
        ]
        if len(calls) == 1:
            await calls[0]
        elif calls:
            results = await asyncio.gather(*calls, return_exceptions=True)
            for result in results:
                if isinstance(result, BaseException):
                    raise result
        if too_large:
            record, size = too_large[0]
            accepted.clear()
            raise DispatchError(
                f"{len(too_large)} record(s) exceed Kinesis' 1 MiB per record and can never be put, "
                f"e.g. a {record.record_type} record of {record.vin} (txid {record.txid}) of {size} bytes",
                retryable=False,
            )
        accepted.clear()

    async def _put(self, stream: str, entries: list[tuple[Record, dict[str, Any], int]]) -> None:
        """One chunk into `stream`, re-sending refused entries until all are in or `patience` ends."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._patience
        delay = self._retry_initial
        accepted = self._accepted
        pending = entries
        while True:
            self.calls += 1
            try:
                response = await self._client.put_records(
                    StreamName=stream, Records=[entry for _, entry, _ in pending]
                )
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                code = _error_code(exc)
                self.last_error = f"{code}: {exc}"
                raise DispatchError(f"Kinesis PutRecords into stream {stream!r} at {self.endpoint} failed: "
                                    f"{self.last_error}", retryable=code not in _REFUSED) from exc
            results = response.get("Records") or []
            refused: list[tuple[Record, dict[str, Any], int]] = []
            codes: collections.Counter[str] = collections.Counter()
            for i, item in enumerate(pending):
                result = results[i] if i < len(results) else {}
                if result.get("SequenceNumber") and not result.get("ErrorCode"):
                    accepted[id(item[0])] = item[0]
                else:
                    refused.append(item)
                    codes[str(result.get("ErrorCode") or "no result")] += 1
            self.records_put += len(pending) - len(refused)
            if not refused:
                return
            self.entries_refused += len(refused)
            self.refusals.update(codes)
            summary = ", ".join(f"{code} x{n}" for code, n in codes.items())
            self.last_error = f"{len(refused)} of {len(pending)} records refused ({summary})"
            if loop.time() + delay > deadline:
                raise DispatchError(f"Kinesis stream {stream!r}: {self.last_error}; sending them again later")
            log.debug("kinesis: stream %r: %s; sending them again in %.2f s", stream, self.last_error, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, self._retry_max)
            pending = refused


def _chunks(entries: list[tuple[Record, dict[str, Any], int]]) -> list[list[tuple[Record, dict[str, Any], int]]]:
    """Split into PutRecords calls of at most 500 records and 5 MiB."""
    chunks: list[list[tuple[Record, dict[str, Any], int]]] = []
    current: list[tuple[Record, dict[str, Any], int]] = []
    size = 0
    for entry in entries:
        if current and (len(current) >= MAX_RECORDS_PER_CALL or size + entry[2] > MAX_BYTES_PER_CALL):
            chunks.append(current)
            current, size = [], 0
        current.append(entry)
        size += entry[2]
    if current:
        chunks.append(current)
    return chunks


def create(config: ServerConfig) -> KinesisDispatcher:
    """Streams resolved for the record types routed to kinesis, as the reference maps them."""
    settings: KinesisSettings = config.backend("kinesis")
    if not settings.region:  # settings built in code, not read with `kinesis` in use
        settings = KinesisSettings(settings.max_retries, settings.override_host, settings.streams,
                                   settings.env_streams, aws_region(process_environment()))
    streams: dict[str, str] = {}
    for record_type, names in config.records.items():
        if "kinesis" not in names:
            continue
        name = settings.stream(record_type, config.namespace)
        if not (settings.env_streams.get(record_type) or settings.streams.get(record_type)):
            _check_stream_name("namespace", name, f"the stream of {record_type} records is "
                               f"'<namespace>_{record_type}' (no kinesis.streams.{record_type} nor "
                               f"{stream_variable(record_type)}), so ")
        streams[record_type] = name
    return KinesisDispatcher(settings, streams, namespace=config.namespace, decoded=config.transmit_decoded_records)
