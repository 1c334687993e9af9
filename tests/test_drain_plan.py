"""The drain's pure decisions, its budget from the environment, the status port's answers,
and the managed Deployment's grace period and probes that must agree with them."""

from __future__ import annotations

import math

import pytest
from fleetwire.operator.environment import OperatorEnvironment
from fleetwire.operator.resource import builders
from fleetwire.operator.resource.spec_parse import parse_spec
from fleetwire.server.app import _status_reply
from fleetwire.server.drain import (
    ACK_SHARE,
    CLOSE_WAIT_SECONDS,
    DEFAULT_DRAIN_SECONDS,
    DISPATCHER_CLOSE_SECONDS,
    DRAIN_ENV,
    DrainPlan,
    acks_settled,
    grace_period_seconds,
    workers_stop_seconds,
)
from fleetwire.server.environment import read_environment

from fleetwire.strictjson import ConfigError

KUBERNETES_DEFAULT_GRACE = 30


def test_the_wait_for_acks_ends_when_none_is_owed_or_its_share_is_spent() -> None:
    plan = DrainPlan(started=100.0, budget=20.0, queue_timeout=5.0)
    assert acks_settled(plan, 100.5, owed=3) is None
    assert acks_settled(plan, 100.5, owed=0).code == "acks_sent"  # type: ignore[union-attr]
    spent = acks_settled(plan, 100.0 + 20.0 * ACK_SHARE, owed=3)
    assert spent is not None and spent.code == "ack_budget_spent"
    assert spent.message.startswith("3 record(s)") and "resend" in spent.message


def test_the_later_steps_get_what_is_left_of_the_budget_and_never_more() -> None:
    plan = DrainPlan(started=0.0, budget=20.0, queue_timeout=5.0)
    assert plan.acks_deadline == 10.0 and plan.deadline == 20.0
    assert plan.close_wait(10.0) == CLOSE_WAIT_SECONDS
    assert plan.close_wait(19.5) == 0.5 and plan.close_wait(25.0) == 0.0
    assert plan.queue_wait(11.0) == 5.0  # the queues' own timeout, shorter than what is left
    assert plan.queue_wait(17.0) == 3.0 - DISPATCHER_CLOSE_SECONDS and plan.queue_wait(21.0) == 0.0
    assert plan.remaining(17.0) == 3.0 and plan.remaining(21.0) == 0.0
    # A drain that started at t0 is over by t0 + budget whatever the steps took.
    t = plan.acks_deadline
    t += plan.close_wait(t)
    t += plan.queue_wait(t)
    t += DISPATCHER_CLOSE_SECONDS
    assert t <= plan.deadline


def test_the_budget_is_read_from_the_environment_and_a_bad_value_names_the_variable() -> None:
    assert read_environment({}).drain_seconds == DEFAULT_DRAIN_SECONDS
    assert read_environment({DRAIN_ENV: ""}).drain_seconds == DEFAULT_DRAIN_SECONDS
    assert read_environment({DRAIN_ENV: "7.5"}).drain_seconds == 7.5
    for bad in ("0", "-3", "soon", "inf", "nan"):
        with pytest.raises(ConfigError) as info:
            read_environment({DRAIN_ENV: bad})
        assert str(info.value).startswith(DRAIN_ENV) and "positive number of seconds" in str(info.value)


def test_readiness_turns_503_while_draining_and_liveness_stays_up() -> None:
    assert _status_reply(b"/readyz", True).startswith(b"HTTP/1.1 200 OK\r\n")
    assert _status_reply(b"/readyz", True).endswith(b"\r\n\r\nready")
    draining = _status_reply(b"/readyz", False)
    assert draining.startswith(b"HTTP/1.1 503 ") and draining.endswith(b"\r\n\r\ndraining")
    assert b"Content-Length: 8\r\n" in draining
    for path in (b"/healthz", b"/", b"/status"):
        assert _status_reply(path, False).endswith(b"\r\n\r\nok")


def _pod(env: list[dict[str, str]] | None = None) -> dict:  # type: ignore[type-arg]
    spec = parse_spec({"hostname": "telemetry.example.com", "certificate": {"privateCA": {}},
                       "server": {"records": {"V": ["logger"]}, "env": env or []}})
    objects = builders.server_objects(builders.Owner("fleet", "default", "uid-1"), spec, OperatorEnvironment(image="fleetwire:test"))
    deployment = next(o for o in objects if o["kind"] == "Deployment")
    return deployment["spec"]["template"]["spec"]  # type: ignore[no-any-return]


def test_the_pods_grace_period_outlasts_the_servers_drain_budget() -> None:
    pod = _pod()
    grace = pod["terminationGracePeriodSeconds"]
    assert grace == grace_period_seconds(DEFAULT_DRAIN_SECONDS)
    # Within Kubernetes' default, with room after the budget for the interpreter to exit.
    assert DEFAULT_DRAIN_SECONDS + 5 <= grace <= KUBERNETES_DEFAULT_GRACE
    # A budget set in the server's env moves the grace period with it.
    longer = _pod([{"name": DRAIN_ENV, "value": "45"}])
    assert longer["terminationGracePeriodSeconds"] == math.ceil(45) + (grace - math.ceil(DEFAULT_DRAIN_SECONDS))
    assert read_environment({DRAIN_ENV: "45"}).drain_seconds < longer["terminationGracePeriodSeconds"]
    # A value the server would refuse (it then names the variable) keeps the default grace.
    assert _pod([{"name": DRAIN_ENV, "value": "soon"}])["terminationGracePeriodSeconds"] == grace


@pytest.mark.parametrize("budget", [1.0, DEFAULT_DRAIN_SECONDS, 45.0])
def test_a_supervisor_waits_for_its_workers_drains_and_stops_before_the_kubelets_kill(budget: float) -> None:
    assert budget < workers_stop_seconds(budget) < grace_period_seconds(budget)


def test_readiness_asks_the_endpoint_that_drains_and_liveness_the_one_that_does_not() -> None:
    (container,) = _pod()["containers"]
    ready, live = container["readinessProbe"]["httpGet"], container["livenessProbe"]["httpGet"]
    assert (ready["path"], ready["port"]) == ("/readyz", "status")
    assert (live["path"], live["port"]) == ("/healthz", "status")
    assert _status_reply(ready["path"].encode(), False).startswith(b"HTTP/1.1 503")
    assert _status_reply(live["path"].encode(), False).startswith(b"HTTP/1.1 200")
    assert ready is not live  # two probes, two objects: editing one leaves the other
