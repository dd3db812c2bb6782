"""deploy/compose: remediator next to a docker-compose stack, behind a socket proxy that allows
exactly the Engine API endpoints the compose playbooks need."""

from __future__ import annotations

import re
import sys

import pytest
import yaml

from remediator.config import load_config
from remediator.lint import required_permissions
from remediator.playbooks.validate import load_rules
from tests.deploy.conftest import DEPLOY, ROOT, run

COMPOSE = DEPLOY / "compose"
RULES = [str(ROOT / "rules" / "libervia.yaml"), str(ROOT / "rules" / "3dpot.yaml")]


def proxy_allows(method: str, path: str) -> bool:
    """The socket proxy's decision, from its own ACL regexes (HAProxy's path_reg)."""
    text = (COMPOSE / "socket-proxy.cfg").read_text()
    acls = dict(re.findall(r"^\s*acl (\w+) path_reg (\S+)$", text, re.M))
    rules = re.findall(r"^\s*http-request allow if METH_(\w+) (\w+)$", text, re.M)
    return any(m == method and re.search(acls[acl], path) for m, acl in rules)


def needed() -> list[str]:
    return required_permissions(load_rules(RULES).playbooks)["docker"]


def test_the_proxy_allows_every_endpoint_the_playbooks_need():
    endpoints = needed()
    assert "POST /containers/{id}/restart" in endpoints and "POST /exec/{id}/start" in endpoints
    for endpoint in endpoints:
        method, path = endpoint.split(" ", 1)
        name = "3dpot-redis" if path.startswith("/containers") else "9a3e"  # exec ids are hex
        for concrete in (path.replace("{id}", name),
                         "/v1.41" + path.replace("{id}", "4f0c2a9b7e1d")):
            assert proxy_allows(method, concrete), f"{method} {concrete}"


@pytest.mark.parametrize("method,path", [
    ("POST", "/containers/create"), ("DELETE", "/containers/libervia-gateway"),
    ("POST", "/containers/libervia-gateway/kill"), ("POST", "/containers/libervia-gateway/stop"),
    ("POST", "/v1.41/containers/x/update"), ("GET", "/images/json"), ("POST", "/images/create"),
    ("GET", "/secrets"), ("POST", "/build"), ("GET", "/containers/../images/json"),
    ("PUT", "/containers/x/archive"), ("GET", "/containers/x/restart"),
    ("POST", "/containers/x/restart/../kill"), ("GET", "/info"), ("POST", "/events"),
    ("GET", "/events/../images/json"),
])
def test_the_proxy_refuses_everything_else(method, path):
    assert not proxy_allows(method, path)


def test_the_proxy_allows_nothing_the_playbooks_do_not_need():
    """Every endpoint shape the proxy admits is one some playbook step declares."""
    shapes = {"GET": ["/version", "/events", "/containers/json", "/containers/{id}/json",
                      "/containers/{id}/logs", "/containers/{id}/stats",
                      "/containers/{id}/archive", "/exec/{id}/json"],
              "POST": ["/containers/{id}/restart", "/containers/{id}/exec", "/exec/{id}/start"]}
    admitted = {f"{m} {p}" for m, paths in shapes.items() for p in paths
                if proxy_allows(m, p.replace("{id}", "abc123"))}
    assert admitted == set(needed())


def test_compose_file_keeps_the_socket_away_from_remediator():
    doc = yaml.safe_load((COMPOSE / "docker-compose.yml").read_text())
    remediator, proxy = doc["services"]["remediator"], doc["services"]["socket-proxy"]
    assert remediator["environment"]["DOCKER_HOST"] == "tcp://socket-proxy:2375"
    assert not any("docker.sock" in v for v in remediator["volumes"])
    assert "/var/run/docker.sock:/var/run/docker.sock:ro" in proxy["volumes"]
    assert doc["networks"]["docker-api"]["internal"] is True
    assert "remediator-data:/var/lib/remediator" in remediator["volumes"]


def test_config_scopes_changes_to_the_two_compose_projects():
    cfg = load_config(str(COMPOSE / "config.yaml"), env={})
    assert cfg.guards.compose_projects_allow == ["libervia", "3dpot"]
    assert cfg.mode == "dry-run"
    assert [p.rsplit("/", 1)[1] for p in cfg.rules] == ["libervia.yaml", "3dpot.yaml"]
    result = run(sys.executable, "-m", "remediator.cli", "lint", "--strict", "--config",
                 str(COMPOSE / "config.yaml"), *RULES)
    assert result.returncode == 0, result.stdout + result.stderr
