"""The Kubernetes base: API schemas, and every command, port and variable against the code."""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from services.configs.deploy import env_text, k8s_secrets, rendered, write_secrets
from services.configs.prometheus import local_jobs
from services.runtime.registry import SERVICES
from shared.core.settings import BaseServiceSettings
from shared.mq.topology import Topology
from tests.support.deploy import parse_vsp, unknown_env
from tests.support.paths import ROOT
from tests.support.prometheus import PROMTOOL

K8S = ROOT / "deploy" / "k8s"
KUBERNETES_VERSION = "1.30.0"
KUSTOMIZATION = yaml.safe_load((K8S / "kustomization.yaml").read_text())
WORKLOADS = ("Deployment", "StatefulSet", "Job")

KUSTOMIZATION_SCHEMA = {
    "type": "object",
    "required": ["apiVersion", "kind", "resources"],
    "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": "kustomize.config.k8s.io/v1beta1"},
        "kind": {"const": "Kustomization"},
        "namespace": {"type": "string", "pattern": "^[a-z0-9-]+$"},
        "labels": {"type": "array"},
        "resources": {"type": "array", "items": {"type": "string"}, "minItems": 1},
        "images": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["name"],
                "additionalProperties": False,
                "properties": {
                    "name": {"type": "string"},
                    "newName": {"type": "string"},
                    "newTag": {"type": "string"},
                    "digest": {"type": "string"},
                },
            },
        },
        "configMapGenerator": {"$ref": "#/$defs/generators"},
        "secretGenerator": {"$ref": "#/$defs/generators"},
    },
    "$defs": {
        "generators": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["name"],
                "additionalProperties": False,
                "properties": {
                    "name": {"type": "string"},
                    "literals": {"type": "array", "items": {"type": "string", "pattern": "="}},
                    "files": {"type": "array", "items": {"type": "string"}},
                    "envs": {"type": "array", "items": {"type": "string"}},
                },
            },
        }
    },
}

# The parts of KEDA's CRDs these manifests use (keda.sh/v1alpha1).
KEDA_SCHEMAS = {
    "ScaledObject": {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "apiVersion": {"const": "keda.sh/v1alpha1"},
            "spec": {
                "type": "object",
                "required": ["scaleTargetRef", "triggers"],
                "additionalProperties": False,
                "properties": {
                    "scaleTargetRef": {
                        "type": "object",
                        "required": ["name"],
                        "additionalProperties": False,
                        "properties": {
                            "name": {"type": "string"},
                            "kind": {"type": "string"},
                            "apiVersion": {"type": "string"},
                        },
                    },
                    "minReplicaCount": {"type": "integer", "minimum": 0},
                    "maxReplicaCount": {"type": "integer", "minimum": 1},
                    "pollingInterval": {"type": "integer", "minimum": 1},
                    "cooldownPeriod": {"type": "integer", "minimum": 0},
                    "triggers": {
                        "type": "array",
                        "minItems": 1,
                        "items": {
                            "type": "object",
                            "required": ["type", "metadata"],
                            "additionalProperties": False,
                            "properties": {
                                "type": {"const": "rabbitmq"},
                                "metadata": {
                                    "type": "object",
                                    "required": ["queueName", "mode", "value"],
                                    "additionalProperties": False,
                                    "properties": {
                                        "protocol": {"enum": ["amqp", "http", "auto"]},
                                        "queueName": {"type": "string"},
                                        "mode": {"enum": ["QueueLength", "MessageRate"]},
                                        "value": {"type": "string", "pattern": r"^\d+(\.\d+)?$"},
                                    },
                                },
                                "authenticationRef": {
                                    "type": "object",
                                    "required": ["name"],
                                    "properties": {"name": {"type": "string"}},
                                },
                            },
                        },
                    },
                },
            },
        },
    },
    "TriggerAuthentication": {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "apiVersion": {"const": "keda.sh/v1alpha1"},
            "spec": {
                "type": "object",
                "required": ["secretTargetRef"],
                "additionalProperties": False,
                "properties": {
                    "secretTargetRef": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "required": ["parameter", "name", "key"],
                            "additionalProperties": False,
                            "properties": {
                                "parameter": {"type": "string"},
                                "name": {"type": "string"},
                                "key": {"type": "string"},
                            },
                        },
                    }
                },
            },
        },
    },
}


def documents() -> list[dict[str, Any]]:
    docs = []
    for name in KUSTOMIZATION["resources"]:
        docs += [d for d in yaml.safe_load_all((K8S / name).read_text()) if d]
    return docs


