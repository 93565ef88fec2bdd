"""Checks of what keeps the deployment private (issue 15), on the rendered
manifests. Each returns a list of problems, empty when all is well.

- `network_errors(docs)`: the NetworkPolicies, evaluated as Kubernetes does
  (and, for the Kafka pods, the NetworkPolicy Strimzi makes from the
  listener's networkPolicyPeers), let exactly the expected connections
  through: anyone to the public ports, Prometheus to the admin ports, each
  process to the stores it uses and to the cluster DNS, and nothing else.
- `exposure_errors(docs)`: Services publish only the public ports of
  votestream's containers, never an admin port.
- `kafka_security_errors(docs)`: the Kafka listener the clients use takes TLS
  and SCRAM users only, with ACLs enforced; the clients' librdkafka options
  say so and trust the cluster CA; each process logs in as its own KafkaUser,
  whose ACLs are exactly what it does; KEDA's scaler logs in as its own.
- `secret_errors(docs)`: the committed Secrets hold placeholders only (no
  password, private key or signing key), and where two Secrets hold the same
  credential (a user's and its client's) they agree.
"""

from __future__ import annotations

import base64
import ipaddress
import re
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

import manifest_checks as mc
from manifest_checks import Doc, container_env, containers, find, ident, is_project, pod_specs, workloads
from pod_checks import admin_port_of, public_ports_of, subcommand

# --- the network ------------------------------------------------------------------

# What runs outside the namespace, as the policies see it.
MONITORING = "monitoring"  # Prometheus's namespace (the PodMonitors' Prometheus)
DNS_NAMESPACE = "kube-system"
KEDA_NAMESPACE = "keda"
WORLD_IP = "203.0.113.7"  # any address outside the cluster


@dataclass(frozen=True)
class Endpoint:
    name: str
    namespace: str | None  # None: outside the cluster
    labels: tuple[tuple[str, str], ...] = ()
    # (port name, number, protocol) it listens on
    ports: tuple[tuple[str | None, int, str], ...] = ()
    ip: str | None = None  # outside the cluster

    def label_dict(self) -> dict[str, str]:
        return dict(self.labels)


@dataclass
class Network:
    ours: list[Endpoint] = field(default_factory=list)  # the namespace's workloads
    kafka: list[tuple[Endpoint, list[Doc]]] = field(default_factory=list)  # with their listeners
    outside: list[Endpoint] = field(default_factory=list)


def _outside() -> list[Endpoint]:
    return [
        Endpoint("world", None, ports=(("https", 443, "TCP"),), ip=WORLD_IP),
        Endpoint(
            "prometheus",
            MONITORING,
            (("app.kubernetes.io/name", "prometheus"),),
            (("web", 9090, "TCP"),),
        ),
        Endpoint("dns", DNS_NAMESPACE, (("k8s-app", "kube-dns"),), (("dns", 53, "UDP"), ("dns-tcp", 53, "TCP"))),
        Endpoint("keda", KEDA_NAMESPACE, (("app", "keda-operator"),)),
        Endpoint("elsewhere", "other", (("app", "something"),), (("http", 8080, "TCP"),)),
    ]


def network(docs: list[Doc]) -> Network:
    net = Network(outside=_outside())
    for w in workloads(docs):
        labels = mc.template_labels(w)
        ports = tuple(
            (p.get("name"), p["containerPort"], p.get("protocol", "TCP"))
            for spec in pod_specs(w)
            for c in spec["containers"]
            for p in c.get("ports", [])
        )
        name = labels.get("app.kubernetes.io/name", w["metadata"]["name"])
        net.ours.append(Endpoint(name, w["metadata"].get("namespace"), tuple(sorted(labels.items())), ports))
    for ns, labels in mc.strimzi_pods(docs):
        if labels.get("strimzi.io/broker-role") != "true":
            continue
        cluster = labels["strimzi.io/cluster"]
        kafka = [k for k in find(docs, "Kafka") if k["metadata"]["name"] == cluster]
        listeners = kafka[0]["spec"]["kafka"]["listeners"] if kafka else []
        ports = tuple((li["name"], li["port"], "TCP") for li in listeners)
        net.kafka.append((Endpoint(f"kafka/{cluster}", ns, tuple(sorted(labels.items())), ports), listeners))
    return net


