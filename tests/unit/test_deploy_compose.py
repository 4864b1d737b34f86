"""docker-compose.yml, .env.example, the Dockerfile and .dockerignore against the schema and
the code.

There is no Docker engine here, so the tests resolve the compose file's variables themselves,
by compose's interpolation rules (``resolve``)."""

from __future__ import annotations

import json
import os
import re
import secrets
from typing import Any

import jsonschema
import pytest
import yaml

from services.configs.prometheus import compose_jobs
from services.configs.proxies import Backend, render_haproxy
from services.runtime.registry import SERVICES
from services.upload.settings import Settings as UploadSettings
from tests.support.deploy import (
    URL_HOST_PORT,
    VspCommand,
    all_settings_fields,
    parse_vsp,
    unknown_env,
)
from tests.support.paths import ROOT

COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES_COMPOSE: dict[str, dict[str, Any]] = COMPOSE["services"]
REQUIRED = {
    "upload",
    "chunked-upload",
    "worker-push",
    "worker-pull",
    "origin",
    "edge-1",
    "edge-2",
    "redirector-1",
    "redirector-2",
    "redirector-3",
    "redirector-4",
    "balancer",
    "nginx",
    "haproxy",
    "postgres",
    "redis",
    "rabbitmq",
    "minio",
    "minio-init",
    "migrate",
    "prometheus",
    "grafana",
}


def vsp_services() -> dict[str, tuple[VspCommand, dict[str, str]]]:
    """Compose services that run the platform image: their parsed command and environment."""
    found = {}
    for name, service in SERVICES_COMPOSE.items():
        if "build" in service:
            env = {k: str(v) for k, v in (service.get("environment") or {}).items()}
            found[name] = (parse_vsp(service["command"]), env)
    return found


def listening_ports() -> dict[str, int]:
    """Compose service name to the port its process listens on."""
    ports = {name: cmd.port(env) for name, (cmd, env) in vsp_services().items()}
    return {name: port for name, port in ports.items() if port is not None}


def test_compose_file_matches_the_compose_specification_schema() -> None:
    schema = json.loads((ROOT / "tests" / "schemas" / "compose-spec.json").read_text())
    validator = jsonschema.Draft201909Validator(schema)
    errors = [f"{list(e.absolute_path)}: {e.message[:200]}" for e in validator.iter_errors(COMPOSE)]
    assert not errors, errors
    # The schema itself catches mistakes (not a schema that accepts anything).
    broken = {"services": {"a": {"image": "x", "depends_on": {"b": {"condition": "ready"}}}}}
    assert list(validator.iter_errors(broken))


def test_every_part_is_there() -> None:
    assert set(SERVICES_COMPOSE) >= REQUIRED
    roles = {cmd.role for cmd, _ in vsp_services().values()}
    # Every HTTP service in the registry and both worker modes run, plus the migrate step.
    assert roles >= {*SERVICES, "worker-push", "worker-pull", "migrate"}


def test_commands_parse_with_the_real_cli() -> None:
    for name, (cmd, _) in vsp_services().items():
        assert cmd.name in {"serve", "worker", "migrate"}, name
        if cmd.name == "serve":
            assert cmd.params["host"] == "0.0.0.0", f"{name} must listen beyond loopback"


def test_a_wrong_command_is_caught() -> None:
    with pytest.raises(AssertionError, match="no service"):
        parse_vsp(["serve", "uploader"])
    with pytest.raises(AssertionError, match="no command"):
        parse_vsp(["run", "upload"])
    with pytest.raises(Exception, match="No such option"):
        parse_vsp(["worker", "--modes", "push"])


def test_environment_names_are_settings_fields() -> None:
    for name, (cmd, env) in vsp_services().items():
        assert not unknown_env(cmd.settings_class(), list(env)), (name, cmd.settings_class())


