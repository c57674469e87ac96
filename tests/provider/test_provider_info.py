"""The connection form Airflow's UI draws for a ``batchai`` connection.

Airflow 3's form keeps only the extras it declares, so a field missing here could not be set
from the UI and could be dropped when a connection made elsewhere is edited there.
"""

from __future__ import annotations

import typing

from airflow_batchai.config import SECRET_FIELDS, ProviderConfig
from airflow_batchai.provider_info import SECTIONS, get_provider_info

FIELDS = get_provider_info()["connection-types"][0]["conn-fields"]
PLACEHOLDERS = get_provider_info()["connection-types"][0]["ui-field-behaviour"]["placeholders"]


def test_every_connection_setting_has_a_form_field_of_its_type() -> None:
    assert set(FIELDS) == set(ProviderConfig.model_fields)
    for name, info in ProviderConfig.model_fields.items():
        schema = FIELDS[name]["schema"]
        literal = [a for a in typing.get_args(info.annotation) if isinstance(a, str)] if "Literal" in str(info.annotation) else []
        assert "default" not in schema, f"{name}: the form would save the default into every connection's extras"
        assert schema["section"] in SECTIONS, name
        if literal:
            assert schema["enum"] == literal and f"(default {info.default})" in FIELDS[name]["description"], name
        if info.annotation is bool:
            assert schema["type"][0] == "boolean" and f"(default {str(info.default).lower()})" in FIELDS[name]["description"], name
        if isinstance(info.default, str) and info.default and name not in ("subscription_id", "resource_group"):
            described = f"(default {info.default})" in FIELDS[name]["description"]
            assert described or PLACEHOLDERS.get(name) == info.default, name


def test_the_host_list_is_a_multi_line_field_and_the_form_is_grouped() -> None:
    assert FIELDS["hosts"]["schema"]["format"] == "multiline"
    assert [name for name, field in FIELDS.items() if field["schema"]["section"] == "Storage"][:2] == [
        "storage_account",
        "storage_account_key",
    ]


def test_secret_settings_are_password_fields_and_nothing_else_is() -> None:
    sensitive = {name for name, field in FIELDS.items() if field["schema"].get("format") == "password"}
    assert sensitive == set(SECRET_FIELDS)


def test_airflow_registers_the_form_with_sensitive_fields_hidden() -> None:
    from airflow.providers_manager import ProvidersManager

    widgets = ProvidersManager().connection_form_widgets
    assert widgets["extra__batchai__vault_key"].is_sensitive
    assert not widgets["extra__batchai__azure_files_mount"].is_sensitive
    assert widgets["extra__batchai__azure_files_mount"].field["schema"]["enum"] == ["stage", "cifs"]