DOCS = documents()
# The Secrets' env files are generated per deployment, never committed: one fresh set here.
SECRETS = {path.name: v for path, v in k8s_secrets().items()}


def of_kind(*kinds: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in DOCS if d["kind"] in kinds}


def env_file(path: str) -> dict[str, str]:
    if path in SECRETS:
        return SECRETS[path]
    lines = (K8S / path).read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))


def generated_keys() -> dict[str, set[str]]:
    """ConfigMap/Secret name to the keys its generator puts in it."""
    keys: dict[str, set[str]] = {}
    for gen in KUSTOMIZATION.get("configMapGenerator", []) + KUSTOMIZATION["secretGenerator"]:
        names = {lit.split("=", 1)[0] for lit in gen.get("literals", [])}
        names |= {f.split("=", 1)[0] if "=" in f else Path(f).name for f in gen.get("files", [])}
        for path in gen.get("envs", []):
            names |= set(env_file(path))
        keys[gen["name"]] = names
    return keys


def pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    return workload["spec"]["template"]["spec"]  # type: ignore[no-any-return]


def vsp_containers() -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(workload name, workload, container) for every container of the platform image."""
    return [
        (name, workload, container)
        for name, workload in of_kind(*WORKLOADS).items()
        for container in pod_spec(workload)["containers"]
        if container["image"] == "vsp"
    ]


def container_env_names(container: dict[str, Any]) -> list[str]:
    names = [e["name"] for e in container.get("env", [])]
    keys = generated_keys()
    for source in container.get("envFrom", []):
        ref = source.get("configMapRef") or source.get("secretRef")
        names += sorted(keys[ref["name"]])
    return names


def test_kustomization_shape_and_files() -> None:
    jsonschema.validate(KUSTOMIZATION, KUSTOMIZATION_SCHEMA)
    for name in KUSTOMIZATION["resources"]:
        assert (K8S / name).is_file(), name
    for gen in KUSTOMIZATION["configMapGenerator"]:
        for item in gen.get("files", []) + gen.get("envs", []):
            assert (K8S / item.split("=", 1)[-1]).is_file(), item
    # Every Secret reads generated env files only (no literals), which git ignores.
    for gen in KUSTOMIZATION["secretGenerator"]:
        assert set(gen) == {"name", "envs"}, gen
        assert set(gen["envs"]) <= set(SECRETS), gen
    ignored = [line for line in (ROOT / ".gitignore").read_text().splitlines() if "/" in line]
    for path in SECRETS:
        assert any(fnmatch(f"deploy/k8s/{path}", line) for line in ignored), path
    assert [i["name"] for i in KUSTOMIZATION["images"]] == ["vsp"]


@pytest.mark.parametrize("doc", DOCS, ids=[f"{d['kind']}/{d['metadata']['name']}" for d in DOCS])
def test_every_object_matches_its_api_schema(doc: dict[str, Any]) -> None:
    if doc["apiVersion"].startswith("keda.sh/"):
        jsonschema.validate(doc, KEDA_SCHEMAS[doc["kind"]])
    else:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_the_api_schema_check_catches_mistakes() -> None:
    upload = of_kind("Deployment")["upload"]
    broken = yaml.safe_load(yaml.safe_dump(upload))
    broken["spec"]["template"]["spec"]["containers"][0]["port"] = 8001
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


def test_objects_are_unique_and_every_part_is_there() -> None:
    keys = [(d["kind"], d["metadata"]["name"]) for d in DOCS]
    assert len(keys) == len(set(keys))
    workloads = set(of_kind("Deployment", "StatefulSet"))
    assert workloads >= {
        "upload",
        "chunked-upload",
        "origin",
        "edge",
        "redirector",
        "balancer",
        "worker-push",
        "worker-pull",
        "haproxy",
        "nginx",
        "postgres",
        "redis",
        "rabbitmq",
        "minio",
        "prometheus",
        "grafana",
    }
    assert set(of_kind("Job")) >= {"migrate", "minio-bucket"}
    roles = {parse_vsp(c["args"]).role for _, _, c in vsp_containers()}
    assert roles >= {*SERVICES, "worker-push", "worker-pull", "migrate"}


def test_vsp_commands_ports_and_environment_exist_in_the_code() -> None:
    job_names = {job.name for job in local_jobs()}
    for name, workload, container in vsp_containers():
        cmd = parse_vsp(container["args"])
        env_names = container_env_names(container)
        assert not unknown_env(cmd.settings_class(), env_names), (name, cmd.settings_class())
        env = {e["name"]: str(e["value"]) for e in container.get("env", []) if "value" in e}
        port = cmd.port(env)
        if port is None:
            continue
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert list(ports.values()) == [port], (name, ports, port)
        probe = container["readinessProbe"]["httpGet"]
        assert probe["port"] in ports and probe["path"] in ("/readyz", "/metrics"), name
        annotations = workload["spec"]["template"]["metadata"]["annotations"]
        assert annotations["prometheus.io/scrape"] == "true"
        assert int(annotations["prometheus.io/port"]) == port, name
        # The job label dashboards and alerts select on.
        assert annotations["prometheus.io/job"] in job_names, name
        if cmd.name == "serve":
            assert cmd.params["host"] == "0.0.0.0", name


def test_config_and_secret_references_resolve() -> None:
    keys = generated_keys()
    for name, workload in of_kind(*WORKLOADS).items():
        spec = pod_spec(workload)
        for container in spec["containers"]:
            for source in container.get("envFrom", []):
                ref = source.get("configMapRef") or source.get("secretRef")
                assert ref["name"] in keys, (name, ref)
            for item in container.get("env", []):
                ref = item.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    assert ref["key"] in keys[ref["name"]], (name, ref)
        for volume in spec.get("volumes", []):
            if "configMap" in volume:
                assert volume["configMap"]["name"] in keys, (name, volume)
            if "persistentVolumeClaim" in volume:
                assert volume["persistentVolumeClaim"]["claimName"] in of_kind(
                    "PersistentVolumeClaim"
                )


def test_services_select_pods_and_name_their_ports() -> None:
    workloads = of_kind("Deployment", "StatefulSet")
    for name, service in of_kind("Service").items():
        selector = service["spec"]["selector"]
        matches = [
            w
            for w in workloads.values()
            if selector.items() <= w["spec"]["template"]["metadata"]["labels"].items()
        ]
        assert len(matches) == 1, (name, selector)
        port_names = {p["name"] for c in pod_spec(matches[0])["containers"] for p in c["ports"]}
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in port_names, (name, port)


def test_addresses_inside_the_cluster_match_service_ports() -> None:
    services = {
        name: {p["port"] for p in s["spec"]["ports"]} for name, s in of_kind("Service").items()
    }
    texts = [env_text(SECRETS["secrets.env"]), (K8S / "kustomization.yaml").read_text()]
    texts += [yaml.safe_dump(d) for d in DOCS] + [
        (K8S / "proxies" / f).read_text() for f in ("nginx.conf", "haproxy.cfg")
    ]
    found = 0
    for text in texts:
        for host, port in re.findall(r"(?:[/@ ]|^)([a-z][a-z0-9-]*(?:\.edge)?):(\d{4,5})\b", text):
            service = host.split(".")[-1] if host.endswith(".edge") else host
            if service in services:
                found += 1
                assert int(port) in services[service], (host, port)
    assert found >= 10


def test_stateless_services_have_hpas_and_workers_scale_on_the_queue() -> None:
    deployments = of_kind("Deployment")
    hpas = of_kind("HorizontalPodAutoscaler")
    targets = {h["spec"]["scaleTargetRef"]["name"] for h in hpas.values()}
    for hpa in hpas.values():
        target = deployments[hpa["spec"]["scaleTargetRef"]["name"]]
        for container in pod_spec(target)["containers"]:
            assert "cpu" in container["resources"]["requests"], "HPA needs CPU requests"
    serve = {name for name, _, c in vsp_containers() if parse_vsp(c["args"]).name == "serve"}
    stateless = {name for name in serve if name in deployments}
    assert stateless == {"upload", "chunked-upload", "origin", "redirector", "balancer"}
    assert stateless <= targets
    scaled = of_kind("ScaledObject")
    assert {s["spec"]["scaleTargetRef"]["name"] for s in scaled.values()} == {
        "worker-push",
        "worker-pull",
    }
    assert not targets & {"worker-push", "worker-pull"}, "an HPA would fight KEDA"
    prefix = dict(lit.split("=", 1) for lit in KUSTOMIZATION["configMapGenerator"][0]["literals"])
    default_prefix = BaseServiceSettings.model_fields["mq_prefix"].default
    queue = Topology(prefix.get("MQ_PREFIX", default_prefix)).jobs_queue
    auth = of_kind("TriggerAuthentication")
    keys = generated_keys()
    for obj in scaled.values():
        for trigger in obj["spec"]["triggers"]:
            assert trigger["metadata"]["queueName"] == queue
            assert trigger["authenticationRef"]["name"] in auth
    for ta in auth.values():
        for ref in ta["spec"]["secretTargetRef"]:
            assert ref["key"] in keys[ref["name"]]


def test_generated_files_are_current() -> None:
    for path, text in rendered().items():
        assert (ROOT / path).read_text() == text, (
            f"run python -m services.configs.deploy --write ({path})"
        )


def test_kubernetes_prometheus_config(tmp_path: Path) -> None:
    config = yaml.safe_load((K8S / "prometheus" / "prometheus.yml").read_text())
    pods = next(j for j in config["scrape_configs"] if j["job_name"] == "kubernetes-pods")
    assert pods["kubernetes_sd_configs"] == [{"role": "pod", "namespaces": {"names": ["vsp"]}}]
    # Debian's Prometheus is built without Kubernetes discovery, so promtool checks everything
    # else (relabelling included) with a static target in its place.
    del pods["kubernetes_sd_configs"]
    pods["static_configs"] = [{"targets": ["10.0.0.7:8001"]}]
    (tmp_path / "alerts.yml").write_text((K8S / "prometheus" / "alerts.yml").read_text())
    checked_path = tmp_path / "prometheus.yml"
    checked_path.write_text(yaml.safe_dump(config))
    checked = subprocess.run(
        [PROMTOOL, "check", "config", str(checked_path)], capture_output=True, text=True
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    address = next(r for r in pods["relabel_configs"] if r.get("target_label") == "__address__")
    match = re.fullmatch(address["regex"], "10.0.0.7:8080;8001")
    assert match and address["replacement"].replace("$1", match[1]).replace("$2", match[2]) == (
        "10.0.0.7:8001"
    )


def test_generated_secrets_are_random_agree_and_pass_the_production_check(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    again = {path.name: v for path, v in k8s_secrets().items()}
    assert again["secrets.env"]["SIGNING_SECRET"] != SECRETS["secrets.env"]["SIGNING_SECRET"]
    infra, platform = SECRETS["infra-secrets.env"], SECRETS["secrets.env"]
    assert f":{infra['POSTGRES_PASSWORD']}@" in platform["DATABASE_URL"]
    assert f":{infra['RABBITMQ_DEFAULT_PASS']}@" in platform["AMQP_URL"]
    assert infra["MINIO_ROOT_PASSWORD"] == platform["S3_SECRET_KEY"]
    # What each platform container gets from the ConfigMap and Secrets passes in production.
    config = dict(lit.split("=", 1) for lit in KUSTOMIZATION["configMapGenerator"][0]["literals"])
    for name, _, container in vsp_containers():
        values = {**config}
        for source in container.get("envFrom", []):
            if "secretRef" in source:
                values.update(secret_values(source["secretRef"]["name"]))
        for item in container.get("env", []):
            ref = item.get("valueFrom", {}).get("secretKeyRef")
            if ref:
                values[item["name"]] = secret_values(ref["name"])[ref["key"]]
            elif "value" in item:
                values[item["name"]] = str(item["value"])
        with monkeypatch.context() as env:
            for key, value in values.items():
                env.setenv(key, value)
            settings = parse_vsp(container["args"]).settings_class()()
        assert settings.environment == "production", name
        assert not list(settings.secret_problems()), name


def secret_values(secret: str) -> dict[str, str]:
    """The variables the Secret named ``secret`` holds in this test's generated set."""
    gen = next(g for g in KUSTOMIZATION["secretGenerator"] if g["name"] == secret)
    return {k: v for path in gen["envs"] for k, v in SECRETS[path].items()}


