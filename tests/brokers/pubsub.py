"""An in-process stand-in for Google Cloud Pub/Sub's Publisher service, for tests and benchmarks.

No Pub/Sub emulator can be installed here, so this serves the gRPC methods a publisher
uses — ``google.pubsub.v1.Publisher/CreateTopic``, ``GetTopic``, ``Publish`` — with
grpcio's generic handlers and Google's own message types (`google.pubsub_v1.types`, whose
``serialize``/``deserialize`` are the wire format). Clients reach it through
``PUBSUB_EMULATOR_HOST=127.0.0.1:<port>``, exactly as they reach the real emulator.

`stop()` closes the port (connections refused), `start()` opens it again on the same port;
topics and messages survive, as they do in Pub/Sub. `fail(grpc.StatusCode.UNAVAILABLE)`
makes every request fail with that status until `fail(None)`. `messages[topic_path]` holds
every published `PubsubMessage` with its message id and publish time.

What it does not do: authentication, ordering keys, flow control, quotas, subscriptions.
"""

from __future__ import annotations

import itertools
import socket
import threading
import time
from collections import defaultdict
from concurrent import futures
from typing import Any

import grpc
from google.protobuf import timestamp_pb2
from google.pubsub_v1 import types

SERVICE = "google.pubsub.v1.Publisher"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PubsubStandIn:
    """The Publisher service on 127.0.0.1:`port`, in this process's threads."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or _free_port()
        self.topics: dict[str, types.Topic] = {}
        self.messages: dict[str, list[types.PubsubMessage]] = defaultdict(list)
        self.requests: list[tuple[str, str]] = []  # (method, topic) of every request served
        self.publish_calls = 0
        self._failing: grpc.StatusCode | None = None
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._server: grpc.Server | None = None

    @property
    def host(self) -> str:
        """The value of PUBSUB_EMULATOR_HOST for clients of this stand-in."""
        return f"127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self._server is not None

    def start(self) -> PubsubStandIn:
        assert self._server is None, "already running"
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=8, thread_name_prefix="pubsub-standin"))
        unary = grpc.unary_unary_rpc_method_handler
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, {
            "CreateTopic": unary(self._create_topic, types.Topic.deserialize, types.Topic.serialize),
            "GetTopic": unary(self._get_topic, types.GetTopicRequest.deserialize, types.Topic.serialize),
            "Publish": unary(self._publish, types.PublishRequest.deserialize, types.PublishResponse.serialize),
        }),))
        if server.add_insecure_port(self.host) != self.port:
            raise RuntimeError(f"cannot listen on {self.host}")
        server.start()
        self._server = server
        return self

    def stop(self) -> None:
        """Close the port at once; requests in flight are cancelled."""
        server, self._server = self._server, None
        if server is not None:
            server.stop(grace=None).wait(5)

    kill = stop

    def restart(self) -> PubsubStandIn:
        self.stop()
        return self.start()

    def fail(self, code: grpc.StatusCode | None) -> None:
        """Answer every request with `code` (None: serve normally again)."""
        self._failing = code

    def create_topic(self, path: str) -> None:
        """Create a topic directly, as a user's infrastructure would."""
        with self._lock:
            self.topics.setdefault(path, types.Topic(name=path))

    def all_messages(self) -> list[tuple[str, types.PubsubMessage]]:
        with self._lock:
            return [(topic, m) for topic, messages in self.messages.items() for m in messages]

    # -- the service -------------------------------------------------------------------

    def _check(self, context: grpc.ServicerContext, method: str, topic: str) -> None:
        with self._lock:
            self.requests.append((method, topic))
        code = self._failing
        if code is not None:
            context.abort(code, f"stand-in told to fail with {code.name}")

    def _create_topic(self, request: types.Topic, context: grpc.ServicerContext) -> types.Topic:
        self._check(context, "CreateTopic", request.name)
        with self._lock:
            if request.name in self.topics:
                context.abort(grpc.StatusCode.ALREADY_EXISTS, "Topic already exists")
            self.topics[request.name] = types.Topic(name=request.name)
            return self.topics[request.name]

    def _get_topic(self, request: types.GetTopicRequest, context: grpc.ServicerContext) -> types.Topic:
        self._check(context, "GetTopic", request.topic)
        with self._lock:
            topic = self.topics.get(request.topic)
        if topic is None:
            context.abort(grpc.StatusCode.NOT_FOUND, f"Resource not found (resource={request.topic}).")
        return topic

    def _publish(self, request: types.PublishRequest, context: grpc.ServicerContext) -> types.PublishResponse:
        self._check(context, "Publish", request.topic)
        if not request.messages:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "The request contains no messages.")
        now = time.time()
        stamp = timestamp_pb2.Timestamp(seconds=int(now), nanos=int(now % 1 * 1e9))
        with self._lock:
            if request.topic not in self.topics:
                context.abort(grpc.StatusCode.NOT_FOUND, f"Resource not found (resource={request.topic}).")
            self.publish_calls += 1
            ids = []
            stored = self.messages[request.topic]
            for message in request.messages:
                message_id = str(next(self._ids))
                copy: Any = types.PubsubMessage(data=message.data, attributes=dict(message.attributes),
                                                 ordering_key=message.ordering_key, message_id=message_id)
                copy.publish_time = stamp
                stored.append(copy)
                ids.append(message_id)
        return types.PublishResponse(message_ids=ids)
