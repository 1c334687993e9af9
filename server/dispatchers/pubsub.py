"""The pubsub backend (Google Cloud Pub/Sub), addressed as the reference does.

- Topic ``<namespace>_<record type>`` in project ``pubsub.gcp_project_id``, created at
  start if missing (and again before publishing if that failed, or if it disappears).
- Data: the record's protobuf, or its protobuf-JSON with ``transmit_decoded_records``;
  attributes: the reference's metadata (`fleetwire.server.metadata`). No ordering key.
- Credentials: the file named by ``GOOGLE_APPLICATION_CREDENTIALS``, or the emulator at
  ``PUBSUB_EMULATOR_HOST`` (no credentials); one of them must be set, not both — as the
  reference requires.

A record is confirmed once Pub/Sub returned its message id. The client library batches
messages into Publish calls in its own threads; `publish` hands a batch over without
blocking the event loop and is woken once, when the last message id of the batch is in.
A Publish call refused for a transient reason (UNAVAILABLE and the like) is retried by the
library with back-off for `PUBLISH_PATIENCE_SECONDS`, then fails the batch, which the queue
offers again: records already given a message id are remembered and not published twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import threading
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fleetwire.server.dispatchers.base import DispatchError, Record
from fleetwire.server.metadata import metadata
from fleetwire.strictjson import ConfigError, Reader, looks_secret, show

if TYPE_CHECKING:
    from fleetwire.server.config import ServerConfig

log = logging.getLogger("fleetwire.dispatch.pubsub")

EMULATOR_VARIABLE = "PUBSUB_EMULATOR_HOST"
CREDENTIALS_VARIABLE = "GOOGLE_APPLICATION_CREDENTIALS"
SCOPES = ("https://www.googleapis.com/auth/pubsub",)
PUBLISH_PATIENCE_SECONDS = 30.0  # the library's own retries of one Publish call, in all
ADMIN_TIMEOUT_SECONDS = 5.0  # GetTopic / CreateTopic, which never wait for an outage to end
# Pub/Sub's own limits: 1,000 messages and 10 MB per Publish request.
MAX_MESSAGES_PER_CALL = 1000
MAX_BYTES_PER_CALL = 9_000_000
MAX_LATENCY_SECONDS = 0.005
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
    from google.api_core import exceptions

    return not isinstance(exc, (exceptions.InvalidArgument, exceptions.FailedPrecondition, TypeError, ValueError))


class _BatchWaiter:
    """Collects the library's futures of one batch in its threads; wakes the loop once."""

    __slots__ = ("_left", "_lock", "_loop", "done", "errors")

    def __init__(self, loop: asyncio.AbstractEventLoop, count: int) -> None:
        self._lock = threading.Lock()
        self._left = count
        self._loop = loop
        self.done: asyncio.Future[None] = loop.create_future()
        self.errors: dict[int, BaseException] = {}  # index in the batch → why not published

    def watch(self, index: int, future: Any) -> None:
        future.add_done_callback(lambda f: self._settled(index, f))

    def _settled(self, index: int, future: Any) -> None:
        error = future.exception()
        with self._lock:
            if error is not None:
                self.errors[index] = error
            self._left -= 1
            last = self._left == 0
        if last:
            self._loop.call_soon_threadsafe(self._wake)

    def _wake(self) -> None:
        if not self.done.done():
            self.done.set_result(None)