def test_secrets_are_written_once_and_kept(tmp_path: Path) -> None:
    written = write_secrets(tmp_path)
    assert sorted(written) == sorted(k8s_secrets())
    first = {path: (tmp_path / path).read_text() for path in written}
    for path, text in first.items():
        assert (tmp_path / path).stat().st_mode & 0o077 == 0, "readable by its owner only"
        assert all(line.split("=", 1)[1] for line in text.splitlines()), path
    assert write_secrets(tmp_path) == []
    assert {path: (tmp_path / path).read_text() for path in written} == first


# The front door (ingress.yaml): the placeholder host an overlay replaces, and its certificate.
INGRESS_HOST = "videos.example.com"
TLS_SECRET = "vsp-tls"
NGINX = "nginx.ingress.kubernetes.io/"
VIDEO = "0b9e4f7c-3c4e-4f37-9a3e-1d2f5b6a7c8d"

# What the front door must route: (method, path and query, service).
FRONT_DOOR = [
    ("GET", "/", "origin"),
    ("GET", "/player", "origin"),
    ("GET", "/player/assets/player.js", "origin"),
    ("GET", "/my", "origin"),
    ("GET", "/health", "origin"),
    ("GET", "/docs", "origin"),
    ("GET", "/openapi.json", "origin"),
    ("GET", "/api/videos?limit=20", "origin"),
    ("HEAD", "/api/videos", "origin"),
    ("GET", f"/api/videos/{VIDEO}", "origin"),
    ("PATCH", f"/api/videos/{VIDEO}", "origin"),
    ("DELETE", f"/api/videos/{VIDEO}", "origin"),
    ("GET", "/api/keys", "origin"),
    ("POST", "/api/auth/token", "origin"),
    ("GET", f"/api/stream/{VIDEO}", "origin"),
    ("POST", "/api/videos", "upload"),
    ("PUT", "/api/videos", "upload"),
    ("PUT", f"/api/videos/{VIDEO}", "upload"),
    ("GET", f"/api/videos/{VIDEO}/events", "chunked-upload"),
    ("GET", "/api/stats", "balancer"),
    ("GET", "/upload", "chunked-upload"),
    ("GET", "/static/upload/upload.js", "chunked-upload"),
    ("POST", "/files/", "chunked-upload"),
    ("PATCH", f"/files/{VIDEO}", "chunked-upload"),
    ("HEAD", f"/files/{VIDEO}", "chunked-upload"),
    ("GET", f"/origin/t/tok/videos/{VIDEO}/master.m3u8", "balancer"),
    ("GET", f"/origin/videos/{VIDEO}/v0/seg_00001.m4s?e=1&s=ab", "balancer"),
    ("GET", "/dashboard", "balancer"),
    ("GET", "/dashboard/dashboard.js", "balancer"),
    ("GET", "/ws", "balancer"),
    ("GET", f"/r/?video={VIDEO}", "redirector"),
]
# The two paths the front door rewrites, and what the service is asked instead.
REWRITTEN = {"/": "/player", f"/r/?video={VIDEO}": f"/?video={VIDEO}"}
# Paths nothing serves through the front door (the controller's default backend answers 404).
UNROUTED = [
    "/metrics",
    "/r/config",
    "/r/metrics",
    "/readyz",
    "/api",
    "/playerx",
    "/dashboards",
    "/uploads",
    "/files-old",
    "/openapiXjson",
]
# (method, path) whose request bodies stream through uncapped, and the long-lived responses.
UPLOADS = [("POST", "/api/videos"), ("PUT", f"/api/videos/{VIDEO}"), ("PATCH", f"/files/{VIDEO}")]
LIVE = [("GET", f"/api/videos/{VIDEO}/events"), ("GET", "/ws")]

