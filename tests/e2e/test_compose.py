"""docker-compose.yml: well formed, and every batchyard command it runs exists in the CLI.

There is no Docker engine here; where the ``docker compose`` client exists its ``config``
check runs too.
"""

from __future__ import annotations

import shutil
import subprocess

import pytest
import yaml
from click.testing import CliRunner

from batchyard.cli import cli
from batchyard.commands import register
from tests.helpers import ROOT

COMPOSE = ROOT / "docker-compose.yml"


def _compose() -> dict:  # type: ignore[type-arg]
    return yaml.safe_load(COMPOSE.read_text())


def test_the_stack_has_every_service_and_dependencies_resolve() -> None:
    services = _compose()["services"]
    assert {"redis", "postgres", "worker", "flower", "mock-upstream", "migrate"} <= set(services)
    for name, service in services.items():
        for dep in service.get("depends_on", {}):
            assert dep in services, f"{name} depends on unknown service {dep}"
    worker_env = services["worker"]["environment"]
    assert worker_env["DATABASE_URL"].startswith("postgresql://")
    assert worker_env["REDIS_URL"].startswith("redis://redis:")


@pytest.mark.parametrize("service", ["migrate", "mock-upstream", "worker", "flower"])
def test_each_service_command_is_a_real_cli_command(service: str) -> None:
    register(cli)
    command = _compose()["services"][service]["command"]
    path = [part for part in command if not part.startswith("-")][:2]
    result = CliRunner().invoke(cli, [*path[: 2 if path[0] == "db" else 1], "--help"])
    assert result.exit_code == 0, result.output
    options = [part.split("=")[0] for part in command if part.startswith("--")]
    for option in options:
        assert option in result.output, f"{service}: {option} is not an option"


@pytest.mark.skipif(not shutil.which("docker"), reason="no docker client")
def test_docker_compose_config_accepts_the_file_where_the_plugin_exists() -> None:
    probe = subprocess.run(["docker", "compose", "version"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip("the docker compose plugin is not installed")
    result = subprocess.run(["docker", "compose", "-f", str(COMPOSE), "config", "-q"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_the_catalog_the_stack_mounts_is_valid_and_names_its_keys() -> None:
    from routing.catalog import load_catalog

    services = _compose()["services"]
    env = services["worker"]["environment"]
    mounted = ROOT / "examples" / env["BATCHYARD_CONFIG"].removeprefix("/config/")
    catalog = load_catalog(mounted, secrets=lambda name: env.get(name))
    for dep in catalog.deployments.values():
        assert dep.base_url.startswith("http://mock-upstream:"), dep.name
