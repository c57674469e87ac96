"""The Airflow UI, clicked through in headless Chromium against a real api-server: what a user sees.

The connection form for a ``batchai`` connection, the quickstart triggered from its DAG page,
the job's output in the sensor's task log, the submit task's extra link to the job's page in
the Batch AI view with the training curves the job wrote, its stdout file, the job in the task
instance's own tab, and the view in Airflow's navigation. Screenshots of each step go to
``artifacts/ui/`` (CI keeps them) and, for the ones docs/ui.md shows, to ``docs/images/``: the
documentation's pictures are this test's, so they never go stale.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import unquote

import pytest

from airflow_batchai.config import connection_config
from tests.conftest import REPO, wait_until
from tests.ui.conftest import SHOTS

DOC_IMAGES = REPO / "docs" / "images"


def screenshot(driver: Any, name: str, for_docs: bool = False) -> None:
    driver.save_screenshot(str(SHOTS / f"{name}.png"))
    if for_docs:
        driver.save_screenshot(str(DOC_IMAGES / f"{name}.png"))


def page_text(driver: Any) -> str:
    from selenium.webdriver.common.by import By

    try:
        return driver.find_element(By.TAG_NAME, "body").text
    except Exception:  # the page is being replaced
        return ""


def shows(driver: Any, *texts: str, timeout_s: float = 30) -> str:
    try:
        return wait_until(
            lambda: (t := page_text(driver)) and all(x in t for x in texts) and t, timeout_s, 0.25, what=f"page showing {texts}"
        )
    except AssertionError as error:
        raise AssertionError(f"{error}; {driver.current_url} shows:\n{page_text(driver)[:3000]}") from None


def click(driver: Any, css: str | None = None, text: str | None = None, tag: str = "button", timeout_s: float = 20) -> None:
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By

    def find() -> Any:
        for element in driver.find_elements(By.CSS_SELECTOR, css or tag):
            try:
                if element.is_displayed() and (text is None or text in element.text):
                    return element
            except StaleElementReferenceException:  # the page re-rendered it meanwhile: look again
                return None
        return None

    wait_until(find, timeout_s, 0.25, what=f"{css or tag} {text or ''}").click()


def test_a_user_sets_up_runs_and_follows_the_quickstart_in_the_airflow_ui(airflow_stack: Any, browser: Any) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    # the connection form: grouped, the host list one per line, nothing saved that was not typed
    browser.get(airflow_stack.url + "/connections")
    click(browser, text="Add Connection")
    kind = wait_until(lambda: browser.find_elements(By.CSS_SELECTOR, 'input[role="combobox"]'), 20, what="connection type box")[0]
    kind.click()
    kind.send_keys("Batch AI")
    wait_until(lambda: browser.find_elements(By.XPATH, "//*[@role='option'][contains(., 'Batch AI')]"), 20, what="the Batch AI option")
    kind.send_keys(Keys.ENTER)
    shows(browser, "Nodes", "SSH", "Storage", "Advanced")
    browser.find_element(By.CSS_SELECTOR, 'input[name="connection_id"]').send_keys("batchai_from_the_form")
    click(browser, text="Nodes")
    hosts = wait_until(lambda: browser.find_elements(By.CSS_SELECTOR, "textarea#element_hosts"), 10, what="hosts field")[0]
    assert hosts.tag_name == "textarea"
    hosts.send_keys("gpu-node-1\ngpu-node-2:2222")
    screenshot(browser, "connection-form", for_docs=True)
    click(browser, text="Save")
    saved = wait_until(lambda: _connection(airflow_stack, "batchai_from_the_form"), 20, 0.5, what="the saved connection")
    assert saved["conn_type"] == "batchai"
    extra = json.loads(saved["extra"] or "{}")
    assert {k: v for k, v in extra.items() if v is not None} == {"hosts": "gpu-node-1\ngpu-node-2:2222"}, "no default, no empty secret"
    config = connection_config(extra, "connection batchai_from_the_form", from_airflow=True)
    assert config.hosts == ["gpu-node-1", "gpu-node-2:2222"] and config.secrets() == []

    # trigger the quickstart from its page
    airflow_stack.wait_for_dag("batchai_quickstart")
    browser.get(airflow_stack.url + "/dags/batchai_quickstart")
    click(browser, css='[data-testid="trigger-dag-button"]')
    click(browser, css='[data-testid="trigger-dag-submit"]')
    wait_until(lambda: "/runs/" in browser.current_url, 20, 0.25, what="the new run's page")
    run_id = unquote(browser.current_url.split("/runs/", 1)[1].split("/", 1)[0])
    assert airflow_stack.wait_for_run("batchai_quickstart", run_id, timeout_s=300) == "success"

    # the job's output, in the sensor's task log
    runs = f"{airflow_stack.url}/dags/batchai_quickstart/runs/{run_id}/tasks"
    browser.get(f"{runs}/wait_for_job")
    shows(browser, "[stdout.txt] test accuracy", "Finished Epoch[20 of 20]")
    screenshot(browser, "task-log", for_docs=True)

    # the submit task's extra link opens the job's page, and from there its stdout
    browser.get(f"{runs}/submit_job/details")
    click(browser, tag="a", text="Batch AI job")
    text = shows(browser, "Job batchai_quickstart-submit_job-", "stdout / stderr", "Training curves")
    assert "succeeded" in text and "cntk" in text and "stdout.txt" in text and "stderr.txt" in text
    assert "batchai_quickstart / submit_job" in text and "ConvNet_MNIST.py" in text, "the task that submitted it; its command"
    charts = {c.get_attribute("aria-label") for c in browser.find_elements(By.CSS_SELECTOR, "svg[role=img]")}
    assert {"train/loss", "train/error_rate", "test/error_rate"} <= charts, f"the job's TensorBoard scalars, one chart per tag: {charts}"
    loss = browser.find_element(By.CSS_SELECTOR, 'svg[aria-label="train/loss"]')
    assert len(loss.find_elements(By.TAG_NAME, "circle")) == 20 and "(step)" in loss.text, "20 epochs, the step on the x axis"
    assert "MODEL" in text and "ConvNet_MNIST_19.dnn" in text, "its output directory's files"
    job_url = browser.current_url
    browser.execute_script("document.getElementById('training').scrollIntoView()")
    screenshot(browser, "job-page", for_docs=True)
    click(browser, tag="a", text="stdout.txt")
    text = shows(browser, "test accuracy", "stdout.txt")
    assert "← job batchai_quickstart-submit_job-" in text, "the file page says whose file it is and leads back"
    click(browser, tag="a", text="← job")
    wait_until(lambda: browser.current_url == job_url, 10, 0.25, what="back on the job's page")

    # the same job in the submit task instance's own tab, inside Airflow's navigation
    browser.get(f"{runs}/submit_job")
    click(browser, css="a", text="Batch AI")  # the tab beside Logs, Details ...
    wait_until(lambda: browser.current_url.endswith("/submit_job/plugin/batchai_job"), 20, 0.25, what="the task instance's Batch AI tab")
    frame = wait_until(lambda: browser.find_elements(By.TAG_NAME, "iframe"), 20, what="the tab's frame")[0]
    browser.switch_to.frame(frame)
    shows(browser, "Job batchai_quickstart-submit_job-", "Training curves")
    browser.switch_to.default_content()
    screenshot(browser, "task-instance-view", for_docs=True)

    # the Batch AI view in Airflow's navigation: clusters, nodes, jobs per experiment
    browser.get(airflow_stack.url + "/plugin/batchai")
    frame = wait_until(lambda: browser.find_elements(By.TAG_NAME, "iframe"), 20, what="the view's frame")[0]
    browser.switch_to.frame(frame)
    text = shows(browser, "Clusters", "Nodes", "Jobs", "Experiment quickstart", "nc6")
    assert "local-0" in text and "succeeded" in text
    browser.switch_to.default_content()
    screenshot(browser, "batchai-view", for_docs=True)


def _connection(stack: Any, conn_id: str) -> dict[str, Any] | None:
    try:
        return stack.api("GET", f"/api/v2/connections/{conn_id}")
    except OSError:
        return None


def test_the_view_needs_an_airflow_user_and_serves_only_stdout_and_stderr_files(airflow_stack: Any) -> None:
    import urllib.error
    import urllib.request

    request = urllib.request.Request(airflow_stack.url + "/batchai/api/overview", headers={"Authorization": "Bearer not-a-token"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10)
    assert refused.value.code == 403
    status, body = airflow_stack.get_text("/batchai/api/overview")
    assert status == 200 and set(json.loads(body)) >= {"clusters", "nodes", "jobs", "jobCount", "offset", "filters"}
    assert airflow_stack.get_text("/batchai/jobs/default/default/no-such-job")[0] == 404
    assert airflow_stack.get_text("/batchai/jobs/default/default/some-job/files/..%2F..%2Fsecrets.json")[0] == 404