class PubsubDispatcher:
    """Publishes records to their topics with the google-cloud-pubsub PublisherClient.

    `client` replaces the library's PublisherClient (tests).
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
        self._retry: Any = None
        self._accepted: dict[int, Record] = {}  # records of the batch in progress Pub/Sub holds
        # state, read by metrics and tests
        self.messages_published = 0
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
        if self._client is None:
            self._client = await asyncio.to_thread(self._new_client)
        from google.api_core import exceptions, retry

        self._retry = retry.Retry(
            initial=0.1, maximum=2.0, multiplier=2.0, timeout=PUBLISH_PATIENCE_SECONDS,
            predicate=retry.if_exception_type(
                exceptions.Aborted, exceptions.Cancelled, exceptions.DeadlineExceeded,
                exceptions.InternalServerError, exceptions.ResourceExhausted,
                exceptions.ServiceUnavailable, exceptions.Unknown,
            ),
        )
        try:
            await self._ensure_topics([self.path(t) for t in self.topics])
        except DispatchError as exc:
            log.warning("pubsub: cannot check the topics at %s now; publishing will retry: %s", self.endpoint, exc)
        else:
            log.info("pubsub: publishing to project %s at %s, topics %s", self.project, self.endpoint,
                     ", ".join(self.topics.values()))

    def _new_client(self) -> Any:
        from google.cloud import pubsub_v1

        batch = pubsub_v1.types.BatchSettings(
            max_bytes=MAX_BYTES_PER_CALL, max_latency=MAX_LATENCY_SECONDS, max_messages=MAX_MESSAGES_PER_CALL
        )
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
            return pubsub_v1.PublisherClient(batch, transport=PublisherGrpcTransport(channel=channel))
        if self.settings.credentials_file is not None:
            credentials = load_credentials(self.settings.credentials_file)
        else:  # settings built in code: the library's own lookup
            import google.auth

            credentials, _ = google.auth.default(scopes=SCOPES)
        return pubsub_v1.PublisherClient(batch, credentials=credentials)

    async def _ensure_topics(self, paths: Sequence[str]) -> None:
        missing = [p for p in paths if p not in self._ready]
        if not missing:
            return
        async with self._topic_lock:
            for path in missing:
                if path in self._ready:
                    continue
                try:
                    created = await asyncio.to_thread(self._ensure_topic, path)
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
            await asyncio.to_thread(self._stop_client, client)

    @staticmethod
    def _stop_client(client: Any) -> None:
        with contextlib.suppress(Exception):
            client.stop()  # sends what is batched; the queue has already waited for it
        transport = getattr(client, "transport", None)
        with contextlib.suppress(Exception):
            if transport is not None:
                transport.close()

    # -- publishing --------------------------------------------------------------------

    async def publish(self, batch: Sequence[Record]) -> None:
        client = self._client
        if client is None or self._closed:
            raise DispatchError("the pubsub dispatcher is " + ("closed" if self._closed else "not started"),
                                retryable=not self._closed)
        accepted = self._accepted
        todo = [r for r in batch if accepted.get(id(r)) is not r]
        paths = [self.path(r.record_type) for r in todo]
        await self._ensure_topics(list(dict.fromkeys(paths)))
        loop = asyncio.get_running_loop()
        waiter = _BatchWaiter(loop, len(todo))
        decoded, retry, name = self._decoded, self._retry, self.name
        for index, (record, path) in enumerate(zip(todo, paths)):
            data = record.json(name) if decoded else record.payload
            try:
                future = client.publish(path, data, retry=retry, **metadata(record))
            except Exception as exc:  # noqa: BLE001 - not taken (publisher stopped, message too large)
                waiter._settled(index, _Failed(exc))
            else:
                waiter.watch(index, future)
        if todo:
            await waiter.done
        errors = waiter.errors
        for index, record in enumerate(todo):
            if index not in errors:
                accepted[id(record)] = record
        self.messages_published += len(todo) - len(errors)
        if errors:
            first = next(iter(errors.values()))
            self.last_error = _describe(first)
            from google.api_core import exceptions

            if any(isinstance(e, exceptions.NotFound) for e in errors.values()):
                self._ready.difference_update(paths)  # deleted since: create it again
            raise DispatchError(
                f"Pub/Sub at {self.endpoint} did not take {len(errors)} of {len(todo)} message(s): {self.last_error}",
                retryable=all(_transient(e) for e in errors.values()),
            )
        accepted.clear()


class _Failed:
    """A settled future for a message the library never took."""

    def __init__(self, error: BaseException) -> None:
        self._error = error

    def exception(self) -> BaseException:
        return self._error


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
