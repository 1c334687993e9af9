"""The ACME client's errors, each saying what happened and what to do about it, and the
translation of library, HTTP and protocol failures into them (`explain`): pure, tested
without a CA."""

from __future__ import annotations

import requests
from acme import errors, messages
from josepy.errors import DeserializationError

__all__ = [
    "AcmeError",
    "AcmeServerError",
    "ChallengeFailed",
    "DirectoryUnreachable",
    "RateLimited",
    "challenge_error",
    "explain",
]


class AcmeError(Exception):
    """An ACME step failed; `str(error)` is meant for the resource's status and events."""


class DirectoryUnreachable(AcmeError):
    """The ACME server could not be reached or its TLS certificate was not trusted."""


class RateLimited(AcmeError):
    """The CA refused because of a rate limit; retrying early only extends the wait."""


class ChallengeFailed(AcmeError):
    """The CA tried to validate the challenge and failed; `detail` is the CA's own words."""

    def __init__(self, message: str, challenge_type: str, detail: str) -> None:
        super().__init__(message)
        self.challenge_type = challenge_type
        self.detail = detail


class AcmeServerError(AcmeError):
    """The CA answered with a problem other than the above (refused name, bad account, ...)."""


_HINTS = {
    "rejectedIdentifier": "the CA will not issue for this name (policy or blocklist)",
    "unauthorized": "the account may not act on this resource; check the account key and directory",
    "externalAccountRequired": "this CA requires External Account Binding credentials",
    "invalidContact": "fix the registration email address",
    "unsupportedContact": "fix the registration email address",
    "accountDoesNotExist": "the stored account key is unknown to this CA; register again",
    "caa": "a CAA record on the domain forbids this CA from issuing",
    "dns": "the CA could not resolve the name; check the DNS record",
    "connection": "the CA could not connect; check the DNS record, port 80 and the firewall",
}


def explain(exc: BaseException, action: str, url: str) -> AcmeError:
    """Turn a library, HTTP or protocol failure during `action` into an actionable `AcmeError`."""
    if isinstance(exc, AcmeError):
        return exc
    if isinstance(exc, requests.exceptions.SSLError):
        return DirectoryUnreachable(
            f"TLS verification failed talking to the ACME server at {url} while trying to {action}: "
            f"{exc}. For a private CA pass its CA bundle as `verify`."
        )
    if isinstance(exc, (requests.exceptions.ConnectionError, requests.exceptions.Timeout)):
        return DirectoryUnreachable(
            f"cannot reach the ACME server at {url} while trying to {action}: {type(exc).__name__}. "
            "Check the directory URL, DNS and outbound firewall rules."
        )
    if isinstance(exc, errors.ValidationError):
        return _challenge_failed(exc)
    if isinstance(exc, messages.Error):
        detail = exc.detail or exc.title or exc.description or str(exc.typ)
        if exc.code == "rateLimited":
            return RateLimited(
                f"the ACME server rate-limited the request to {action}: {detail}. "
                "Wait before retrying; every early retry counts against the limit."
            )
        hint = _HINTS.get(exc.code or "")
        return AcmeServerError(
            f"the ACME server refused to {action}: {exc.code or exc.typ}: {detail}" + (f" ({hint})" if hint else "")
        )
    if isinstance(exc, errors.IssuanceError):
        return AcmeServerError(f"the ACME server did not issue the certificate: {exc.error}")
    if isinstance(exc, errors.TimeoutError):
        return AcmeError(f"timed out waiting for the ACME server to {action}; it may be overloaded, try again later")
    if isinstance(exc, DeserializationError):
        return AcmeServerError(f"{url} did not answer like an ACME server while trying to {action}: {exc}")
    if isinstance(exc, errors.ClientError):
        return AcmeServerError(f"unexpected answer from the ACME server at {url} while trying to {action}: {exc!r}")
    return AcmeError(f"could not {action}: {type(exc).__name__}: {exc}")


def _challenge_failed(exc: errors.ValidationError) -> ChallengeFailed:
    for authzr in exc.failed_authzrs:
        for challb in authzr.body.challenges:
            if challb.error is not None:
                return challenge_error(authzr.body.identifier.value, challb)
    return ChallengeFailed("challenge validation failed without detail from the server", "unknown", "")


def challenge_error(name: str, challb: messages.ChallengeBody) -> ChallengeFailed:
    error = challb.error
    detail = (error.detail or str(error)) if error is not None else "no detail given"
    code = error.code if error is not None else None
    hint = _HINTS.get(code or "")
    return ChallengeFailed(
        f"{challb.chall.typ} validation of {name} failed: {detail}" + (f" ({hint})" if hint else ""),
        challb.chall.typ,
        detail,
    )