def _namespace_labels(docs: list[Doc], ns: str) -> dict[str, str]:
    labels = {"kubernetes.io/metadata.name": ns}
    for n in find(docs, "Namespace", ns):
        labels.update(n["metadata"].get("labels", {}))
    return labels


def _peer_matches(docs: list[Doc], peer: Doc, policy_ns: str | None, e: Endpoint) -> bool:
    if "ipBlock" in peer:
        if e.ip is None:
            return False  # pods are reached through selectors here
        block = peer["ipBlock"]
        ip = ipaddress.ip_address(e.ip)
        return ip in ipaddress.ip_network(block["cidr"]) and not any(
            ip in ipaddress.ip_network(x) for x in block.get("except", [])
        )
    if e.namespace is None:
        return False
    if "namespaceSelector" in peer:
        if not mc.label_selector_matches(peer["namespaceSelector"], _namespace_labels(docs, e.namespace)):
            return False
    elif e.namespace != policy_ns:
        return False
    return "podSelector" not in peer or mc.label_selector_matches(peer["podSelector"], e.label_dict())


def _port_matches(rule_ports: list[Doc] | None, port: tuple[str | None, int, str]) -> bool:
    if not rule_ports:
        return True
    name, number, protocol = port
    for p in rule_ports:
        if p.get("protocol", "TCP") != protocol:
            continue
        want = p.get("port")
        if want is None or want == name or (
            isinstance(want, int) and want <= number <= p.get("endPort", want)
        ):
            return True
    return False


def _policies(docs: list[Doc], e: Endpoint, kind: str) -> list[Doc]:
    """The NetworkPolicies that select `e` for `kind` (Ingress or Egress) traffic."""
    found = []
    for pol in find(docs, "NetworkPolicy"):
        spec = pol["spec"]
        types = spec.get("policyTypes") or (["Ingress"] + (["Egress"] if "egress" in spec else []))
        if (
            kind in types
            and pol["metadata"].get("namespace") == e.namespace
            and mc.label_selector_matches(spec["podSelector"], e.label_dict())
        ):
            found.append(pol)
    return found


def _allowed_by(docs: list[Doc], policies: list[Doc], direction: str, peer: Endpoint, port) -> bool:
    side = "from" if direction == "ingress" else "to"
    for pol in policies:
        for rule in pol["spec"].get(direction, []):
            peers = rule.get(side)
            if _port_matches(rule.get("ports"), port) and (
                not peers or any(_peer_matches(docs, p, pol["metadata"].get("namespace"), peer) for p in peers)
            ):
                return True
    return False


def allowed(docs: list[Doc], net: Network, src: Endpoint, dst: Endpoint, port) -> bool:
    """Whether a connection from `src` to `dst` on `port` gets through."""
    if src in net.ours:
        egress = _policies(docs, src, "Egress")
        if egress and not _allowed_by(docs, egress, "egress", dst, port):
            return False
    kafka = dict((e, listeners) for e, listeners in net.kafka)
    if dst in kafka:
        # Strimzi's policy: a listener's port from its peers (everyone without peers).
        for li in kafka[dst]:
            if li["port"] == port[1]:
                peers = li.get("networkPolicyPeers")
                return not peers or any(_peer_matches(docs, p, dst.namespace, src) for p in peers)
        return False
    if dst in net.ours:
        ingress = _policies(docs, dst, "Ingress")
        if ingress and not _allowed_by(docs, ingress, "ingress", src, port):
            return False
    return True