# The one snippet ingress-nginx gets: methods other than these go to another service's upstream.
METHOD_SWITCH = re.compile(
    r"if \(\$request_method !~ \^\((?P<methods>[A-Z|]+)\)\$\) \{\s*"
    r'set \$proxy_upstream_name "\$\{namespace\}-(?P<service>[a-z0-9-]+)-(?P<port>\d+)";\s*\}'
)


@dataclass(frozen=True)
class IngressPath:
    """One path of an Ingress and the Service port behind it."""

    ingress: dict[str, Any]
    path: str
    service: str
    port: int

    def annotation(self, name: str) -> str | None:
        return self.ingress["metadata"].get("annotations", {}).get(NGINX + name)  # type: ignore[no-any-return]


def ingress_paths() -> list[IngressPath]:
    """Every Ingress path, in the order ingress-nginx tries them: longest first."""
    found = [
        IngressPath(ingress, p["path"], p["backend"]["service"]["name"], port["number"])
        for ingress in of_kind("Ingress").values()
        for rule in ingress["spec"]["rules"]
        for p in rule["http"]["paths"]
        for port in [p["backend"]["service"]["port"]]
    ]
    return sorted(found, key=lambda p: -len(p.path))


def method_switch(path: IngressPath) -> tuple[set[str], str, int] | None:
    """The methods a path keeps and the (service, port) its snippet sends the others to."""
    snippet = path.annotation("configuration-snippet")
    if snippet is None:
        return None
    match = METHOD_SWITCH.fullmatch(snippet.strip())
    assert match, snippet
    return set(match["methods"].split("|")), match["service"], int(match["port"])


