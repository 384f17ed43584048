"""Which connections NetworkPolicies allow, decided as Kubernetes defines it (networking/v1,
`staging/src/k8s.io/api/networking/v1/types.go` at 1.35, and the NetworkPolicy concept page):

- a pod is isolated for ingress (egress) when some policy of its namespace selects it and
  lists Ingress (Egress) in policyTypes; a pod no policy isolates allows that direction;
- a connection is allowed when the source's egress and the destination's ingress both allow
  it; an isolated direction allows what any rule of any selecting policy matches;
- a rule matches when one of its peers matches (no `to`/`from`: every peer) and one of its
  ports does (no `ports`: every port); a port is a number or a container port's name, the
  protocol TCP unless given;
- a peer: `podSelector` alone selects pods of the policy's namespace, `namespaceSelector`
  alone every pod of the selected namespaces, both together pods of those namespaces;
  `ipBlock` an address range (less `except`), which here matches addresses outside the
  cluster's pods (the API server's endpoints, the internet).
"""

from __future__ import annotations

import dataclasses
import ipaddress


@dataclasses.dataclass(frozen=True)
class Pod:
    name: str
    namespace: str
    labels: dict
    ports: dict = dataclasses.field(default_factory=dict)  # name -> (number, protocol)

    @property
    def namespace_labels(self) -> dict:
        return {"kubernetes.io/metadata.name": self.namespace}


@dataclasses.dataclass(frozen=True)
class Address:
    """An endpoint outside the cluster's pods."""

    name: str
    ip: str


def matches(selector: dict | None, labels: dict) -> bool:
    """A LabelSelector: matchLabels and matchExpressions (In, NotIn, Exists, DoesNotExist)."""
    if selector is None:
        return False
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expression in selector.get("matchExpressions") or []:
        key, op, values = expression["key"], expression["operator"], expression.get("values", [])
        present = key in labels
        if op == "In" and not (present and labels[key] in values):
            return False
        if op == "NotIn" and present and labels[key] in values:
            return False
        if op == "Exists" and not present:
            return False
        if op == "DoesNotExist" and present:
            return False
    return True


def peer_matches(peer: dict, policy_namespace: str, other: Pod | Address) -> bool:
    if "ipBlock" in peer:
        if not isinstance(other, Address):
            return False
        block = peer["ipBlock"]
        ip = ipaddress.ip_address(other.ip)
        return ip in ipaddress.ip_network(block["cidr"]) and not any(
            ip in ipaddress.ip_network(e) for e in block.get("except", [])
        )
    if not isinstance(other, Pod):
        return False
    if "namespaceSelector" in peer:
        if not matches(peer["namespaceSelector"], other.namespace_labels):
            return False
    elif other.namespace != policy_namespace:
        return False
    return "podSelector" not in peer or matches(peer["podSelector"], other.labels)


def port_matches(ports: list[dict] | None, port: int, protocol: str, target: Pod | Address) -> bool:
    if not ports:
        return True
    for entry in ports:
        if entry.get("protocol", "TCP") != protocol:
            continue
        wanted = entry.get("port")
        if wanted is None:
            return True
        if isinstance(wanted, str):
            named = target.ports.get(wanted) if isinstance(target, Pod) else None
            if named and named == (port, protocol):
                return True
            continue
        if wanted <= port <= entry.get("endPort", wanted):
            return True
    return False


def direction_allows(
    policies: list[dict], pod: Pod, kind: str, other: Pod | Address, port: int, protocol: str, target: Pod | Address
) -> bool:
    selecting = [
        p
        for p in policies
        if p["metadata"]["namespace"] == pod.namespace
        and matches(p["spec"]["podSelector"], pod.labels)
        and kind in p["spec"].get("policyTypes", ["Ingress"])
    ]
    if not selecting:
        return True
    field, peers_key = ("ingress", "from") if kind == "Ingress" else ("egress", "to")
    for policy in selecting:
        for rule in policy["spec"].get(field) or []:
            peers = rule.get(peers_key)
            if (peers is None or any(peer_matches(peer, pod.namespace, other) for peer in peers)) and port_matches(
                rule.get("ports"), port, protocol, target
            ):
                return True
    return False


def allowed(policies: list[dict], source: Pod | Address, target: Pod | Address, port: int, protocol: str = "TCP"):
    egress = not isinstance(source, Pod) or direction_allows(policies, source, "Egress", target, port, protocol, target)
    ingress = not isinstance(target, Pod) or direction_allows(
        policies, target, "Ingress", source, port, protocol, target
    )
    return egress and ingress