# Who talks to whom inside the deployment (the pods' app.kubernetes.io/name),
# besides the cluster DNS: the brief of the NetworkPolicies.
TALKS = {
    "ingress-grpc": {"kafka"},
    "ingress-http": {"kafka"},
    "consumer": {"kafka", "redis", "mongodb"},
    "logs": {"redis", "mongodb"},
    "grafana": {"redis", "prometheus", "world:443"},
}
# The stores' ports (named container ports) and Prometheus's.
STORE_PORTS = {"redis": "redis", "mongodb": "mongodb", "prometheus": "web"}


def expected_connections(docs: list[Doc], net: Network) -> set[tuple[str, str, int, str]]:
    """(source, destination, port, protocol) that must get through."""
    expected = set()
    conf = mc.settings(docs)
    kafka_port = int(conf.get("KAFKA_BROKERS", ":0").rpartition(":")[2] or 0)
    external = [e for e in net.outside if e.name in ("world", "prometheus", "keda", "elsewhere")]
    by_name = {e.name: e for e in net.ours + net.outside}
    for w in workloads(docs):
        name = mc.template_labels(w).get("app.kubernetes.io/name", w["metadata"]["name"])
        for spec in pod_specs(w):
            for c in spec["containers"]:
                public = public_ports_of(docs, c) if is_project(c) else set()
                admin = {admin_port_of(docs, c)} if is_project(c) and subcommand(c) else set()
                admin |= {p["containerPort"] for p in c.get("ports", []) if p.get("name") == "metrics"}
                for number in public:
                    expected |= {(e.name, name, number, "TCP") for e in external}
                for number in admin:
                    expected.add(("prometheus", name, number, "TCP"))
    # What the operators reach: the targets of NodePort and LoadBalancer Services.
    for svc in find(docs, "Service"):
        if svc["spec"].get("type") not in ("NodePort", "LoadBalancer"):
            continue
        for e in net.ours:
            if mc.selects(svc["spec"].get("selector", {}), e.label_dict()):
                for p in svc["spec"].get("ports", []):
                    target = p.get("targetPort", p["port"])
                    for pname, number, proto in e.ports:
                        if target in (pname, number):
                            expected |= {(x.name, e.name, number, proto) for x in external}
    for src, dsts in TALKS.items():
        if src not in by_name:
            continue
        expected |= {(src, "dns", 53, "UDP"), (src, "dns", 53, "TCP")}
        for dst in dsts:
            if dst == "kafka":
                expected |= {(src, k.name, kafka_port, "TCP") for k, _ in net.kafka}
            elif dst.startswith("world:"):
                expected.add((src, "world", int(dst.partition(":")[2]), "TCP"))
            elif dst in by_name:
                expected |= {
                    (src, dst, number, proto)
                    for pname, number, proto in by_name[dst].ports
                    if pname == STORE_PORTS.get(dst)
                }
    # KEDA reads the consumer group's lag where a ScaledObject has a Kafka trigger.
    if any(t["type"] == "kafka" for so in find(docs, "ScaledObject") for t in so["spec"]["triggers"]):
        expected |= {("keda", k.name, kafka_port, "TCP") for k, _ in net.kafka}
    return expected


def network_errors(docs: list[Doc]) -> list[str]:
    net = network(docs)
    errors = [
        f"{e.name}: no NetworkPolicy restricts its {kind.lower()} traffic (a default deny)"
        for e in net.ours
        for kind in ("Ingress", "Egress")
        if not _policies(docs, e, kind)
    ]
    expected = expected_connections(docs, net)
    sources = net.ours + [e for e in net.outside if e.name in ("world", "prometheus", "keda", "elsewhere")]
    destinations = net.ours + [k for k, _ in net.kafka] + net.outside
    for src in sources:
        for dst in destinations:
            # What happens between pods of other namespaces is not this deployment's.
            if src == dst or (src not in net.ours and dst in net.outside):
                continue
            for port in dst.ports:
                edge = (src.name, dst.name, port[1], port[2])
                ok = allowed(docs, net, src, dst, port)
                if ok and edge not in expected:
                    errors.append(f"{src.name} may connect to {dst.name}:{port[1]}/{port[2]}, which it must not")
                elif not ok and edge in expected:
                    errors.append(f"{src.name} cannot connect to {dst.name}:{port[1]}/{port[2]}, which it must")
    return errors


