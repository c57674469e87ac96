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
