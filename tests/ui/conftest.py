"""Fixtures of the UI tests: a headless Chromium, and an api-server with real users."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO, kill_agents_under, wait_until

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
SHOTS = REPO / "artifacts" / "ui"
USERS = {"admin": "admin-password-for-tests", "viewer": "viewer-password-for-tests", "author": "author-password-for-tests"}


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    if not (CHROMIUM and CHROMEDRIVER):
        pytest.skip("Chromium is not installed (.ci/run installs chromium and chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service as DriverService

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    profile = tmp_path_factory.mktemp("chromium")
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1400,1000"):
        options.add_argument(argument)
    options.add_argument(f"--user-data-dir={profile}")
    driver = webdriver.Chrome(options=options, service=DriverService(CHROMEDRIVER))
    driver.implicitly_wait(0)
    SHOTS.mkdir(parents=True, exist_ok=True)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def signed_in_airflow(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """An api-server alone, with real users (an admin, a viewer and a DAG author with the plain
    "user" role) instead of all-admins; its connection is the embedded default's local nodes."""
    folder = tmp_path_factory.mktemp("airflow-users")
    passwords = folder / "passwords.json"
    passwords.write_text(json.dumps(USERS))
    extra = {
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "False",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin,viewer:viewer,author:user",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
        "AIRFLOW_CONN_BATCHAI_DEFAULT": json.dumps(
            {"conn_type": "batchai", "extra": {"local_nodes": 1, "home": str(folder / "batchai-home")}}
        ),
    }
    with api_server_alone(folder, extra) as stack:
        yield stack


@contextmanager
def api_server_alone(folder: Path, extra: dict[str, str]) -> Iterator[Any]:
    """An Airflow api-server (no scheduler) on a free loopback port, its database migrated, with ``extra``
    in its environment; stopped by its process group, and the local agents it started with it."""
    from tests import airflowstack
    from tests.azurite import _free_port

    dags = folder / "dags"
    dags.mkdir()
    env = airflowstack.environment(folder, _free_port("127.0.0.1"), dags, folder / "batchai-home", extra)
    subprocess.run([airflowstack.AIRFLOW, "db", "migrate"], env=env, check=True, capture_output=True, timeout=300)
    stack = airflowstack.AirflowStack(folder, int(env["AIRFLOW__API__PORT"]), env)
    stack.start_component("api-server")
    try:
        wait_until(lambda: listening(stack), 120, 0.5, what="the api-server")
        yield stack
    finally:
        stack.stop("api-server")
        kill_agents_under(folder / "batchai-home")


def listening(stack: Any) -> bool:
    if stack.processes["api-server"].poll() is not None:
        raise RuntimeError("the api-server exited:\n" + stack.log_of("api-server")[-3000:])
    try:
        return stack.get_text("/api/v2/monitor/health", timeout_s=5)[0] == 200
    except OSError:
        return False
