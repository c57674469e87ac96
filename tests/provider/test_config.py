"""Connection settings that cannot work alone are refused, naming them, instead of silently meaning 'no storage'."""

from __future__ import annotations

import pytest

from airflow_batchai.config import ProviderConfig, service_from_config
from airflow_batchai.errors import BatchAIError


@pytest.mark.parametrize(
    ("settings", "named"),
    [
        ({"storage_account_key": "a2V5"}, "storage_account_key"),
        ({"storage_file_endpoint": "https://files.example"}, "storage_file_endpoint"),
        ({"azure_files_mount": "cifs"}, "azure_files_mount"),
    ],
)
def test_storage_details_without_an_account_are_refused(settings: dict, named: str, tmp_path) -> None:
    with pytest.raises(BatchAIError, match=f"{named} need storage_account or storage_connection_string") as raised:
        service_from_config(ProviderConfig(home=str(tmp_path), **settings))
    assert "a2V5" not in str(raised.value)
