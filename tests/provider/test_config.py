"""Connection settings that cannot work alone are refused, naming them, instead of silently meaning 'no storage'."""

from __future__ import annotations

import pytest

from airflow_batchai.config import ProviderConfig, connection_config, service_from_config
from airflow_batchai.errors import BatchAIError
from airflow_batchai.transport.ssh import HostSpec


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


@pytest.mark.parametrize(
    ("extras", "named"),
    [
        ({"hosts": 5}, "field hosts: a list of hosts or a comma-separated text"),
        ({"hosts": [{"port": 22}]}, "hosts[0].host: required"),
        ({"hosts": [{"host": "10.0.0.1", "port": "x"}]}, "hosts[0].port: expected int"),
        ({"hosts": [{"host": "10.0.0.1", "port": 99999}]}, "hosts[0].port: 99999 is not 1-65535"),
        ({"hosts": [{"host": "10.0.0.1", "colour": "blue"}]}, "hosts[0]: unknown key 'colour'"),
        ({"hosts": ["10.0.0.1", "10.0.0.2:99999"]}, "hosts[1]: port '99999' is not 1-65535"),
        ({"hosts": ["@127.0.0.1"]}, "hosts[0]: '@127.0.0.1' is not a host name or IP address"),
        ({"hosts": "[]"}, "field hosts is empty"),
        ({"hosts": ["10.0.0.1"], "insecure_accept_unknown_host_keys": "true"}, "field insecure_accept_unknown_host_keys"),
        ({"local_nodes": "2"}, "field local_nodes"),
        ({"home": ""}, "field 'home' is empty"),
        ({"storage_connection_string": ""}, "field 'storage_connection_string' is empty"),
    ],
)
def test_malformed_connections_are_refused_naming_the_field(extras: dict, named: str) -> None:
    with pytest.raises(BatchAIError) as raised:
        connection_config(extras, "connection batchai_default")
    assert raised.value.code == "InvalidConnection"
    assert named in raised.value.message and len(raised.value.message) < 300, raised.value.message


def test_hosts_are_accepted_as_text_json_text_or_objects() -> None:
    as_text = connection_config({"hosts": "alice@10.0.0.1:2222, node-2.lan\n[::1]:22"}, "c")
    assert [HostSpec.parse(h).display for h in as_text.hosts] == ["10.0.0.1:2222", "node-2.lan:22", "::1:22"]
    as_json = connection_config({"hosts": '["10.0.0.1", {"host": "10.0.0.2", "port": 2200, "gpus": 4, "labels": ["a100"]}]'}, "c")
    assert HostSpec.parse(as_json.hosts[1]) == HostSpec("10.0.0.2", 2200, gpus=4, labels=("a100",))


def test_a_storage_key_that_is_not_base64_is_refused_without_showing_it(tmp_path) -> None:
    config = connection_config({"home": str(tmp_path), "storage_account": "acct", "storage_account_key": "not-base64!"}, "c")
    with pytest.raises(BatchAIError, match="storage_account_key is not base64") as raised:
        service_from_config(config)
    assert "not-base64!" not in str(raised.value)
    broken = "DefaultEndpointsProtocol=https;AccountName=acct;AccountKey=not-base64!"
    with pytest.raises(BatchAIError, match="AccountKey of storage_connection_string is not base64"):
        service_from_config(connection_config({"storage_connection_string": broken}, "c"))


def test_empty_form_fields_of_an_airflow_connection_mean_unset(tmp_path) -> None:
    made_by_airflow = {"home": str(tmp_path), "storage_connection_string": "", "ssh_user": ""}
    assert connection_config(made_by_airflow, "connection batchai_default", from_airflow=True).storage_connection_string is None
    exported = {"conn_type": "batchai", "extra": made_by_airflow}  # `airflow connections export`, AIRFLOW_CONN_… JSON
    assert connection_config(exported, "--connection").ssh_user is None
    with pytest.raises(BatchAIError, match="storage_connection_string' is empty"):
        connection_config(made_by_airflow, "--connection")  # written by hand: say so rather than guess


def test_airflow_uri_connections_carry_text_and_are_read_as_airflow_would(tmp_path) -> None:
    """``batchai://?local_nodes=4&cluster_ssh_keys=false``: every extra of the URI form is text."""
    config = connection_config({"local_nodes": "4", "cluster_ssh_keys": "false", "home": str(tmp_path)}, "c", from_airflow=True)
    assert config.local_nodes == 4 and config.cluster_ssh_keys is False


def test_an_account_key_pasted_with_a_trailing_newline_still_works(tmp_path) -> None:
    from airflow_batchai.data.credentials import StorageCredential

    key = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
    assert StorageCredential.parse(account="a", account_key=key + "\n").account_key == key


def test_a_connection_that_is_neither_json_nor_a_file_is_not_echoed() -> None:
    from airflow_batchai.config import parse_connection_text

    with pytest.raises(BatchAIError, match="neither JSON text nor the name of a file") as raised:
        parse_connection_text("DefaultEndpointsProtocol=https;AccountName=a;AccountKey=c2VjcmV0", "--connection")
    assert "c2VjcmV0" not in str(raised.value)
