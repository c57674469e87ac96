"""A running job's page in headless Chromium against a real api-server with real users: its resource
charts, the overview's live GPU column and filters, and the Terminate button, which an editor of DAGs
may press and a viewer may not, and which no other site can press in a signed-in editor's name.
Also: what the view says when its storage is down.

There is no GPU here: a stand-in ``nvidia-smi`` first on PATH (tests/provider/conftest.py's) answers
the node's GPU queries, in nvidia-smi's CSV format, for the agent this test process starts.
"""

from __future__ import annotations

import json
import os
import re
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from airflow_batchai.service import Service
from airflow_batchai.spec import load_cluster_spec, load_job_spec
from tests.conftest import custom_job, kill_agents_under, wait_until
from tests.provider.conftest import STAND_IN
from tests.ui.conftest import api_server_alone
from tests.ui.test_batchai_view import screenshot, shows
from tests.ui.test_rest_api_in_airflow import signed_in_token


def sign_in(driver: Any, stack: Any, user: str) -> None:
    """The browser holds the user's Airflow session cookie, as after logging in."""
    driver.get(stack.url + "/api/v2/monitor/health")
    driver.delete_all_cookies()
    driver.add_cookie({"name": "_token", "value": signed_in_token(stack, user), "path": "/"})


def post_terminate(stack: Any, user: str, page: str, form: str, headers: dict[str, str] | None = None) -> int:
    """A form POST as a browser sends it: the session cookie, no Authorization header."""
    cookie = f"_token={signed_in_token(stack, user)}"
    request = urllib.request.Request(
        stack.url + page + "/terminate",
        data=form.encode(),
        method="POST",
        headers={"Cookie": cookie, "Content-Type": "application/x-www-form-urlencoded", **(headers or {})},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


@pytest.fixture
def running_job(signed_in_airflow: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Service, str]]:
    """(the service, the job's page): a job running on the api-server's local node, whose two stand-in GPUs are 87% and 41% busy."""
    bin_folder = tmp_path / "fake-gpu-bin"
    bin_folder.mkdir()
    (bin_folder / "nvidia-smi").write_text(STAND_IN)
    (bin_folder / "nvidia-smi").chmod(0o755)
    (bin_folder / "utilization").write_text("87, 4000, 16160\n41, 2000, 16160\n")
    monkeypatch.setenv("PATH", f"{bin_folder}:{os.environ['PATH']}")
    home = Path(json.loads(signed_in_airflow.env["AIRFLOW_CONN_BATCHAI_DEFAULT"])["extra"]["home"])
    service = Service.embedded(home, nodes=1)
    if not any(c.name == "gpu" for c in service.list_clusters()):
        service.create_cluster("gpu", load_cluster_spec({"scaleSettings": {"manual": {"targetNodeCount": 1}}}, environ={}))
    name = f"busy-{len(service.list_jobs('e'))}"
    service.create_job("gpu", name, load_job_spec({"properties": custom_job("sleep 120")}, environ={}), "e")
    try:
        wait_until(lambda: service.show_job(name, "e").execution_state == "running", 60, 0.3, what="the job running")
        yield service, name
    finally:
        service.terminate_job(name, "e")
        service.wait_job(name, "e", timeout_s=30, poll_s=0.2)
        kill_agents_under(home)