def front_door(method: str, target: str) -> tuple[IngressPath, str, str] | None:
    """The path ingress-nginx picks for a request, the service it reaches and what it asks.

    With a regex or a rewrite on any of a host's Ingresses, ingress-nginx makes every path of
    the host a case-insensitive regex anchored at the start and takes the first match, longest
    path first; a rewrite replaces the whole path and keeps the query.
    """
    path, _, query = target.partition("?")
    for candidate in ingress_paths():
        if not re.match(candidate.path, path, re.IGNORECASE):
            continue
        # Paths of equal length come in no set order: they must never both match.
        ties = [p for p in ingress_paths() if len(p.path) == len(candidate.path)]
        assert [p for p in ties if re.match(p.path, path, re.IGNORECASE)] == [candidate]
        service = candidate.service
        switch = method_switch(candidate)
        if switch and method not in switch[0]:
            service = switch[1]
        rewrite = candidate.annotation("rewrite-target")
        if rewrite:
            found = re.search(candidate.path, path, re.IGNORECASE)
            assert found
            path = found.expand(re.sub(r"\$(\d)", r"\\g<\1>", rewrite))
        return candidate, service, path + (f"?{query}" if query else "")
    return None


def test_ingresses_are_for_ingress_nginx_on_one_host_with_tls() -> None:
    ingresses = of_kind("Ingress")
    assert ingresses
    for name, ingress in ingresses.items():
        spec = ingress["spec"]
        assert spec["ingressClassName"] == "nginx", name
        assert [rule["host"] for rule in spec["rules"]] == [INGRESS_HOST], name
        assert spec["tls"] == [{"hosts": [INGRESS_HOST], "secretName": TLS_SECRET}], name
        annotations = ingress["metadata"]["annotations"]
        # Every path is a regex once one is: said on each Ingress, and typed accordingly.
        assert annotations[NGINX + "use-regex"] == "true", name
        assert annotations[NGINX + "ssl-redirect"] == "false", name
        for rule in spec["rules"]:
            assert {p["pathType"] for p in rule["http"]["paths"]} == {"ImplementationSpecific"}
    # The certificate is the operator's (or cert-manager's), never generated with the base.
    assert TLS_SECRET not in generated_keys()
    guide = (ROOT / "docs" / "DEPLOYMENT.md").read_text()
    assert TLS_SECRET in guide and INGRESS_HOST in guide