# --- what Services publish -----------------------------------------------------------


def exposure_errors(docs: list[Doc]) -> list[str]:
    """Every port a Service publishes for votestream's pods is a public one."""
    errors = []
    for svc in find(docs, "Service"):
        for w in workloads(docs):
            if not mc.selects(svc["spec"].get("selector", {}), mc.template_labels(w)):
                continue
            for spec in pod_specs(w):
                for c in spec["containers"]:
                    if not is_project(c) or subcommand(c) is None:
                        continue
                    names = {p.get("name"): p["containerPort"] for p in c.get("ports", [])}
                    for p in svc["spec"].get("ports", []):
                        target = p.get("targetPort", p["port"])
                        number = names.get(target, target)
                        if number not in public_ports_of(docs, c):
                            errors.append(
                                f"{ident(svc)}: publishes port {number} of {ident(w)}, which is no public port "
                                f"(the admin port {admin_port_of(docs, c)} is for probes and Prometheus)"
                            )
    return errors


# --- Secrets and the files pods read ---------------------------------------------------


def secret_data(docs: list[Doc], ns: str | None, name: str) -> dict[str, str] | None:
    for s in find(docs, "Secret", name):
        if s["metadata"].get("namespace") == ns:
            return {k: base64.b64decode(v).decode() for k, v in s.get("data", {}).items()}
    return None


def env_value(docs: list[Doc], ns: str | None, c: Doc, name: str) -> str | None:
    """A container's variable: its literal value, a Secret's key, or the ConfigMap's."""
    for var in c.get("env", []):
        if var["name"] == name:
            if "value" in var:
                return var["value"]
            ref = var.get("valueFrom", {}).get("secretKeyRef")
            if ref:
                return (secret_data(docs, ns, ref["name"]) or {}).get(ref["key"])
            return None
    return container_env(docs, c).get(name)


def mounted_secret(w: Doc, c: Doc, path: str) -> tuple[str, str] | None:
    """(Secret name, key) of the file at `path` in a container, if a Secret volume holds it."""
    spec = pod_specs(w)[0]
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    for m in c.get("volumeMounts", []):
        base = m["mountPath"].rstrip("/") + "/"
        secret = volumes.get(m["name"], {}).get("secret")
        if not secret or not path.startswith(base):
            continue
        rel = path[len(base) :]
        items = secret.get("items")
        if items:
            key = next((i["key"] for i in items if i["path"] == rel), None)
            return (secret["secretName"], key) if key else None
        return secret["secretName"], rel
    return None


def mounted_file(docs: list[Doc], w: Doc, c: Doc, path: str) -> str | None:
    found = mounted_secret(w, c, path)
    if found is None:
        return None
    return (secret_data(docs, w["metadata"].get("namespace"), found[0]) or {}).get(found[1])


def _properties(text: str) -> dict[str, str]:
    return dict(
        line.strip().split("=", 1) for line in text.splitlines() if "=" in line and not line.startswith("#")
    )


def _options(text: str) -> dict[str, str]:
    return dict(item.split("=", 1) for item in text.split(",") if "=" in item)


def _acl_users(text: str) -> dict[str, tuple[bool, set[str]]]:
    """User -> (enabled, passwords) of a Redis ACL file."""
    users = {}
    for line in text.splitlines():
        words = line.split()
        if len(words) >= 2 and words[0] == "user":
            on = "on" in words[2:] and "off" not in words[2:]
            passwords = {w[1:] for w in words[2:] if w.startswith(">")}
            users[words[1]] = (on, passwords | ({""} if "nopass" in words else set()))
    return users


