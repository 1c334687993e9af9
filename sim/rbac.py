"""RBAC as the API server's authorizer decides it, for the Kubernetes API emulator: pure functions.

A `Policy` is what a set of rendered objects (a chart's `helm template`: ServiceAccount,
Role/ClusterRole, RoleBinding/ClusterRoleBinding) grants one ServiceAccount: a
ClusterRoleBinding's rules apply everywhere, a RoleBinding's in its namespace only (to a
Role there or a ClusterRole). `Policy.denial(access)` is None when a rule allows the
request, else the message the API server writes in its 403 Status. `access_of` turns an
HTTP request into what RBAC sees: the verb (GET is get, list or watch; DELETE of a
collection is deletecollection), the API group, the resource (`resource/subresource`),
the namespace and the name.

Not emulated: aggregated ClusterRoles, non-resource URLs, impersonation, `escalate`/`bind`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Access", "Policy", "Rule", "access_of"]


@dataclass(frozen=True)
class Access:
    """One request as the authorizer sees it."""

    verb: str
    group: str
    resource: str
    subresource: str | None = None
    namespace: str | None = None
    name: str | None = None

    @property
    def full_resource(self) -> str:
        return f"{self.resource}/{self.subresource}" if self.subresource else self.resource

    @property
    def triple(self) -> tuple[str, str, str]:
        """(verb, api group, resource[/subresource]), as tests/data/operator-api-requests.json lists them."""
        return (self.verb, self.group, self.full_resource)


def access_of(method: str, group: str, resource: str, subresource: str | None, namespace: str | None,
              name: str | None, params: Mapping[str, str]) -> Access:
    """What RBAC checks for an HTTP request."""
    method = method.upper()
    if method == "GET":
        verb = "watch" if params.get("watch") in ("true", "1") else "get" if name else "list"
    else:
        verb = {"POST": "create", "PUT": "update", "PATCH": "patch",
                "DELETE": "delete" if name else "deletecollection"}.get(method, method.lower())
    return Access(verb, group, resource, subresource, namespace, name)


@dataclass(frozen=True)
class Rule:
    verbs: frozenset[str]
    groups: frozenset[str]
    resources: frozenset[str]
    names: frozenset[str] = frozenset()

    @classmethod
    def of(cls, rule: Mapping[str, Any]) -> Rule:
        return cls(frozenset(rule.get("verbs") or ()), frozenset(rule.get("apiGroups") or ()),
                   frozenset(rule.get("resources") or ()), frozenset(rule.get("resourceNames") or ()))

    def allows(self, access: Access) -> bool:
        if not ({"*", access.verb} & self.verbs and {"*", access.group} & self.groups):
            return False
        wanted = access.full_resource
        if not ({"*", wanted} & self.resources or (access.subresource and f"*/{access.subresource}" in
                                                    self.resources)):
            return False
        return not self.names or (access.name is not None and access.name in self.names)


@dataclass(frozen=True)
class Policy:
    """What the bindings grant one ServiceAccount."""

    namespace: str
    account: str
    cluster_rules: tuple[Rule, ...] = ()
    namespace_rules: Mapping[str, tuple[Rule, ...]] = field(default_factory=dict)

    @property
    def user(self) -> str:
        return f"system:serviceaccount:{self.namespace}:{self.account}"

    @classmethod
    def from_objects(cls, objects: Iterable[Mapping[str, Any]], namespace: str, account: str) -> Policy:
        objects = list(objects)
        roles = {(o["kind"], (o["metadata"].get("namespace") if o["kind"] == "Role" else None),
                  o["metadata"]["name"]): o for o in objects if o.get("kind") in ("Role", "ClusterRole")}
        cluster: list[Rule] = []
        scoped: dict[str, list[Rule]] = {}
        for binding in (o for o in objects if o.get("kind") in ("RoleBinding", "ClusterRoleBinding")):
            if not any(s.get("kind") == "ServiceAccount" and s.get("name") == account
                       and s.get("namespace") == namespace for s in binding.get("subjects") or ()):
                continue
            ref = binding["roleRef"]
            where = binding["metadata"].get("namespace") if binding["kind"] == "RoleBinding" else None
            role = roles.get((ref["kind"], where if ref["kind"] == "Role" else None, ref["name"]))
            if role is None:
                continue  # a binding to a missing role grants nothing, as on a cluster
            rules = [Rule.of(rule) for rule in role.get("rules") or ()]
            if where is None:
                cluster += rules
            else:
                scoped.setdefault(where, []).extend(rules)
        return cls(namespace, account, tuple(cluster), {ns: tuple(rules) for ns, rules in scoped.items()})

    def without(self, verb: str, group: str, resource: str) -> Policy:
        """This policy with one (verb, group, resource) grant taken away (for tests of the enforcement)."""
        def strip(rules: tuple[Rule, ...]) -> tuple[Rule, ...]:
            out = []
            for rule in rules:
                if group in rule.groups and resource in rule.resources and verb in rule.verbs:
                    out.append(Rule(rule.verbs - {verb}, rule.groups, frozenset({resource}), rule.names))
                    others = rule.resources - {resource}
                    if others:
                        out.append(Rule(rule.verbs, rule.groups, others, rule.names))
                else:
                    out.append(rule)
            return tuple(out)
        return Policy(self.namespace, self.account, strip(self.cluster_rules),
                      {ns: strip(rules) for ns, rules in self.namespace_rules.items()})

    def allows(self, access: Access) -> bool:
        rules = self.cluster_rules + (self.namespace_rules.get(access.namespace, ()) if access.namespace else ())
        return any(rule.allows(access) for rule in rules)

    def denial(self, access: Access) -> str | None:
        """None if allowed; else the API server's 403 message."""
        if self.allows(access):
            return None
        what = f'{access.full_resource}{"." + access.group if access.group else ""}'
        subject = f'{what} "{access.name}"' if access.name else what
        scope = f'in the namespace "{access.namespace}"' if access.namespace else "at the cluster scope"
        group = f'in API group "{access.group}"'
        return (f'{subject} is forbidden: User "{self.user}" cannot {access.verb} resource '
                f'"{access.full_resource}" {group} {scope}')