def test_ingress_backends_are_service_ports_of_the_base() -> None:
    services = {
        name: {p["port"] for p in s["spec"]["ports"]} for name, s in of_kind("Service").items()
    }
    backends = {(p.service, p.port) for p in ingress_paths()}
    for service, port in backends:
        assert port in services.get(service, set()), (service, port)
    for path in ingress_paths():
        switch = method_switch(path)
        if switch:
            # ingress-nginx only knows upstreams some Ingress names, by service and port number.
            assert (switch[1], switch[2]) in backends, path.path
            assert switch[1] != path.service


@pytest.mark.parametrize(("method", "target", "service"), FRONT_DOOR)
def test_the_front_door_routes_each_path_to_its_service(
    method: str, target: str, service: str
) -> None:
    routed = front_door(method, target)
    assert routed, (method, target)
    assert routed[1] == service, (method, target, routed[0].path)
    assert routed[2] == REWRITTEN.get(target, target)


@pytest.mark.parametrize("path", UNROUTED)
def test_the_front_door_serves_nothing_else(path: str) -> None:
    routed = front_door("GET", path)
    assert routed is None, (path, routed and routed[0].path)


def test_uploads_stream_uncapped_and_live_responses_stay_open() -> None:
    for method, path in UPLOADS:
        routed = front_door(method, path)
        assert routed and routed[1] in ("upload", "chunked-upload"), path
        assert routed[0].annotation("proxy-body-size") == "0", path
        assert routed[0].annotation("proxy-request-buffering") == "off", path
        assert int(routed[0].annotation("proxy-read-timeout") or 60) >= 300, path
    for method, path in LIVE:
        routed = front_door(method, path)
        assert routed, path
        assert routed[0].annotation("proxy-buffering") == "off", path
        assert int(routed[0].annotation("proxy-read-timeout") or 60) >= 3600, path
    # Everything else keeps ingress-nginx's 1 MiB body cap.
    uncapped = {p.service for p in ingress_paths() if p.annotation("proxy-body-size") == "0"}
    assert uncapped == {"upload", "chunked-upload"}
