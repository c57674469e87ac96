"""The view's HTML: every value escaped, moving things refresh, the job page links its files."""

from __future__ import annotations

from airflow_batchai.ui import pages

CLUSTER = {
    "workspace": "ws",
    "name": "c",
    "vmSize": "STANDARD_NC6",
    "allocationState": "resizing",
    "currentNodeCount": 1,
    "targetNodeCount": 3,
    "nodeStateCounts": {"idleNodeCount": 1, "runningNodeCount": 0, "preparingNodeCount": 0, "unusableNodeCount": 0, "leavingNodeCount": 0},
    "errors": [{"code": "InsufficientNodes", "message": "<script>alert(1)</script>"}],
}


def test_the_overview_escapes_what_it_shows_and_refreshes_while_a_cluster_resizes() -> None:
    html = pages.overview_page({"clusters": [CLUSTER], "nodes": [], "jobs": [], "jobCount": 0})
    assert "<script>alert(1)</script>" not in html and "&lt;script&gt;" in html
    assert 'http-equiv="refresh"' in html and "1 / 3" in html and "no jobs" in html
    steady = {**CLUSTER, "allocationState": "steady", "errors": None}
    assert 'http-equiv="refresh"' not in pages.overview_page({"clusters": [steady], "nodes": [], "jobs": [], "jobCount": 0})


def test_the_job_page_links_its_files_under_the_jobs_address() -> None:
    job = {
        "name": "train",
        "cluster": {"id": "/subscriptions/s/resourceGroups/r/providers/Microsoft.BatchAI/workspaces/ws/clusters/c"},
        "toolType": "custom",
        "nodeCount": 1,
        "executionState": "failed",
        "creationTime": "2026-12-02T05:27:14.767633+00:00",
        "jobOutputDirectoryPathSegment": "seg",
        "executionInfo": {"startTime": None, "endTime": None, "exitCode": 3, "errors": [{"code": "JobFailed", "message": "exit 3"}]},
    }
    html = pages.job_page({"job": job, "files": [{"name": "stderr.txt", "contentLength": 12, "lastModified": None}]}, "ws", "my exp")
    assert 'href="/batchai/jobs/ws/my%20exp/train/files/stderr.txt"' in html
    assert "JobFailed: exit 3" in html and "2026-12-02 05:27:14 UTC" in html and 'http-equiv="refresh"' not in html


def test_cost_is_shown_with_its_currency_or_as_unknown_with_the_reason_never_as_zero() -> None:
    today = {"nodeSeconds": 7200.0, "byState": {"idle": {"nodeSeconds": 3600.0}}, "estimatedCost": {"amount": 6.12, "currency": "USD"}}
    html = pages.overview_page({"clusters": [{**CLUSTER, "today": today}], "nodes": [], "jobs": [], "jobCount": 0})
    assert "<td>2.000</td><td>1.000</td><td>6.12 USD</td>" in html
    job = {
        "name": "train",
        "cluster": {"id": "/subscriptions/s/resourceGroups/r/providers/Microsoft.BatchAI/workspaces/ws/clusters/c"},
        "toolType": "custom",
        "nodeCount": 2,
        "executionState": "succeeded",
        "creationTime": "2026-12-02T05:27:14.767633+00:00",
        "jobOutputDirectoryPathSegment": "seg",
        "executionInfo": {"startTime": None, "endTime": None, "exitCode": 0, "errors": None},
        "usage": {"nodeSeconds": 1800.0, "gpuHours": 0.5, "estimatedCost": {"amount": None, "currency": "USD", "reason": "set <prices>"}},
    }
    html = pages.job_page({"job": job, "files": []}, "ws", "e")
    assert "<th>Node-hours</th><td>0.500</td>" in html and "<th>GPU-hours</th><td>0.5</td>" in html
    assert 'title="set &lt;prices&gt;">unknown</span>' in html and "0.00" not in html


def running_job(**changes: object) -> dict[str, object]:
    job = {
        "name": "train",
        "cluster": {"id": "/subscriptions/s/resourceGroups/r/providers/Microsoft.BatchAI/workspaces/ws/clusters/c"},
        "toolType": "custom",
        "nodeCount": 1,
        "executionState": "running",
        "creationTime": "2026-12-02T05:27:14+00:00",
        "jobOutputDirectoryPathSegment": "seg",
        "executionInfo": {"startTime": "2026-12-02T05:29:14+00:00", "endTime": None, "exitCode": None, "errors": None},
    }
    return {**job, **changes}


def test_training_curves_are_one_chart_per_tag_with_every_name_escaped() -> None:
    scalars = {"<script>x</script>": {"MODEL/<b>run</b>": [(1, 0.5, 0.0), (2, 0.25, 0.0)]}, "loss": {"MODEL/tb": [(10, 1.0, 0.0)]}}
    html = pages.job_page({"job": running_job(), "files": [], "scalars": scalars}, "ws", "e")
    assert "<script>x</script>" not in html and "&lt;script&gt;x&lt;/script&gt;" in html and "<b>run</b>" not in html
    assert html.count('<svg xmlns="http://www.w3.org/2000/svg"') == 2 and "(step)" in html
    assert "Queued for</th><td>2 min 00 s" in html, "from creation to start"


def test_the_terminate_button_needs_a_token_and_a_job_that_can_still_be_stopped() -> None:
    assert "Terminate" not in pages.job_page({"job": running_job(), "files": []}, "ws", "e")
    html = pages.job_page({"job": running_job(), "files": []}, "ws", "e", terminate="t0k3n")
    assert 'action="/batchai/jobs/ws/e/train/terminate"' in html and 'name="csrf" value="t0k3n"' in html and 'method="post"' in html
    ended = pages.job_page({"job": running_job(executionState="succeeded"), "files": []}, "ws", "e", terminate="t0k3n")
    assert "t0k3n" not in ended


def test_a_file_page_says_whose_file_it_is_and_an_empty_one_says_it_is_empty() -> None:
    html = pages.file_page("ws", "my exp", "train", "stderr.txt", "", 0, 0)
    assert 'href="/batchai/jobs/ws/my%20exp/train"' in html and "stderr.txt is empty" in html
    tail = pages.file_page("ws", "e", "train", "stdout.txt", "<last lines>", 4096, 8192)
    assert "&lt;last lines&gt;" in tail and "the last 4.0 KiB of 8.0 KiB" in tail and "offset=0" in tail
