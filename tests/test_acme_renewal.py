"""The certificate's renewal policy: when to renew and why, and the backoff after failures."""

from __future__ import annotations

import datetime as dt

import pytest

from fleetwire import pki
from fleetwire.operator.policies.renewal import backoff, renew_at, renewal_reason


# ======================================================================================
# Renewal policy
# ======================================================================================

HOST = "telemetry.fleetwire.test"


@pytest.fixture(scope="module")
def ca() -> pki.Bundle:
    return pki.make_ca("Renewal Test CA")


def test_renewal_reasons(ca: pki.Bundle) -> None:
    cert = pki.make_server_cert(ca, [HOST], days=90).cert
    start = cert.not_valid_before_utc
    assert renewal_reason(None, HOST, start) == "no certificate"
    assert renewal_reason(cert, HOST, start + dt.timedelta(days=59)) is None
    assert renewal_reason(cert, HOST.upper() + ".", start + dt.timedelta(days=1)) is None
    assert (
        renewal_reason(cert, HOST, start + dt.timedelta(days=87))
        == "expires in 3 days (renew at 2/3 of a 90-day lifetime)"
    )
    assert str(renewal_reason(cert, HOST, start + dt.timedelta(days=95))).startswith("expired 4 days")
    changed = renewal_reason(cert, "new.fleetwire.test", start)
    assert changed == f"hostname changed: SAN has {HOST}, want new.fleetwire.test"
    cn_only = pki.make_server_cert(ca, [HOST], cn_only=True).cert
    assert str(renewal_reason(cn_only, HOST, start)).startswith("certificate is CN-only")


def test_renew_before_overrides_two_thirds(ca: pki.Bundle) -> None:
    cert = pki.make_server_cert(ca, [HOST], days=90).cert
    end = cert.not_valid_after_utc
    assert renew_at(cert, dt.timedelta(days=10)) == end - dt.timedelta(days=10)
    assert renewal_reason(cert, HOST, end - dt.timedelta(days=11), dt.timedelta(days=10)) is None
    assert (
        renewal_reason(cert, HOST, end - dt.timedelta(hours=5), dt.timedelta(days=10))
        == "expires in 5 hours (renew 10 days before expiry)"
    )


def test_wildcard_san_covers_one_label(ca: pki.Bundle) -> None:
    cert = pki.make_server_cert(ca, ["*.fleetwire.test"]).cert
    now = cert.not_valid_before_utc + dt.timedelta(hours=2)
    assert renewal_reason(cert, HOST, now) is None
    assert renewal_reason(cert, "a.b.fleetwire.test", now) is not None


def test_short_lifetimes_are_named_in_hours(ca: pki.Bundle) -> None:
    six_days = pki.make_server_cert(ca, [HOST], days=6).cert
    reason = renewal_reason(six_days, HOST, six_days.not_valid_after_utc - dt.timedelta(days=1))
    assert reason == "expires in 1 day (renew at 2/3 of a 6-day lifetime)"


def test_backoff_doubles_and_caps() -> None:
    assert backoff(0) == dt.timedelta(0)
    assert [backoff(n).total_seconds() / 60 for n in range(1, 6)] == [5, 10, 20, 40, 80]
    assert backoff(7) < backoff(8) == backoff(10_000) == dt.timedelta(hours=6)
    assert backoff(3, base=dt.timedelta(seconds=1), cap=dt.timedelta(seconds=3)) == dt.timedelta(seconds=3)
