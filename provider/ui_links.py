"""Addresses in the Batch AI view of the Airflow UI (the provider's plugin serves them under ``UI_PREFIX``).

Here, not in the plugin, so the operators' extra link and the pages agree without the link
importing the web app.
"""

from __future__ import annotations

from urllib.parse import quote

UI_PREFIX = "/batchai"


def job_page_path(workspace: str, experiment: str, name: str) -> str:
    return f"{UI_PREFIX}/jobs/{quote(workspace, safe='')}/{quote(experiment, safe='')}/{quote(name, safe='')}"
