"""Parsing a FleetTelemetryConfig spec: every section checked, every problem reported at once.

`parse_spec` walks the spec with a `SpecParser` (`spec_reader`'s helpers, one method per
section) and raises `SpecError` listing every (path, message). Record types, dispatchers
(`crd.RECORD_TYPES`, `crd.DISPATCHERS`) and the server-made types that are never acked
(`SERVER_RECORD_TYPES`) are the server's own definitions, not restated here.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import replace
from datetime import timedelta
from types import MappingProxyType
from typing import Any

from fleetwire.operator.resource import crd
from fleetwire.operator.resource.spec import (
    EMPTY,
    FLEET_API_BASE_URLS,
    PEM_CERT,
    AcmeCertificate,
    CertificateSource,
    Dns01Challenge,
    EnvVar,
    FieldConfig,
    FleetApiSpec,
    FleetTelemetrySpec,
    PrivateCaCertificate,
    RateLimit,
    Rotation,
    SecretCertificate,
    ServerSpec,
    SpecError,
)
from fleetwire.operator.resource.spec_reader import SpecReader
from fleetwire.strictjson import show, suggest
from fleetwire.proto import catalog
from fleetwire.proto.record_types import SERVER_RECORD_TYPES
from fleetwire.strictjson import SECRET_KEY

__all__ = ["parse_duration", "parse_spec"]

_HOSTNAME = re.compile(crd.HOSTNAME_PATTERN)
_VIN = re.compile(crd.VIN_PATTERN)
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_URL = re.compile(crd.HTTPS_URL_PATTERN)
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+$")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_DURATION_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}


def parse_duration(text: str) -> timedelta:
    """A Go-style duration ("720h", "1h30m", "90s", "250ms") as a timedelta."""
    if not isinstance(text, str) or not text or _DURATION_PART.sub("", text):
        raise ValueError(f"expected a duration such as 720h or 1h30m, got {text!r}")
    seconds = sum(float(n) * _DURATION_UNITS[unit] for n, unit in _DURATION_PART.findall(text))
    return timedelta(seconds=seconds)


class SpecParser(SpecReader):
    """One method per section of the spec."""

    def spec(self, data: Mapping[str, Any]) -> FleetTelemetrySpec | None:
        path = "spec"
        self.known(data, path, ["hostname", "port", "certificate", "server", "vehicles", "fields",
                                "alertTypes", "exp", "deliveryPolicy", "fleetApi"])
        hostname = self.hostname(data.get("hostname"))
        port = self.port(data)
        certificate = self.certificate(data.get("certificate"))
        rotation = self.rotation(data.get("certificate"))
        server_data = self.mapping(data.get("server"), f"{path}.server")
        server = self.server(server_data) if server_data is not None else ServerSpec()
        vehicles = self.string_list(data, "vehicles", path, pattern=_VIN, form="a VIN (17 letters and digits)")
        fields = self.fields(data.get("fields"))
        alert_types = self.string_list(data, "alertTypes", path)
        exp_days = self.integer(data, "exp", path, minimum=1, unit="days")
        delivery = self.string(data, "deliveryPolicy", path, choices=crd.DELIVERY_POLICIES)
        fleet_data = self.mapping(data.get("fleetApi"), f"{path}.fleetApi")
        fleet_api = self.fleet_api(fleet_data) if fleet_data is not None else None
        if vehicles and fleet_data is None:
            self.fail(f"{path}.fleetApi", "required: spec.vehicles are configured through the Fleet API")
        if vehicles and not fields and not alert_types:
            self.fail(f"{path}.fields", "nothing to stream: give fields or alertTypes for the vehicles")
        if hostname is None or port is None or certificate is None or self.problems:
            return None
        return FleetTelemetrySpec(
            hostname=hostname, port=port, certificate=certificate, server=server, vehicles=vehicles,
            fields=fields, alert_types=alert_types, exp_days=exp_days, delivery_policy=delivery,
            fleet_api=fleet_api, rotation=rotation,
        )

    def hostname(self, value: Any) -> str | None:
        path = "spec.hostname"
        if value is None:
            self.fail(path, "required: the server's public DNS name, e.g. telemetry.example.com")
            return None
        if not isinstance(value, str):
            self.fail(path, f"must be a DNS name, not {show(value)}")
            return None
        if len(value) > 253 or not _HOSTNAME.match(value):
            hint = " (use lower case)" if _HOSTNAME.match(value.lower()) else ""
            self.fail(path, f"{value!r} is not a DNS name such as telemetry.example.com{hint}")
            return None
        return value

    def port(self, data: Mapping[str, Any]) -> int | None:
        value = data.get("port")
        if isinstance(value, str):
            self.fail("spec.port", f"must be an integer, not the string {value!r}: vehicles given a "
                      "string port in their config stop streaming")
            return None
        return self.integer(data, "port", "spec", default=443, minimum=1, maximum=65535)

    def certificate(self, value: Any) -> CertificateSource | None:
        path = "spec.certificate"
        if value is None:
            self.fail(path, f"required: exactly one of {', '.join(crd.CERTIFICATE_MODES)}")
            return None
        data = self.mapping(value, path)
        if data is None:
            return None
        self.known(data, path, [*crd.CERTIFICATE_MODES, "rotation"])
        given = [mode for mode in crd.CERTIFICATE_MODES if mode in data]
        if len(given) != 1:
            got = f"got {' and '.join(given)}" if given else "got none"
            self.fail(path, f"give exactly one of {', '.join(crd.CERTIFICATE_MODES)} ({got})")
            return None
        mode = given[0]
        section = self.mapping(data[mode], f"{path}.{mode}")
        section = section if section is not None else EMPTY
        if mode == "acme":
            return self.acme(section, f"{path}.acme")
        if mode == "secretRef":
            ref = self.secret_ref(section, f"{path}.secretRef", default_key=None)
            return SecretCertificate(ref.name) if ref else None
        return self.private_ca(section, f"{path}.privateCA")

    def rotation(self, value: Any) -> Rotation:
        path = "spec.certificate.rotation"
        section = value.get("rotation") if isinstance(value, Mapping) else None
        data = self.mapping(section, path) if section is not None else None
        if data is None:
            return Rotation()
        self.known(data, path, ["maxWait", "safetyMargin"])
        values: dict[str, timedelta] = {}
        for key, name in (("maxWait", "max_wait"), ("safetyMargin", "safety_margin")):
            text = self.string(data, key, path)
            if text is None:
                continue
            try:
                values[name] = parse_duration(text)
            except ValueError as exc:
                self.fail(f"{path}.{key}", str(exc))
        return Rotation(**values)

    def acme(self, data: Mapping[str, Any], path: str) -> AcmeCertificate | None:
        self.known(data, path, ["directoryUrl", "email", "challenge", "dns01", "renewBefore",
                                "rootCertificates", "accountSecretName"])
        directory = self.string(data, "directoryUrl", path, default=crd.DEFAULT_ACME_DIRECTORY,
                                pattern=_URL, form="an http(s) URL")
        email = self.string(data, "email", path, pattern=_EMAIL, form="an e-mail address")
        challenge = self.string(data, "challenge", path, default="http01", choices=crd.CHALLENGES)
        dns01 = None
        dns_data = self.mapping(data.get("dns01"), f"{path}.dns01")
        if dns_data is not None:
            dns01 = self.dns01(dns_data, f"{path}.dns01")
        elif challenge == "dns01":
            self.fail(f"{path}.dns01", "required when challenge is dns01: provider, zone, apiTokenSecretRef")
        renew_before = None
        renew_text = self.string(data, "renewBefore", path)
        if renew_text is not None:
            try:
                renew_before = parse_duration(renew_text)
            except ValueError as exc:
                self.fail(f"{path}.renewBefore", str(exc))
            else:
                if renew_before <= timedelta(0):
                    self.fail(f"{path}.renewBefore", "must be longer than zero")
        roots = self.string(data, "rootCertificates", path)
        if roots is not None and not PEM_CERT.search(roots):
            self.fail(f"{path}.rootCertificates", "must hold PEM certificates (-----BEGIN CERTIFICATE-----)")
        account = self.string(data, "accountSecretName", path)
        return AcmeCertificate(
            directory_url=directory or crd.DEFAULT_ACME_DIRECTORY, email=email,
            challenge=challenge or "http01", dns01=dns01, renew_before=renew_before,
            root_certificates=roots, account_secret_name=account,
        )

    def dns01(self, data: Mapping[str, Any], path: str) -> Dns01Challenge | None:
        self.known(data, path, ["provider", "zone", "apiTokenSecretRef"])
        provider = self.string(data, "provider", path, required=True, choices=crd.DNS01_PROVIDERS,
                               form=" or ".join(crd.DNS01_PROVIDERS))
        zone = self.string(data, "zone", path, required=True, pattern=_HOSTNAME, form="a DNS zone such as example.com")
        token_path = f"{path}.apiTokenSecretRef"
        if data.get("apiTokenSecretRef") is None:
            self.fail(token_path, "required: the Secret (name, key) holding the provider's API token")
        token = self.secret_ref(data.get("apiTokenSecretRef"), token_path, default_key="api-token")
        if provider is None or zone is None or token is None:
            return None
        return Dns01Challenge(provider, zone, token)

    def private_ca(self, data: Mapping[str, Any], path: str) -> PrivateCaCertificate | None:
        self.known(data, path, ["validityDays", "leafValidityDays"])
        ca_days = self.integer(data, "validityDays", path, default=3650, minimum=1, unit="days")
        leaf_days = self.integer(data, "leafValidityDays", path, default=365, minimum=1, unit="days")
        if ca_days is None or leaf_days is None:
            return None
        if leaf_days > ca_days:
            self.fail(f"{path}.leafValidityDays", f"{leaf_days} days outlives the CA ({ca_days} days)")
            return None
        return PrivateCaCertificate(ca_days, leaf_days)

    def server(self, data: Mapping[str, Any]) -> ServerSpec:
        path = "spec.server"
        self.known(data, path, ["replicas", "image", "resources", "serviceType", "records",
                                "reliableAckSources", "namespace", "rateLimit", "vins", "env", *crd.DISPATCHERS])
        replicas = self.integer(data, "replicas", path, default=1, minimum=1)
        image = self.string(data, "image", path)
        resources = self.mapping(data.get("resources"), f"{path}.resources")
        service_type = self.string(data, "serviceType", path, default="LoadBalancer", choices=crd.SERVICE_TYPES)
        dispatchers: dict[str, Mapping[str, Any]] = {}
        for name in crd.DISPATCHERS:
            settings = self.mapping(data.get(name), f"{path}.{name}")
            if settings is not None:
                dispatchers[name] = MappingProxyType(self.dispatcher_settings(settings, f"{path}.{name}"))
        env = self.env(data.get("env"), f"{path}.env")
        records = self.records(data.get("records"), f"{path}.records", dispatchers)
        reliable = self.reliable(data.get("reliableAckSources"), f"{path}.reliableAckSources", records)
        namespace = self.string(data, "namespace", path)
        rate_limit = None
        rate_data = self.mapping(data.get("rateLimit"), f"{path}.rateLimit")
        if rate_data is not None:
            rate_path = f"{path}.rateLimit"
            self.known(rate_data, rate_path, ["enabled", "messageLimit", "messageIntervalTime"])
            interval = self.number(rate_data, "messageIntervalTime", rate_path, minimum=0, exclusive=True)
            rate_limit = RateLimit(
                enabled=self.boolean(rate_data, "enabled", rate_path, False),
                message_limit=self.integer(rate_data, "messageLimit", rate_path, minimum=1),
                message_interval_time=None if interval is None else float(interval),
            )
        allow: tuple[str, ...] = ()
        deny: tuple[str, ...] = ()
        vins_data = self.mapping(data.get("vins"), f"{path}.vins")
        if vins_data is not None:
            self.known(vins_data, f"{path}.vins", ["allow", "deny"])
            form = "a VIN (17 letters and digits)"
            allow = self.string_list(vins_data, "allow", f"{path}.vins", pattern=_VIN, form=form)
            deny = self.string_list(vins_data, "deny", f"{path}.vins", pattern=_VIN, form=form)
        return ServerSpec(
            replicas=replicas or 1, image=image,
            resources=MappingProxyType(dict(resources or {})),
            service_type=service_type or "LoadBalancer", records=records, reliable_ack_sources=reliable,
            dispatchers=MappingProxyType(dispatchers), namespace=namespace, rate_limit=rate_limit,
            vins_allow=allow, vins_deny=deny, env=env,
        )

    def dispatcher_settings(self, data: Mapping[str, Any], path: str) -> dict[str, Any]:
        """A backend's settings with every `{secretKeyRef: {name, key}}` read as a `SecretKeyRef`.

        A credential written in place would be readable by anyone who can read the
        resource, and would land in the server's ConfigMap: it is refused.
        """
        settings: dict[str, Any] = {}
        for key, value in data.items():
            where = f"{path}.{key}"
            if isinstance(value, Mapping) and "secretKeyRef" in value:
                self.known(value, where, ["secretKeyRef"])
                settings[key] = self.secret_ref(value["secretKeyRef"], f"{where}.secretKeyRef", default_key="")
                if settings[key] is not None and not settings[key].key:
                    self.fail(f"{where}.secretKeyRef.key", "required: the key of the Secret that holds the value")
            elif isinstance(value, Mapping):
                settings[key] = self.dispatcher_settings(value, where)
            elif SECRET_KEY.search(str(key)) and value not in ("", None, False):
                self.fail(where, "a credential is never written in the resource (anyone who can read it, and the "
                          "server's ConfigMap, would show it): give {secretKeyRef: {name: <Secret>, key: <key>}}")
            else:
                settings[key] = value
        return settings

    def env(self, value: Any, path: str) -> tuple[EnvVar, ...]:
        """The server container's environment (e.g. REDIS_PASSWORD, AWS_* for kinesis):
        `{name, value}`, or `{name, valueFrom: {secretKeyRef: {name, key}}}` for credentials."""
        if value is None:
            return ()
        if not isinstance(value, list):
            self.fail(path, f"must be a list of {{name, value}} or {{name, valueFrom}}, not {show(value)}")
            return ()
        variables: list[EnvVar] = []
        for index, item in enumerate(value):
            where = f"{path}[{index}]"
            entry = self.mapping(item, where)
            if entry is None:
                continue
            self.known(entry, where, ["name", "value", "valueFrom"])
            name = self.string(entry, "name", where, required=True, pattern=_ENV_NAME,
                               form="an environment variable name (letters, digits, _)")
            if name is None:
                continue
            if "valueFrom" in entry:
                source = self.mapping(entry["valueFrom"], f"{where}.valueFrom") or {}
                self.known(source, f"{where}.valueFrom", ["secretKeyRef"])
                ref = self.secret_ref(source.get("secretKeyRef"), f"{where}.valueFrom.secretKeyRef", default_key="")
                if ref is None or not ref.key:
                    self.fail(f"{where}.valueFrom.secretKeyRef", "required: {name: <Secret>, key: <key>}")
                    continue
                variables.append(EnvVar(name, secret=ref))
            elif SECRET_KEY.search(name):
                self.fail(f"{where}.value", f"{name} holds a credential: give valueFrom.secretKeyRef instead of a value")
            else:
                text = entry.get("value", "")
                if not isinstance(text, str):
                    self.fail(f"{where}.value", f"must be a string, not {show(text)}")
                    continue
                variables.append(EnvVar(name, value=text))
        return tuple(variables)

    def records(self, value: Any, path: str, dispatchers: Mapping[str, Any]) -> Mapping[str, tuple[str, ...]]:
        data = self.mapping(value, path)
        if data is None:
            return EMPTY
        out: dict[str, tuple[str, ...]] = {}
        for record_type, names in data.items():
            where = f"{path}.{record_type}"
            if record_type not in crd.RECORD_TYPES:
                self.fail(where, f"unknown record type; expected one of {', '.join(crd.RECORD_TYPES)}"
                          + suggest(str(record_type), crd.RECORD_TYPES))
                continue
            listed = self.string_list(data, record_type, path)
            for index, name in enumerate(listed):
                if name not in crd.DISPATCHERS:
                    self.fail(f"{where}[{index}]", f"unknown dispatcher {name!r}; expected one of "
                              f"{', '.join(crd.DISPATCHERS)}" + suggest(name, crd.DISPATCHERS))
                elif name != "logger" and name not in dispatchers:
                    self.fail(f"{where}[{index}]", f"{name} needs its settings in spec.server.{name}")
            out[record_type] = listed
        return MappingProxyType(out)

    def reliable(self, value: Any, path: str, records: Mapping[str, tuple[str, ...]]) -> Mapping[str, str]:
        data = self.mapping(value, path)
        if data is None:
            return EMPTY
        out: dict[str, str] = {}
        for record_type, name in data.items():
            where = f"{path}.{record_type}"
            if record_type not in crd.RECORD_TYPES:
                self.fail(where, f"unknown record type; expected one of {', '.join(crd.RECORD_TYPES)}"
                          + suggest(str(record_type), crd.RECORD_TYPES))
            elif record_type in SERVER_RECORD_TYPES:
                self.fail(where, f"{record_type} records are produced by the server itself and never acked")
            elif name == "logger":
                self.fail(where, "the logger stores nothing, so it cannot confirm records; name a backend")
            elif not isinstance(name, str) or name not in records.get(record_type, ()):
                self.fail(where, f"must name a dispatcher that spec.server.records.{record_type} lists, "
                          f"not {show(name)}")
            else:
                out[record_type] = name
        return MappingProxyType(out)

    def fields(self, value: Any) -> Mapping[str, FieldConfig]:
        path = "spec.fields"
        data = self.mapping(value, path)
        if data is None:
            return EMPTY
        out: dict[str, FieldConfig] = {}
        for name in sorted(data, key=str):
            where = f"{path}.{name}"
            try:
                info = catalog.validate_field_name(str(name))
            except catalog.UnknownFieldError as exc:
                info = catalog.BY_NAME.get(str(name))
                if info is not None and info.number == 0:
                    self.fail(where, "is the Field enum's zero value, not a streamable field")
                else:
                    hint = f" (did you mean {exc.suggestion!r}?)" if exc.suggestion else ""
                    self.fail(where, f"unknown field{hint}")
                continue
            config = self.mapping(data[name], where)
            if config is None:
                if data[name] is None:
                    self.fail(where, "needs at least interval_seconds")
                continue
            self.known(config, where, ["interval_seconds", "minimum_delta", "resend_interval_seconds"])
            interval = self.integer(config, "interval_seconds", where, required=True, minimum=1, unit="seconds")
            delta = self.number(config, "minimum_delta", where, minimum=0)
            if info.min_delta is not None and (delta is not None or "minimum_delta" not in config):
                delta = self.delta_floor(delta, info.min_delta, f"{where}.minimum_delta")
            resend = self.integer(config, "resend_interval_seconds", where, minimum=1, unit="seconds")
            if info.provisional:
                self.warn(where, f"provisional field (number {info.number}): its number may still change, "
                          "so vehicles may stream it under another number or not at all")
            if interval is not None:
                out[str(name)] = FieldConfig(interval, delta, resend)
        return MappingProxyType(out)

    def delta_floor(self, delta: int | float | None, floor: float, where: str) -> int | float | None:
        """A field whose `minimum_delta` the vehicles require, and require to be at least `floor`."""
        if delta is None:
            self.fail(where, f"required for this field: a number of at least {floor:g} (vehicles refuse a smaller one)")
        elif delta < floor:
            self.fail(where, f"must be at least {floor:g} for this field, not {delta:g} (vehicles refuse a smaller one)")
            return None
        return delta

    def fleet_api(self, data: Mapping[str, Any]) -> FleetApiSpec | None:
        path = "spec.fleetApi"
        self.known(data, path, ["region", "baseUrl", "partnerCredentialsSecretRef", "userTokenSecretRef",
                                "signingKeySecretRef", "proxyUrl"])
        region = self.string(data, "region", path, choices=crd.FLEET_REGIONS)
        base_url = self.string(data, "baseUrl", path, pattern=_URL, form="an http(s) URL")
        if ("region" in data) == ("baseUrl" in data):
            self.fail(path, f"give exactly one of region ({', '.join(crd.FLEET_REGIONS)}) or baseUrl")
        partner = self.required_ref(data, "partnerCredentialsSecretRef", path, "client_id and client_secret")
        user = self.required_ref(data, "userTokenSecretRef", path, "refresh_token")
        signing = self.secret_ref(data.get("signingKeySecretRef"), f"{path}.signingKeySecretRef",
                                  default_key="private-key.pem")
        proxy = self.string(data, "proxyUrl", path, pattern=_URL, form="an http(s) URL")
        if data.get("signingKeySecretRef") is None and proxy is None:
            self.fail(f"{path}.signingKeySecretRef", "required unless proxyUrl is set: configurations "
                      "must be signed with the app's key")
        url = base_url or (FLEET_API_BASE_URLS[region] if region else None)
        if url is None or partner is None or user is None:
            return None
        return FleetApiSpec(base_url=url.rstrip("/"), region=region, partner_credentials_secret=partner,
                            user_token_secret=user, signing_key=signing, proxy_url=proxy)

    def required_ref(self, data: Mapping[str, Any], key: str, path: str, holds: str) -> str | None:
        if data.get(key) is None:
            self.fail(f"{path}.{key}", f"required: the Secret holding {holds}")
            return None
        ref = self.secret_ref(data.get(key), f"{path}.{key}", default_key=None)
        return ref.name if ref else None



def parse_spec(spec: Mapping[str, Any]) -> FleetTelemetrySpec:
    """Check a FleetTelemetryConfig's `spec` and apply the schema's defaults.

    Raises `SpecError` listing every problem with its dotted path.
    """
    parser = SpecParser()
    if not isinstance(spec, Mapping):
        raise SpecError("spec", f"must be an object, not {show(spec)}")
    parsed = parser.spec(spec)
    if parser.problems or parsed is None:
        problems = parser.problems or [("spec", "invalid")]
        raise SpecError(problems[0][0], problems[0][1], problems)
    return replace(parsed, warnings=tuple(parser.warnings)) if parser.warnings else parsed


