"""Shared pytest fixtures and helpers, one module per concern under `tests/fixtures/`; this file
registers them (pytest finds fixtures and hooks in the conftest's namespace) and keeps the names
tests import from `conftest`. Add a new concern as a module there, imported here."""

from __future__ import annotations

from fixtures.net import (  # noqa: F401 - fixtures, hooks and helpers, registered by being here
    free_port,
    _wait_listening,
)
from fixtures.mosquitto import (  # noqa: F401 - fixtures, hooks and helpers, registered by being here
    Mosquitto,
    mosquitto,
    _mosquitto_binary,
    mosquitto_factory,
    MosquittoFactory,
)
from fixtures.server import (  # noqa: F401 - fixtures, hooks and helpers, registered by being here
    fleet_pki,
    issue_vehicle_cert,
    pytest_asyncio_loop_factories,
    RecordingDispatcher,
    running_server,
    RunningServer,
    server_config_data,
    ServerFactory,
    streaming_fleet,
)
from fixtures.cluster import (  # noqa: F401 - fixtures, hooks and helpers, registered by being here
    kopf_runner,
    KopfRunnerFactory,
    kube,
    kube_api,
)
from fixtures.acme import (  # noqa: F401 - fixtures, hooks and helpers, registered by being here
    _free_udp_port,
    local_dns,
    LocalDns,
    PEBBLE,
    Pebble,
    pebble,
)
from fixtures.api_requests import (  # noqa: F401 - fixtures, hooks and helpers, registered by being here
    api_request_rules,
    _API_REQUESTS,
    API_REQUESTS_FILE,
    load_api_requests,
    _operator_api_requests,
    operator_api_requests,
    OPERATOR_USER_AGENTS,
    pytest_addoption,
    pytest_sessionfinish,
)
