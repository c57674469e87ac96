"""The provider's Airflow UI plugin: the Batch AI view (ui/app.py) and its place in the navigation.

Airflow loads it from ``get_provider_info()["plugins"]`` (the class itself, not an instance, so
its parts are plain class attributes); only the api-server serves the web app. Every other
Airflow process loads plugins too (a task deserialising its DAG looks for operator extra links),
so the app is imported on its first request, not here: building it imports Airflow's API
security, the hook and the REST API, about 2.5 s that each `dags test` and each task paid.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from airflow.plugins_manager import AirflowPlugin

from airflow_batchai.ui_links import UI_PREFIX

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


class LazyApp:
    """An ASGI app that imports ui/app.py's FastAPI app when the first request reaches it."""

    def __init__(self) -> None:
        self._app: Any = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._app is None:
            from airflow_batchai.ui.app import app

            self._app = app
        await self._app(scope, receive, send)


class BatchAIPlugin(AirflowPlugin):
    name = "batchai"
    external_views = [
        {
            "name": "Batch AI",
            "href": f"{UI_PREFIX}/",
            "destination": "nav",
            "category": "browse",
            "url_route": "batchai",
        },
        {
            # a tab on each task instance's own page: the job it submitted (Airflow fills in the ids)
            "name": "Batch AI",
            "href": f"{UI_PREFIX}/ti/{{DAG_ID}}/{{RUN_ID}}/{{TASK_ID}}/{{MAP_INDEX}}",
            "destination": "task_instance",
            "url_route": "batchai_job",
        },
    ]
    fastapi_apps = [{"app": LazyApp(), "url_prefix": UI_PREFIX, "name": "Batch AI"}]