def _all_containers(docs: list[Doc]):
    """(workload, container) of every container, init containers too."""
    for w in workloads(docs):
        for spec in pod_specs(w):
            for c in containers(spec):
                yield w, c


# --- Kafka -----------------------------------------------------------------------------

# The KafkaUser each subcommand logs in as.
KAFKA_USER_OF = {"ingress": "ingress", "consumer": "consumer"}


def expected_acls(docs: list[Doc]) -> dict[str, dict[tuple[str, str, str], set[str]]]:
    """Each KafkaUser's ACLs: (resource type, name, pattern) -> operations, from the settings."""
    conf = mc.settings(docs)
    votes, dlq, group = conf.get("VOTES_TOPIC"), conf.get("DLQ_TOPIC"), conf.get("CONSUMER_GROUP")
    return {
        "ingress": {("topic", votes, "literal"): {"Write", "Describe"}},
        "consumer": {
            ("topic", votes, "literal"): {"Read", "Describe"},
            ("topic", dlq, "literal"): {"Write", "Describe"},
            ("group", group, "literal"): {"Read", "Describe"},
        },
        # People, with the runbook's tools: describe, read dead letters, rewind the group.
        "operator": {
            ("cluster", "", "literal"): {"Describe"},
            ("topic", votes, "literal"): {"Describe"},
            ("topic", dlq, "literal"): {"Read", "Describe"},
            ("group", "console-consumer-", "prefix"): {"Read"},
            ("group", group, "literal"): {"Read", "Describe"},
        },
        # KEDA's scaler: the group's committed offsets and the topic's end offsets.
        "keda": {
            ("topic", votes, "literal"): {"Describe"},
            ("group", group, "literal"): {"Describe"},
        },
    }


def _user_password(docs: list[Doc], user: Doc) -> str | None:
    ref = user["spec"]["authentication"].get("password", {}).get("valueFrom", {}).get("secretKeyRef")
    if not ref:
        return None
    return (secret_data(docs, user["metadata"].get("namespace"), ref["name"]) or {}).get(ref["key"])


