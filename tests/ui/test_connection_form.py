"""A ``batchai`` connection in Airflow's own connection pages, clicked in headless Chromium: how the form
says to write hosts, what saving it stores, and the list's **Test** button (400 Bad Request before, on
Airflow 3.3.2, for every connection stored without a port).

The form's screenshot is the one docs/images/connection-form.png shows; the Test results go to
``artifacts/ui/``.
"""

from __future__ import annotations

import json
import urllib.error
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from airflow_batchai.config import connection_config
from airflow_batchai.provider_info import get_provider_info
from tests.conftest import REPO, wait_until
from tests.ui.conftest import SHOTS
from tests.ui.test_batchai_view import click, shows

FORM_SCREENSHOT = REPO / "docs" / "images" / "connection-form.png"
FIELDS = get_provider_info()["connection-types"][0]["conn-fields"]
HOSTS = 'gpu-1\nuser@gpu-2:2222\n{"host": "gpu-3", "gpus": 4}'


@pytest.fixture(scope="module")
def chromium(request: pytest.FixtureRequest) -> Any:
    """The Batch AI view tests' headless Chromium (fixture ``browser``), one for this module."""
    return request.getfixturevalue("browser")


@pytest.fixture
def connections(airflow_stack: Any) -> Iterator[Any]:
    """Connections this test adds through the API, deleted again after it (the stack is the session's)."""
    made: list[str] = []

    def add(connection_id: str, extra: dict[str, Any]) -> str:
        airflow_stack.api(
            "POST", "/api/v2/connections", {"connection_id": connection_id, "conn_type": "batchai", "extra": json.dumps(extra)}
        )
        made.append(connection_id)
        return connection_id

    yield add
    for connection_id in made:
        delete(airflow_stack, connection_id)


def delete(stack: Any, connection_id: str) -> None:
    try:
        stack.api("DELETE", f"/api/v2/connections/{connection_id}")
    except urllib.error.HTTPError as error:
        if error.code != 404:
            raise


def test_the_form_shows_how_to_write_hosts_and_saving_it_stores_only_what_was_typed(airflow_stack: Any, chromium: Any) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    chromium.get(airflow_stack.url + "/connections")
    click(chromium, text="Add Connection")
    kind = wait_until(lambda: chromium.find_elements(By.CSS_SELECTOR, 'input[role="combobox"]'), 20, what="connection type box")[0]
    kind.send_keys("Batch AI")
    wait_until(lambda: chromium.find_elements(By.XPATH, "//*[@role='option'][contains(., 'Batch AI')]"), 20, what="the Batch AI option")
    kind.send_keys(Keys.ENTER)
    chromium.find_element(By.CSS_SELECTOR, 'input[name="connection_id"]').send_keys("batchai_gpus")
    click(chromium, text="Nodes")

    # the hosts field says each way to write a host
    hosts = wait_until(lambda: chromium.find_elements(By.CSS_SELECTOR, "textarea#element_hosts"), 10, what="hosts field")[0]
    shows(chromium, 'one host per line: gpu-1, user@gpu-2:2222, or a JSON object {"host": "gpu-3"', "Empty: local nodes", timeout_s=10)
    # the Slurm field is a line of text offering an example, not an empty JSON editor
    slurm = chromium.find_element(By.CSS_SELECTOR, "#element_slurm")
    assert slurm.tag_name == "input" and slurm.get_attribute("type") == "text"
    examples = chromium.find_elements(By.CSS_SELECTOR, f"datalist#{slurm.get_attribute('list')} option")
    assert '{"partition": "gpu"}' in [option.get_attribute("value") for option in examples]
    shows(chromium, "the partition's name (gpu), or JSON", timeout_s=10)

    hosts.send_keys(HOSTS)
    chromium.execute_script("arguments[0].scrollIntoView({block: 'start'})", hosts)
    FORM_SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    chromium.save_screenshot(str(FORM_SCREENSHOT))
    click(chromium, text="Save")
    stored = wait_until(lambda: _connection(airflow_stack, "batchai_gpus"), 20, 0.5, what="the saved connection")
    try:
        extra = json.loads(stored["extra"])
        # Airflow's form writes every field of the type, null unless typed in (its edit form shows only the
        # fields the stored extras name, so they must stay); the hook reads null as "not set"
        assert {name: value for name, value in extra.items() if value is not None} == {"hosts": HOSTS}
        assert set(extra) <= set(FIELDS) and stored["port"] is None
        config = connection_config(extra, "connection batchai_gpus", from_airflow=True)
        assert config == connection_config({"hosts": HOSTS}, "connection batchai_gpus", from_airflow=True)
        assert config.hosts == ["gpu-1", "user@gpu-2:2222", {"host": "gpu-3", "gpus": 4}]
    finally:
        delete(airflow_stack, "batchai_gpus")


def test_the_test_button_checks_a_batchai_connection_and_names_its_broken_field(
    airflow_stack: Any, chromium: Any, connections: Any, tmp_path: Path
) -> None:
    """Both connections stored as the form stores them (every other field null, no port)."""
    home = tmp_path / "home"
    fine = connections("batchai_fine", {**dict.fromkeys(FIELDS), "local_nodes": 1, "home": str(home)})
    broken = connections("batchai_broken", {**dict.fromkeys(FIELDS), "hosts": "gpu-1\nuser@gpu-2:notaport"})
    chromium.get(airflow_stack.url + "/connections")

    _test_button(chromium, fine).click()
    shows(chromium, "Test Connection Successful", f"1 node(s) answer (1 local node(s), home {home})")
    assert not home.exists(), "testing a connection writes nothing"

    _test_button(chromium, broken).click()  # refused before any name is looked up
    shows(chromium, "Test Connection Failed", "InvalidConnection: connection batchai_broken: field hosts[1]: 'user@gpu-2:notaport'")
    chromium.save_screenshot(str(SHOTS / "connection-test.png"))


def _test_button(driver: Any, connection_id: str) -> Any:
    from selenium.webdriver.common.by import By

    row = f"//tr[td[normalize-space()='{connection_id}']]//button[@aria-label='Test Connection']"
    return wait_until(lambda: driver.find_elements(By.XPATH, row), 20, 0.25, what=f"the Test button of {connection_id}")[0]


def _connection(stack: Any, connection_id: str) -> dict[str, Any] | None:
    try:
        return stack.api("GET", f"/api/v2/connections/{connection_id}")
    except urllib.error.HTTPError:
        return None