def test_a_running_jobs_page_draws_its_gpus_and_only_an_editor_may_terminate_it(
    signed_in_airflow: Any, running_job: tuple[Service, str], browser: Any
) -> None:
    from selenium.webdriver.common.by import By

    stack, (service, name) = signed_in_airflow, running_job
    page = f"/batchai/jobs/default/e/{name}"
    sign_in(browser, stack, "viewer")
    browser.get(stack.url + page)
    text = shows(browser, f"Job {name}", "running", "GPU utilization (%)", "CPU (% busy)")
    svg = browser.find_element(By.CSS_SELECTOR, 'svg[aria-label="GPU utilization"]')
    titles = " ".join(t.get_attribute("textContent") for t in svg.find_elements(By.CSS_SELECTOR, "circle title"))
    assert "local-0 GPU 0: 87 % at" in titles and "local-0 GPU 1: 41 % at" in titles, "one line per GPU, values on hover"
    assert "Terminate" not in text and not browser.find_elements(By.CSS_SELECTOR, "button.danger"), "a viewer gets no button"

    # the overview: the job's GPUs now (the mean; each GPU on hover), and its filters
    browser.get(stack.url + "/batchai/")
    shows(browser, "GPU now", "64%")
    browser.find_element(By.CSS_SELECTOR, 'select[name="state"] option[value="succeeded"]').click()
    browser.find_element(By.CSS_SELECTOR, "form.filters button").click()
    shows(browser, "no jobs match")
    assert "state=succeeded" in browser.current_url, "a filter is a plain GET: the address can be shared"
    browser.find_element(By.CSS_SELECTOR, 'select[name="state"] option[value="running"]').click()
    browser.find_element(By.CSS_SELECTOR, "form.filters button").click()
    shows(browser, name, "64%")

    # an editor's page has the button; its token is the editor's alone
    sign_in(browser, stack, "author")
    browser.get(stack.url + page)
    shows(browser, f"Job {name}", "Terminate", "GPU utilization (%)")
    token = browser.find_element(By.CSS_SELECTOR, 'input[name="csrf"]').get_attribute("value")
    browser.execute_script("document.getElementById('resources').scrollIntoView()")
    screenshot(browser, "job-page-running", for_docs=True)
    assert post_terminate(stack, "viewer", page, f"csrf={token}") == 403, "a viewer, even with an editor's token"
    assert post_terminate(stack, "author", page, "") == 403, "no token: a page elsewhere cannot know it"
    assert post_terminate(stack, "author", page, f"csrf={token}", {"Origin": "https://elsewhere.example"}) == 403
    assert post_terminate(stack, "author", page, f"csrf={token}", {"Sec-Fetch-Site": "cross-site"}) == 403
    assert service.show_job(name, "e").execution_state == "running", "nothing refused changed anything"

    browser.find_element(By.CSS_SELECTOR, "button.danger").click()
    wait_until(lambda: browser.current_url == stack.url + page, 20, 0.25, what="back on the job's page")
    assert service.wait_job(name, "e", timeout_s=30, poll_s=0.2).execution_state == "failed"
    browser.refresh()
    shows(browser, "failed", "JobTerminated")
    assert not browser.find_elements(By.CSS_SELECTOR, "button.danger"), "an ended job has no button"


def test_times_are_shown_in_the_zone_the_airflow_user_chose(signed_in_airflow: Any, running_job: tuple[Service, str], browser: Any) -> None:
    from selenium.webdriver.common.by import By

    sign_in(browser, signed_in_airflow, "viewer")
    browser.get(f"{signed_in_airflow.url}/batchai/jobs/default/e/{running_job[1]}")
    browser.execute_script("window.localStorage.setItem('timezone', JSON.stringify('Asia/Tokyo'))")  # as Airflow's zone menu does
    browser.refresh()
    created = wait_until(lambda: browser.find_elements(By.CSS_SELECTOR, "time[datetime]"), 10, what="a time")[0]
    shown = wait_until(lambda: (t := created.text) and "UTC" not in t and t, 10, 0.2, what="the time in the user's zone")
    assert re.search(r"GMT\+9|JST", shown), shown


@pytest.fixture(scope="module")
def storage_down_airflow(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """An api-server whose Batch AI view reads a storage account nothing answers for (a closed loopback port)."""
    from tests.azurite import ACCOUNT, KEY, _free_port

    closed = _free_port("127.0.0.1")
    connection = {
        "conn_type": "batchai",
        "extra": {
            "storage_connection_string": f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={KEY};"
            f"BlobEndpoint=http://127.0.0.1:{closed}/{ACCOUNT};"
        },
    }
    extra = {"AIRFLOW__BATCHAI__UI_CONNECTION": "batchai_team", "AIRFLOW_CONN_BATCHAI_TEAM": json.dumps(connection)}
    with api_server_alone(tmp_path_factory.mktemp("airflow-storage-down"), extra) as stack:
        yield stack


def test_with_its_storage_down_the_view_names_the_connection_and_the_error(storage_down_airflow: Any, browser: Any) -> None:
    from tests.azurite import KEY

    status, body = storage_down_airflow.get_text("/batchai/", timeout_s=60)
    assert status == 503 and "connection batchai_team" in body and "ui_connection" in body, body[:2000]
    browser.delete_all_cookies()
    browser.get(storage_down_airflow.url + "/batchai/")
    text = shows(browser, "Cannot read Batch AI's store (connection batchai_team)", timeout_s=60)
    assert "Traceback" not in text and KEY not in text and KEY not in body, "no stack trace, no account key"
