"""The provider's Airflow UI plugin: the Batch AI view (ui/app.py) and its place in the navigation.

Airflow loads it from ``get_provider_info()["plugins"]`` (the class itself, not an instance, so
its parts are plain class attributes); only the api-server serves the web app.
"""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from airflow_batchai.ui.app import app
from airflow_batchai.ui_links import UI_PREFIX


class BatchAIPlugin(AirflowPlugin):
    name = "batchai"
    external_views = [
        {
            "name": "Batch AI",
            "href": f"{UI_PREFIX}/",
            "destination": "nav",
            "category": "browse",
            "url_route": "batchai",
        }
    ]
    fastapi_apps = [{"app": app, "url_prefix": UI_PREFIX, "name": "Batch AI"}]
