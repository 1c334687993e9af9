"""The pubsub backend (Google Cloud Pub/Sub), addressed as the reference does.

- Topic ``<namespace>_<record type>`` in project ``pubsub.gcp_project_id``, created at
  start if missing (and again before publishing if that failed, or if it disappears).
- Data: the record's protobuf, or its protobuf-JSON with ``transmit_decoded_records``;
  attributes: the reference's metadata (`fleetwire.server.metadata`). No ordering key.
- Credentials: the file named by ``GOOGLE_APPLICATION_CREDENTIALS``, or the emulator at
  ``PUBSUB_EMULATOR_HOST`` (no credentials); one of them must be set, not both — as the
  reference requires.

A record is confirmed once Pub/Sub returned its message id. The batch the queue hands
over is already a batch, so it goes out as one Publish request per topic (up to 1,000
messages or 9 MB each) through the google-cloud-pubsub GAPIC client, in a worker thread:
the event loop never waits on gRPC. The client library's own batching publisher costs
about six times the CPU per message (a future, a lock and proto-plus wrappers for each)
for nothing the queue does not do already. A Publish request is all or nothing; when one
of several fails, the records of those that succeeded are remembered, so the queue's
retry of the batch does not publish them twice.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import logging
import re
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fleetwire.server.dispatch import DispatchError
from fleetwire.server.records import Record
from fleetwire.server.metadata import metadata
from fleetwire.strictjson import ConfigError, Reader, looks_secret, show

if TYPE_CHECKING:
    from fleetwire.server.config import ServerConfig

log = logging.getLogger("fleetwire.dispatch.pubsub")

EMULATOR_VARIABLE = "PUBSUB_EMULATOR_HOST"
CREDENTIALS_VARIABLE = "GOOGLE_APPLICATION_CREDENTIALS"
SCOPES = ("https://www.googleapis.com/auth/pubsub",)
PUBLISH_TIMEOUT_SECONDS = 30.0  # one Publish request; a failure is retried by the queue, with back-off
ADMIN_TIMEOUT_SECONDS = 5.0  # GetTopic / CreateTopic
# Pub/Sub's own limits are 1,000 messages and 10 MB per Publish request.
MAX_MESSAGES_PER_CALL = 1000
MAX_BYTES_PER_CALL = 9_000_000
_TOPIC_NAME = re.compile(r"[A-Za-z][A-Za-z0-9\-_.~+%]{2,254}")
_PROJECT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9.:_\-]{0,127}")
_HOST_PORT = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.\-_]+):([0-9]{1,5})")


@dataclass(frozen=True, slots=True)
class PubsubSettings:
    gcp_project_id: str = ""
    emulator_host: str = ""  # PUBSUB_EMULATOR_HOST when in use
    credentials_file: Path | None = None  # GOOGLE_APPLICATION_CREDENTIALS when in use


def parse_settings(s: Reader, env: Mapping[str, str], in_use: bool) -> PubsubSettings:
    s.known(("gcp_project_id",))
    project = s.string("gcp_project_id", "")
    if not in_use:
        return PubsubSettings(gcp_project_id=project)
    if not project:
        raise ConfigError(s.key("gcp_project_id"), "missing: expected the Google Cloud project id "
                          "that holds the topics, e.g. \"my-project\"")
    if not _PROJECT_ID.fullmatch(project):
        raise ConfigError(s.key("gcp_project_id"), f"expected a Google Cloud project id (letters, digits "
                          f"and '-', e.g. \"my-project\"), got {show(project)}")
    # Set, even empty, counts as set: the reference looks the variables up that way.
    emulator = env.get(EMULATOR_VARIABLE)
    credentials = env.get(CREDENTIALS_VARIABLE)
    if emulator is not None and credentials is not None:
        raise ConfigError(EMULATOR_VARIABLE, f"{EMULATOR_VARIABLE} and {CREDENTIALS_VARIABLE} are both set in "
                          "the environment: the pubsub dispatcher uses either the emulator or Google Cloud; "
                          "unset one of them")
    if emulator is None and credentials is None:
        raise ConfigError("pubsub", f"no credentials: set {CREDENTIALS_VARIABLE} to a service account key "
                          f"file, or {EMULATOR_VARIABLE} to the emulator's host:port")
    if emulator is not None:
        if not _HOST_PORT.fullmatch(emulator) or not 0 < int(emulator.rsplit(":", 1)[1]) < 65536:
            raise ConfigError(EMULATOR_VARIABLE, f"expected host:port (set in the environment), got {show(emulator)}")
        return PubsubSettings(gcp_project_id=project, emulator_host=emulator)
    assert credentials is not None
    path = Path(credentials).expanduser()
    try:
        found = path.is_file()
    except OSError:
        found = False
    if not found:
        raise ConfigError(CREDENTIALS_VARIABLE, f"file not found: {show(credentials)} (set in the environment; "
                          "expected a service account key or other credentials file of Google Cloud)")
    try:
        load_credentials(path)
    except Exception as exc:  # noqa: BLE001 - a file of another kind, broken JSON, a key that does not load
        detail = str(exc)[:200]
        if looks_secret(detail):
            detail = "(details not shown)"
        raise ConfigError(CREDENTIALS_VARIABLE, f"cannot use {path} (set in the environment) as Google Cloud "
                          f"credentials: {type(exc).__name__}: {detail}") from None
    return PubsubSettings(gcp_project_id=project, credentials_file=path.resolve())


def load_credentials(path: Path) -> Any:
    """The credentials in `path`, loaded as Application Default Credentials load the file
    named by GOOGLE_APPLICATION_CREDENTIALS (the operator's own file, hence trusted: the
    library's warning about files from outside sources is silenced, as ADC silences it)."""
    import google.auth

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        credentials, _ = google.auth.load_credentials_from_file(str(path), scopes=SCOPES)
    return credentials


def topic_name(namespace: str, record_type: str) -> str:
    """The topic of `record_type`'s records, as the reference names it."""
    return f"{namespace}_{record_type}"


# -- the dispatcher ------------------------------------------------------------------


def _describe(exc: BaseException) -> str:
    code = getattr(exc, "grpc_status_code", None)  # UNAVAILABLE, NOT_FOUND, ... for API errors
    name = getattr(code, "name", None) or type(exc).__name__
    message = getattr(exc, "message", None) or str(exc)
    return f"{name}: {message}"


def _transient(exc: BaseException) -> bool:
    """False for what the same request can never get past (a message Pub/Sub refuses)."""
    from google.api_core import exceptions

    return not isinstance(exc, (exceptions.InvalidArgument, exceptions.FailedPrecondition, TypeError, ValueError))


_Chunk = tuple[str, list[Record], list[Any]]  # topic path, records, their PubsubMessage protobufs


class PubsubDispatcher:
    """Publishes records to their topics with the google-cloud-pubsub GAPIC Publisher client.

    `client` replaces that client (tests): it needs `publish`, `get_topic`, `create_topic`.
    """

    name = "pubsub"

    def __init__(
        self,
        settings: PubsubSettings,
        topics: Mapping[str, str],
        *,
        namespace: str = "",
        decoded: bool = False,
        client: Any = None,
    ) -> None:
        self.settings = settings
        self.project = settings.gcp_project_id
        self.topics = dict(topics)  # record type → topic id
        self._namespace = namespace
        self._decoded = decoded
        self._client = client
        self._ready: set[str] = set()  # topic paths known to exist
        self._topic_lock = asyncio.Lock()
        self._closed = False
        self._accepted: dict[int, Record] = {}  # records of the batch in progress Pub/Sub holds
        # gRPC calls block: they run here, never on the loop, nor in the loop's shared default pool.
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="pubsub")
        self._message_pb: Any = None
        self._request_pb: Any = None
        self._request_type: Any = None
        # state, read by metrics and tests
        self.messages_published = 0
        self.calls = 0
        self.topics_created: list[str] = []
        self.last_error: str | None = None

    @property
    def endpoint(self) -> str:
        return f"the emulator at {self.settings.emulator_host}" if self.settings.emulator_host else "Google Cloud"

    def path(self, record_type: str) -> str:
        topic = self.topics.get(record_type)
        if topic is None:
            topic = self.topics[record_type] = topic_name(self._namespace, record_type)
        return f"projects/{self.project}/topics/{topic}"

    async def start(self) -> None:
        """Build the client and create missing topics; an outage now is logged, not fatal."""
        from google.pubsub_v1.types import pubsub as pubsub_types

        self._request_type = pubsub_types.PublishRequest
        self._request_pb = pubsub_types.PublishRequest.pb()
        self._message_pb = pubsub_types.PubsubMessage.pb()
        if self._client is None:
            self._client = await self._in_thread(self._new_client)
        try:
            await self._ensure_topics([self.path(t) for t in self.topics])
        except DispatchError as exc:
            log.warning("pubsub: cannot check the topics at %s now; publishing will retry: %s", self.endpoint, exc)
        else:
            log.info("pubsub: publishing to project %s at %s, topics %s", self.project, self.endpoint,
                     ", ".join(self.topics.values()))

    def _new_client(self) -> Any:
        from google.pubsub_v1 import PublisherClient

        if self.settings.emulator_host:
            import grpc
            from google.pubsub_v1.services.publisher.transports import (
                PublisherGrpcTransport,
            )

            # Reconnect within seconds of an emulator restart (gRPC's own back-off grows to 2 min).
            channel = grpc.insecure_channel(self.settings.emulator_host, options=[
                ("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1),
                ("grpc.initial_reconnect_backoff_ms", 200), ("grpc.min_reconnect_backoff_ms", 200),
                ("grpc.max_reconnect_backoff_ms", 5000)])
            return PublisherClient(transport=PublisherGrpcTransport(channel=channel))
        if self.settings.credentials_file is not None:
            credentials = load_credentials(self.settings.credentials_file)
        else:  # settings built in code: the library's own lookup
            import google.auth

            credentials, _ = google.auth.default(scopes=SCOPES)
        return PublisherClient(credentials=credentials)

    async def _ensure_topics(self, paths: Sequence[str]) -> None:
        missing = [p for p in paths if p not in self._ready]
        if not missing:
            return
        async with self._topic_lock:
            for path in missing:
                if path in self._ready:
                    continue
                try:
                    created = await self._in_thread(self._ensure_topic, path)
                except Exception as exc:
                    self.last_error = _describe(exc)
                    raise DispatchError(f"Pub/Sub topic {path} at {self.endpoint}: {self.last_error}",
                                        retryable=_transient(exc)) from exc
                if created:
                    self.topics_created.append(path)
                    log.info("pubsub: created topic %s", path)
                self._ready.add(path)

    def _ensure_topic(self, path: str) -> bool:
        """True if the topic had to be created (blocking; run in a thread)."""
        from google.api_core import exceptions

        client = self._client
        try:
            client.get_topic(request={"topic": path}, retry=None, timeout=ADMIN_TIMEOUT_SECONDS)
            return False
        except exceptions.NotFound:
            pass
        try:
            client.create_topic(request={"name": path}, retry=None, timeout=ADMIN_TIMEOUT_SECONDS)
        except exceptions.AlreadyExists:
            return False
        return True

    async def close(self) -> None:
        self._closed = True
        client, self._client = self._client, None
        if client is not None:
            await self._in_thread(self._stop_client, client)
        self._executor.shutdown(wait=False)

    @staticmethod
    def _stop_client(client: Any) -> None:
        transport = getattr(client, "transport", None)
        with contextlib.suppress(Exception):
            if transport is not None:
                transport.close()

    def _in_thread(self, function: Any, *args: Any, **kwargs: Any) -> asyncio.Future[Any]:
        return asyncio.get_running_loop().run_in_executor(self._executor, functools.partial(function, *args, **kwargs))

    # -- publishing --------------------------------------------------------------------

    async def publish(self, batch: Sequence[Record]) -> None:
        if self._client is None or self._closed:
            raise DispatchError("the pubsub dispatcher is " + ("closed" if self._closed else "not started"),
                                retryable=not self._closed)
        chunks = self._chunks(batch)
        await self._ensure_topics(list(dict.fromkeys(path for path, _, _ in chunks)))
        if len(chunks) == 1:
            results: list[BaseException | None] = [await self._send(chunks[0])]
        else:
            results = list(await asyncio.gather(*(self._send(c) for c in chunks)))
        errors = [(chunk, e) for chunk, e in zip(chunks, results) if e is not None]
        if errors:
            failed = sum(len(chunk[1]) for chunk, _ in errors)
            total = sum(len(chunk[1]) for chunk in chunks)
            (path, _, _), first = errors[0]
            self.last_error = _describe(first)
            raise DispatchError(
                f"Pub/Sub at {self.endpoint} did not take {failed} of {total} message(s) ({path}): {self.last_error}",
                retryable=all(_transient(e) for _, e in errors),
            )
        self._accepted.clear()

    def _chunks(self, batch: Sequence[Record]) -> list[_Chunk]:
        """One Publish request per topic, split at Pub/Sub's limits; records already in are left out."""
        accepted = self._accepted
        decoded, name, message_pb = self._decoded, self.name, self._message_pb
        open_chunks: dict[str, tuple[_Chunk, list[int]]] = {}  # path → its last chunk, that chunk's bytes
        chunks: list[_Chunk] = []
        for record in batch:
            if accepted.get(id(record)) is record:
                continue
            path = self.path(record.record_type)
            data = record.json(name) if decoded else record.payload
            attributes = metadata(record)
            size = len(data) + sum(len(k) + len(v) for k, v in attributes.items()) + 64
            current = open_chunks.get(path)
            if current is None or len(current[0][1]) >= MAX_MESSAGES_PER_CALL or (
                current[1][0] + size > MAX_BYTES_PER_CALL
            ):
                current = ((path, [], []), [0])
                open_chunks[path] = current
                chunks.append(current[0])
            chunk, used = current
            chunk[1].append(record)
            chunk[2].append(message_pb(data=data, attributes=attributes))
            used[0] += size
        return chunks

    async def _send(self, chunk: _Chunk) -> BaseException | None:
        """Publish one request; None once every message got its id, else why not."""
        path, records, messages = chunk
        request = self._request_type.wrap(self._request_pb(topic=path, messages=messages))
        self.calls += 1
        try:
            response = await self._in_thread(self._client.publish, request=request, retry=None,
                                             timeout=PUBLISH_TIMEOUT_SECONDS)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - returned: the batch fails, retried by the queue
            from google.api_core import exceptions

            if isinstance(exc, exceptions.NotFound):
                self._ready.discard(path)  # deleted since: created again before the next attempt
            return exc
        ids = list(response.message_ids)
        if len(ids) != len(records):
            return RuntimeError(f"Pub/Sub returned {len(ids)} message ids for {len(records)} messages")
        accepted = self._accepted
        for record in records:
            accepted[id(record)] = record
        self.messages_published += len(records)
        return None


def create(config: ServerConfig) -> PubsubDispatcher:
    """Topics named for the record types routed to pubsub, as the reference names them."""
    settings: PubsubSettings = config.backend("pubsub")
    if not settings.gcp_project_id:
        raise ConfigError("pubsub.gcp_project_id", "missing: expected the Google Cloud project id of the topics")
    topics: dict[str, str] = {}
    for record_type, names in config.records.items():
        if "pubsub" not in names:
            continue
        topic = topic_name(config.namespace, record_type)
        if not _TOPIC_NAME.fullmatch(topic) or topic.lower().startswith("goog"):
            raise ConfigError("namespace", f"the Pub/Sub topic of {record_type} records is "
                              f"'<namespace>_{record_type}', so expected a namespace that makes a topic name "
                              "(starting with a letter; letters, digits and - _ . ~ + %; not 'goog...'), "
                              f"got {show(config.namespace)}")
        topics[record_type] = topic
    return PubsubDispatcher(settings, topics, namespace=config.namespace, decoded=config.transmit_decoded_records)