def kafka_security_errors(docs: list[Doc]) -> list[str]:
    errors = []
    conf = mc.settings(docs)
    host, _, port = conf.get("KAFKA_BROKERS", "").partition(":")
    cluster = host.removesuffix("-kafka-bootstrap").split(".")[0]
    kafkas = {k["metadata"]["name"]: k for k in find(docs, "Kafka")}
    if cluster not in kafkas:
        return [f"KAFKA_BROKERS={conf.get('KAFKA_BROKERS')} names no Kafka here"]
    kafka = kafkas[cluster]
    listener = next((li for li in kafka["spec"]["kafka"]["listeners"] if str(li["port"]) == port), None)
    if listener is None:
        return [f"{ident(kafka)}: no listener on port {port} (KAFKA_BROKERS)"]
    if not listener.get("tls"):
        errors.append(f"{ident(kafka)}: listener {listener['name']} is not TLS")
    if listener.get("authentication", {}).get("type") != "scram-sha-512":
        errors.append(f"{ident(kafka)}: listener {listener['name']} does not authenticate with SCRAM-SHA-512")
    for other in kafka["spec"]["kafka"]["listeners"]:
        if not other.get("authentication"):
            errors.append(f"{ident(kafka)}: listener {other['name']} lets anyone in unauthenticated")
    if kafka["spec"]["kafka"].get("authorization", {}).get("type") != "simple":
        errors.append(f"{ident(kafka)}: no ACLs enforced (authorization type simple)")
    if "userOperator" not in kafka["spec"].get("entityOperator", {}):
        errors.append(f"{ident(kafka)}: no User Operator to create the KafkaUsers")

    options = _options(conf.get("KAFKA_OPTIONS", ""))
    if options.get("security.protocol") != "SASL_SSL" or options.get("sasl.mechanism") != "SCRAM-SHA-512":
        errors.append(
            f"KAFKA_OPTIONS: security.protocol={options.get('security.protocol')}, "
            f"sasl.mechanism={options.get('sasl.mechanism')}; the listener wants SASL_SSL and SCRAM-SHA-512"
        )

    users = {u["metadata"]["name"]: u for u in find(docs, "KafkaUser")}
    acls = expected_acls(docs)
    for name, user in users.items():
        if user["metadata"].get("labels", {}).get("strimzi.io/cluster") != cluster:
            errors.append(f"{ident(user)}: not labelled strimzi.io/cluster={cluster}")
        if user["spec"]["authentication"]["type"] != "scram-sha-512":
            errors.append(f"{ident(user)}: authentication is not scram-sha-512")
        if "password" in user["spec"]["authentication"] and _user_password(docs, user) is None:
            errors.append(f"{ident(user)}: its password names no Secret key here")
        got: dict[tuple[str, str, str], set[str]] = {}
        for acl in user["spec"].get("authorization", {}).get("acls", []):
            if acl.get("type", "allow") != "allow":
                continue
            r = acl["resource"]
            got.setdefault((r["type"], r.get("name", ""), r.get("patternType", "literal")), set()).update(
                acl["operations"]
            )
        if name not in acls:
            errors.append(f"{ident(user)}: a KafkaUser this check knows no ACLs for")
        elif got != acls[name]:
            errors.append(f"{ident(user)}: ACLs {got}, its role needs exactly {acls[name]}")

    for w, c in _all_containers(docs):
        sub = subcommand(c) if is_project(c) else None
        if sub not in KAFKA_USER_OF:
            continue
        where = f"{ident(w)}: container {c['name']}"
        env = container_env(docs, c)
        ca = options.get("ssl.ca.location", "")
        if mounted_secret(w, c, ca) != (f"{cluster}-cluster-ca-cert", "ca.crt"):
            errors.append(f"{where}: ssl.ca.location {ca} is not the cluster CA's ca.crt mounted from its Secret")
        path = env.get("KAFKA_OPTIONS_FILE")
        text = mounted_file(docs, w, c, path) if path else None
        if text is None:
            errors.append(f"{where}: KAFKA_OPTIONS_FILE {path} is no file of a Secret mounted here")
            continue
        creds = _properties(text)
        user = users.get(creds.get("sasl.username", ""))
        if creds.get("sasl.username") != KAFKA_USER_OF[sub] or user is None:
            errors.append(
                f"{where}: logs in to Kafka as {creds.get('sasl.username')}, not as the KafkaUser {KAFKA_USER_OF[sub]}"
            )
        elif creds.get("sasl.password") != _user_password(docs, user):
            errors.append(f"{where}: its Kafka password is not the KafkaUser {creds['sasl.username']}'s")

    for so in find(docs, "ScaledObject"):
        ns = so["metadata"].get("namespace")
        for t in so["spec"]["triggers"]:
            if t["type"] != "kafka":
                continue
            ref = t.get("authenticationRef", {}).get("name")
            auths = [a for a in find(docs, "TriggerAuthentication", ref or "") if a["metadata"].get("namespace") == ns]
            if not auths:
                errors.append(f"{ident(so)}: its Kafka trigger has no TriggerAuthentication (the listener wants SCRAM)")
                continue
            params = {}
            for target in auths[0]["spec"].get("secretTargetRef", []):
                data = secret_data(docs, ns, target["name"])
                params[target["parameter"]] = (
                    (data or {}).get(target["key"])
                    if data is not None
                    else ("<strimzi>" if (ns, target["name"]) in mc.strimzi_secret_names(docs) else None)
                )
            user = users.get(params.get("username", ""))
            if params.get("sasl") != "scram_sha512" or params.get("tls") != "enable" or params.get("ca") is None:
                errors.append(f"{ident(auths[0])}: not SCRAM-SHA-512 over TLS with the cluster CA")
            if user is None or params.get("password") != _user_password(docs, user):
                errors.append(f"{ident(auths[0])}: username and password are no KafkaUser's")
    return errors