def test_environment_values_are_accepted_by_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    # As `docker compose up` runs them with .env made from .env.example as it says.
    resolved, missing = resolve(COMPOSE, filled_env_example())
    assert not missing
    for name, (cmd, _) in vsp_services().items():
        env = {k: str(v) for k, v in resolved["services"][name]["environment"].items()}
        for key in list(os.environ):
            if key.lower() in cmd.settings_class().model_fields:
                monkeypatch.delenv(key)
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        settings = cmd.settings_class()()
        assert settings.environment == "production", name
        assert not list(settings.secret_problems()), name
        for key in env:
            monkeypatch.delenv(key)


def test_ports_healthchecks_and_published_ports_agree() -> None:
    for name, port in listening_ports().items():
        service = SERVICES_COMPOSE[name]
        check = " ".join(service["healthcheck"]["test"])
        assert f"127.0.0.1:{port}/" in check, (name, port, check)
        published = [str(p).split(":")[-1] for p in service.get("ports", [])]
        expected = [str(port)]
        env = vsp_services()[name][1]
        if "UPLOAD_TLS_CERT_FILE" in env:
            # The upload service's second listener: h2 over TLS.
            default_tls = UploadSettings.model_fields["upload_tls_port"].default
            expected.append(str(env.get("UPLOAD_TLS_PORT", default_tls)))
        if not name.startswith("worker-"):
            assert published == expected, (name, published)


def test_addresses_name_a_service_at_the_port_it_listens_on() -> None:
    ports = listening_ports()
    fixed = {"postgres": 5432, "redis": 6379, "rabbitmq": 5672, "minio": 9000, "haproxy": 8081}
    fixed["prometheus"] = 9090
    for name, (_, env) in vsp_services().items():
        for value in env.values():
            for host, port in URL_HOST_PORT.findall(value):
                if host in ports or host in fixed:
                    assert int(port) == {**fixed, **ports}[host], (name, value)
        assert env.get("S3_ENDPOINT") in (None, "minio:9000")
    origin_env = vsp_services()["edge-1"][1]
    assert origin_env["EDGE_ORIGIN_URL"] == f"http://origin:{ports['origin']}"
    balancer_env = vsp_services()["balancer"][1]
    backends = json.loads(balancer_env["BALANCER_BACKENDS"])
    assert {b["url"] for b in backends} == {f"http://edge-{i}:{ports[f'edge-{i}']}" for i in (1, 2)}


def test_prometheus_scrapes_every_container_at_its_port() -> None:
    jobs = compose_jobs()
    static = {target for job in jobs for target in job.targets}
    dns = {(d.name, d.port) for job in jobs for d in job.dns}
    for name, port in listening_ports().items():
        assert f"{name}:{port}" in static or (name, port) in dns, name
    mounts = SERVICES_COMPOSE["prometheus"]["volumes"]
    assert "./deploy/prometheus:/etc/prometheus:ro" in mounts


def test_proxies_point_at_the_containers() -> None:
    ports = listening_ports()
    nginx = (ROOT / "nginx.conf").read_text()
    assert "./nginx.conf:/etc/nginx/nginx.conf:ro" in SERVICES_COMPOSE["nginx"]["volumes"]
    for i in range(1, 5):
        assert f"server redirector-{i}:{ports[f'redirector-{i}']};" in nginx
    assert "server haproxy:8081;" in nginx
    haproxy = (ROOT / "deploy" / "compose" / "haproxy.cfg").read_text()
    edges = [Backend(f"edge-{i}", f"edge-{i}:{ports[f'edge-{i}']}") for i in (1, 2)]
    assert haproxy == render_haproxy(edges), "re-render deploy/compose/haproxy.cfg"


def test_depends_on_conditions_are_satisfiable() -> None:
    for name, service in SERVICES_COMPOSE.items():
        for dep, spec in (service.get("depends_on") or {}).items():
            assert dep in SERVICES_COMPOSE, (name, dep)
            condition = spec["condition"]
            target = SERVICES_COMPOSE[dep]
            if condition == "service_healthy":
                assert "healthcheck" in target, f"{name} waits for {dep}, which has no healthcheck"
            if condition == "service_completed_successfully":
                assert target.get("restart") == "no", f"{dep} must be a one-shot step"
    # Every long-running service reports its health.
    for name, service in SERVICES_COMPOSE.items():
        if service.get("restart") != "no":
            assert "healthcheck" in service, name
    # Every platform process starts after the migrate step, directly or through a dependency.
    for name, (cmd, _) in vsp_services().items():
        if cmd.name != "migrate":
            assert "migrate" in upstream(name), name