# --- Secrets -----------------------------------------------------------------------------


def _url_password(url: str) -> tuple[str | None, str | None]:
    parts = urlsplit(url.strip())
    return (unquote(parts.username) if parts.username else None), (
        unquote(parts.password) if parts.password else None
    )


def secret_errors(docs: list[Doc]) -> list[str]:
    errors = []
    for s in find(docs, "Secret"):
        data = secret_data(docs, s["metadata"].get("namespace"), s["metadata"]["name"]) or {}
        for key, value in data.items():
            where = f"{ident(s)} key {key}"
            found = []
            if "password" in key.lower():
                found.append(value)
            found += [p for line in value.splitlines() for p in re.findall(r"//[^/@:\s]*:([^/@\s]*)@", line)]
            found += [v for k, v in _properties(value).items() if "password" in k]
            found += [
                w[1:] for line in value.splitlines() if line.startswith("user ") for w in line.split() if w.startswith(">")
            ]
            for password in found:
                if not password.startswith("change-me"):
                    errors.append(f"{where}: holds a password that is no change-me placeholder")
            if "PRIVATE KEY" in value:
                errors.append(f"{where}: holds a private key")
            if key.endswith(".json") and re.search(r'"d"\s*:', value):
                errors.append(f"{where}: a JWKS with a private key (member d)")

    # Redis: every client's user and password are a user of the ACL file, enabled.
    for w, c in _all_containers(docs):
        args = c.get("args", [])
        if "--aclfile" not in args:
            continue
        text = mounted_file(docs, w, c, args[args.index("--aclfile") + 1])
        if text is None:
            errors.append(f"{ident(w)}: the --aclfile is no file of a Secret mounted in {c['name']}")
            continue
        users = _acl_users(text)
        default = next((line.split() for line in text.splitlines() if line.startswith("user default ")), [])
        if "on" in default and "nopass" in default and {"+@all", "allcommands"} & set(default):
            errors.append(f"{ident(w)}: Redis's default user, which needs no password, may run every command")

        def check(who: str, user: str | None, password: str | None) -> None:
            on, passwords = users.get(user or "default", (False, set()))
            if not on or password not in passwords:
                errors.append(f"{who}: logs in to Redis as {user}, which the ACL file does not accept with its password")

        for w2, c2 in _all_containers(docs):
            ns = w2["metadata"].get("namespace")
            who = f"{ident(w2)}: container {c2['name']}"
            if is_project(c2) and (path := container_env(docs, c2).get("REDIS_URL_FILE")):
                url = mounted_file(docs, w2, c2, path)
                if url is None:
                    errors.append(f"{who}: REDIS_URL_FILE {path} is no file of a Secret mounted here")
                else:
                    check(who, *_url_password(url))
            elif not is_project(c2) and env_value(docs, ns, c2, "REDIS_USER") is not None:
                check(who, env_value(docs, ns, c2, "REDIS_USER"), env_value(docs, ns, c2, "REDIS_PASSWORD"))

    # MongoDB: votestream's connection string names the user the mongo image creates.
    for w, c in _all_containers(docs):
        ns = w["metadata"].get("namespace")
        init_user = env_value(docs, ns, c, "MONGO_INITDB_ROOT_USERNAME")
        if init_user is None:
            continue
        init_password = env_value(docs, ns, c, "MONGO_INITDB_ROOT_PASSWORD")
        for w2, c2 in _all_containers(docs):
            if is_project(c2) and (path := container_env(docs, c2).get("MONGODB_URI_FILE")):
                uri = mounted_file(docs, w2, c2, path)
                if uri is None:
                    errors.append(f"{ident(w2)}: MONGODB_URI_FILE {path} is no file of a Secret mounted here")
                elif _url_password(uri) != (init_user, init_password):
                    errors.append(f"{ident(w2)}: its MongoDB URI is not the user {ident(w)} creates")
    return errors