def upstream(name: str) -> set[str]:
    """Every service ``name`` waits for, transitively."""
    seen: set[str] = set()
    stack = [name]
    while stack:
        for dep in SERVICES_COMPOSE[stack.pop()].get("depends_on") or {}:
            if dep not in seen:
                seen.add(dep)
                stack.append(dep)
    return seen


def test_bind_mounts_exist() -> None:
    for name, service in SERVICES_COMPOSE.items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), (name, source)
            else:
                assert source in COMPOSE["volumes"], (name, source)


def dockerfile_stages() -> list[list[tuple[str, str]]]:
    """Instructions of each stage, continuation lines joined."""
    text = (ROOT / "deploy" / "Dockerfile").read_text()
    text = re.sub(r"\\\n", " ", text)
    stages: list[list[tuple[str, str]]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, rest = line.partition(" ")
        if keyword.upper() == "FROM":
            stages.append([])
        if stages:
            stages[-1].append((keyword.upper(), rest.strip()))
    return stages


def test_dockerfile_is_multi_stage_non_root_with_ffmpeg_and_vsp() -> None:
    stages = dockerfile_stages()
    assert len(stages) >= 3
    build, runtime = stages[-2], stages[-1]
    assert any(k == "RUN" and "uv sync --frozen" in v for k, v in build)
    run = " ".join(v for k, v in runtime if k == "RUN")
    assert "ffmpeg" in run
    users = [v for k, v in runtime if k == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    entry = json.loads(next(v for k, v in runtime if k == "ENTRYPOINT"))
    assert entry[-1] == "vsp"
    # The runtime copies the built environment only, not the sources or the build tools.
    copies = [v for k, v in runtime if k == "COPY"]
    assert copies == ["--from=build /opt/vsp /opt/vsp"]


def test_dockerfile_copies_what_exists_and_sets_real_settings() -> None:
    stages = dockerfile_stages()
    for stage in stages:
        for keyword, value in stage:
            if keyword == "COPY" and "--from" not in value:
                *sources, _ = value.split()
                for source in sources:
                    assert (ROOT / source).exists(), source
    fields = all_settings_fields()
    env_names = []
    for keyword, value in stages[-1]:
        if keyword == "ENV":
            env_names += re.findall(r"([A-Z_][A-Z0-9_]*)=", value)
    ours = [n for n in env_names if not n.startswith(("PYTHON", "PATH"))]
    assert ours and set(ours) <= fields, set(ours) - fields
    # What the image copies is what the wheel packages.
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert 'packages = ["shared", "services"]' in pyproject


def test_dockerignore_keeps_the_context_small_and_secret_free() -> None:
    ignored = {
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {".git", ".venv", ".env", "var/", "tests/"} <= ignored
    for needed in ("pyproject.toml", "uv.lock", "README.md", "shared", "services"):
        assert needed not in ignored and f"{needed}/" not in ignored


# Compose's interpolation: $$ is a dollar; $VAR and ${VAR}; ${VAR:-default} and ${VAR-default};
# ${VAR:?message} and ${VAR?message}; ${VAR:+other} and ${VAR+other}. With a colon, an empty
# value counts as unset.
VARIABLE = re.compile(
    r"\$(?:(?P<dollar>\$)|\{(?P<name>[A-Za-z_]\w*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}"
    r"|(?P<bare>[A-Za-z_]\w*))"
)
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|_KEY$")
# Compose services that are not the platform's own: reachable from this host only, if at all.
INFRASTRUCTURE = ("postgres", "redis", "rabbitmq", "minio", "prometheus", "grafana")


def resolve(node: Any, env: dict[str, str]) -> tuple[Any, dict[str, str]]:
    """``node`` with every string interpolated from ``env``, and each required variable that
    is missing, with its message."""
    missing: dict[str, str] = {}

    def substitute(match: re.Match[str]) -> str:
        if match["dollar"]:
            return "$"
        name = match["name"] or match["bare"]
        op, arg = match["op"] or "", match["arg"] or ""
        value = env.get(name)
        unset = value is None or (op.startswith(":") and value == "")
        if op.endswith("-"):
            return arg if unset else str(value)
        if op.endswith("?"):
            if unset:
                missing[name] = arg
            return value or ""
        if op.endswith("+"):
            return "" if unset else arg
        return value or ""

    def walk(item: Any) -> Any:
        if isinstance(item, str):
            return VARIABLE.sub(substitute, item)
        if isinstance(item, dict):
            return {key: walk(value) for key, value in item.items()}
        if isinstance(item, list):
            return [walk(value) for value in item]
        return item

    return walk(node), missing


def variables(node: Any) -> list[re.Match[str]]:
    """Every variable reference in the compose file's strings."""
    if isinstance(node, str):
        return [m for m in VARIABLE.finditer(node) if not m["dollar"]]
    values = node.values() if isinstance(node, dict) else node if isinstance(node, list) else []
    return [m for value in values for m in variables(value)]


def env_example() -> dict[str, str]:
    """The variables .env.example sets (commented-out optional ones aside)."""
    lines = (ROOT / ".env.example").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))


def filled_env_example() -> dict[str, str]:
    """.env made as .env.example says: `openssl rand -hex 32` for every empty value."""
    return {name: value or secrets.token_hex(32) for name, value in env_example().items()}


def test_the_resolver_follows_compose_rules() -> None:
    text = "$$HOME ${A} $A ${B:-b} ${B-b} ${E:-e} ${E-e} ${A:+x} ${B:+x} ${R:?need R} ${E?ok}"
    resolved, missing = resolve({"k": [text]}, {"A": "a", "E": ""})
    assert resolved == {"k": ["$HOME a a b b e  x   "]}
    assert missing == {"R": "need R"}
    assert resolve("${E:?set E}", {"E": ""})[1] == {"E": "set E"}


def test_without_an_env_file_compose_fails_naming_every_missing_secret() -> None:
    _, missing = resolve(COMPOSE, {})
    required = set(env_example())
    assert set(missing) == required
    for name, message in missing.items():
        assert message == f"set {name} in .env (see .env.example)"
    # One left out is still named.
    _, missing = resolve(COMPOSE, {**filled_env_example(), "SIGNING_SECRET": ""})
    assert set(missing) == {"SIGNING_SECRET"}


def test_every_secret_is_a_required_variable_without_a_default() -> None:
    names = {m["name"] or m["bare"] for m in variables(COMPOSE)}
    secret_names = {name for name in names if SECRET_NAME.search(name)}
    assert secret_names == set(env_example()), "the example lists exactly the secrets"
    for match in variables(COMPOSE):
        if SECRET_NAME.search(match["name"] or match["bare"] or ""):
            assert match["op"] == ":?", match[0]
    # The example holds no value to copy: each is made by the one who deploys.
    assert not any(env_example().values())
    assert "change-me" not in (ROOT / "docker-compose.yml").read_text()


def test_with_the_env_example_filled_compose_resolves() -> None:
    env = filled_env_example()
    resolved, missing = resolve(COMPOSE, env)
    assert not missing
    assert "${" not in json.dumps(resolved), "nothing left to interpolate"
    x_env = resolved["services"]["origin"]["environment"]
    assert x_env["SIGNING_SECRET"] == env["SIGNING_SECRET"]
    postgres = resolved["services"]["postgres"]["environment"]["POSTGRES_PASSWORD"]
    assert f"vsp:{postgres}@postgres:5432" in x_env["DATABASE_URL"]


def test_infrastructure_consoles_are_published_on_loopback_only() -> None:
    for name in INFRASTRUCTURE:
        for port in SERVICES_COMPOSE[name].get("ports", []):
            assert str(port).startswith("127.0.0.1:"), (name, port)
    assert not SERVICES_COMPOSE["postgres"].get("ports")
    assert not SERVICES_COMPOSE["redis"].get("ports")
