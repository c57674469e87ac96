"""Malformed connections are refused field by field, before anything is looked up or dialled.

Every case runs with name lookups and connections made impossible in this process (they raise
and are recorded): a refusal that needed the network would show up as a dial, not a pass.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from airflow_batchai.config import connection_config
from airflow_batchai.errors import BatchAIError

KEY_SECRET = "c2VjcmV0LWtleS1ieXRlcy1uZXZlci1zaG93bg=="


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Any]]:
    dialled: list[Any] = []

    def refuse(*args: Any, **kwargs: Any) -> Any:
        dialled.append(args)
        raise OSError("the network is cut in this test")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket, "gethostbyname", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    yield dialled
    assert dialled == [], "a malformed connection was refused only after dialling"


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("keys")
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(folder / "id")], check=True)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "pass-phrase", "-f", str(folder / "locked")], check=True)
    (folder / "garbage").write_text("this is not a key\n")
    (folder / "binary").write_bytes(b"\xff\xfe\x00\x01")
    return {
        "private": folder / "id",
        "public": folder / "id.pub",
        "locked": folder / "locked",
        "garbage": folder / "garbage",
        "binary": folder / "binary",
    }


def bad_connections(keys: dict[str, Path]) -> list[tuple[dict[str, Any], str]]:
    public_text = keys["public"].read_text()
    return [
        ({"ssh_private_key": public_text}, "ssh_private_key"),
        ({"ssh_private_key": "not a key at all"}, "ssh_private_key"),
        ({"ssh_private_key": keys["locked"].read_text()}, "ssh_key_passphrase"),
        ({"ssh_key_file": str(keys["public"])}, "ssh_key_file"),
        ({"ssh_key_file": str(keys["garbage"])}, "ssh_key_file"),
        ({"ssh_key_file": str(keys["binary"])}, "ssh_key_file"),
        ({"ssh_key_file": "/nonexistent/id_ed25519"}, "ssh_key_file"),
        ({"ssh_key_file": str(keys["locked"]), "ssh_key_passphrase": "wrong"}, "ssh_key_file"),
        ({"hosts": [{"host": "10.0.0.1", "key_file": "/nonexistent/key"}]}, "hosts[0].key_file"),
        ({"known_hosts": "/nonexistent/known_hosts"}, "known_hosts"),
        ({"host_key_fingerprints": {"10.0.0.1": "MD5:12:34:56:78:9a:bc:de:f0:12:34:56:78:9a:bc:de:f0"}}, "host_key_fingerprints"),
        ({"host_key_fingerprints": {"10.0.0.1": "SHA256:short"}}, "host_key_fingerprints"),
        ({"host_key_fingerprints": {"bad host!": "SHA256:" + "A" * 43}}, "host_key_fingerprints"),
        ({"node_root": "relative/root"}, "node_root"),
        ({"node_root": "/var/lib/$(reboot)"}, "node_root"),
        ({"node_root": "/var/lib/batch ai"}, "node_root"),
        ({"node_root": "/var/../etc"}, "node_root"),
        ({"node_root": "/"}, "node_root"),
        ({"node_python": "python3; rm -rf /"}, "node_python"),
        ({"node_python": "python3 -c 'x'"}, "node_python"),
        ({"node_python": "-V"}, "node_python"),
        ({"hosts": [{"host": "10.0.0.1", "root": "/srv/`id`"}]}, "hosts[0].root"),
        ({"authorized_keys_file": "~/.ssh/keys;id"}, "authorized_keys_file"),
        ({"shared_folder_root": "nfs/share"}, "shared_folder_root"),
        ({"subscription_id": "sub/../other"}, "subscription_id"),
        ({"subscription_id": ".."}, "subscription_id"),
        ({"resource_group": "rg/x"}, "resource_group"),
        ({"resource_group": "rg."}, "resource_group"),
        ({"resource_group": "rg\r\nx"}, "resource_group"),
        ({"storage_account": "acct", "storage_blob_endpoint": "ftp://acct.example.com"}, "storage_blob_endpoint"),
        ({"storage_account": "acct", "storage_blob_endpoint": "http://acct example.com"}, "storage_blob_endpoint"),
        ({"storage_account": "acct", "storage_blob_endpoint": "http://127.0.0.1:99999/acct"}, "storage_blob_endpoint"),
        ({"storage_account": "acct", "storage_blob_endpoint": "http://[::1/acct"}, "storage_blob_endpoint"),
        ({"storage_account": "acct", "storage_file_endpoint": "https://bad_host!/"}, "storage_file_endpoint"),
        (
            {"storage_account": "acct", "storage_blob_endpoint": f"https://acct.example.com/?sv=2021&sig={KEY_SECRET}"},
            "storage_blob_endpoint",
        ),
        ({"storage_account": "Not/An/Account"}, "storage_account"),
        (
            {"storage_connection_string": f"AccountName=acct;AccountKey={KEY_SECRET};BlobEndpoint=http://127.0.0.1:99999/acct"},
            "storage_connection_string",
        ),
        (
            {"storage_connection_string": f"DefaultEndpointsProtocol=gopher;AccountName=acct;AccountKey={KEY_SECRET}"},
            "storage_connection_string",
        ),
        ({"home": "relative/home"}, "home"),
        ({"job_user": "root; id"}, "job_user"),
        ({"job_env_allow": ["*"]}, "job_env_allow[0]"),
        ({"job_env_allow": ["AIRFLOW__API_AUTH__JWT_SECRET"]}, "job_env_allow[0]"),
        ({"job_env_allow": ["A*"]}, "job_env_allow[0]"),
        ({"job_env_allow": ["OK_NAME", "AZURE_*"]}, "job_env_allow[1]"),
    ]


def test_each_malformed_field_is_refused_by_name_without_dialling(no_network: list[Any], keys: dict[str, Path]) -> None:
    for extras, field in bad_connections(keys):
        with pytest.raises(BatchAIError) as refused:
            connection_config(extras, "connection team_gpus")
        error = refused.value
        assert error.code == "InvalidConnection" and (error.target or "").startswith(field), (extras, error)
        assert error.message.startswith(f"connection team_gpus: field {field}"), (extras, error.message)
        assert "\n" not in error.message and KEY_SECRET not in error.message and "pass-phrase" not in error.message


def test_good_values_of_the_same_fields_are_taken(no_network: list[Any], keys: dict[str, Path]) -> None:
    config = connection_config(
        {
            "ssh_key_file": str(keys["private"]),
            "host_key_fingerprints": {"10.0.0.1:2222": "SHA256:" + "A" * 42 + "0"},
            "node_root": "/srv/batch-ai_1.0",
            "node_python": "/opt/py3.11/bin/python3",
            "authorized_keys_file": "~/.ssh/authorized_keys",
            "subscription_id": "00000000-1111-2222-3333-444444444444",
            "resource_group": "team.rg-(gpu)_1",
            "storage_account": "acct1",
            "storage_blob_endpoint": "http://[::1]:10000/acct1",
            "job_user": "batchai-jobs",
            "job_env_allow": ["HTTPS_PROXY", "WANDB_*"],
        },
        "connection team_gpus",
    )
    assert config.node_root == "/srv/batch-ai_1.0" and config.job_env_allow == ["HTTPS_PROXY", "WANDB_*"]
    from_form = connection_config({"job_env_allow": "HTTPS_PROXY\nWANDB_*, HF_HOME"}, "c", from_airflow=True)
    assert from_form.job_env_allow == ["HTTPS_PROXY", "WANDB_*", "HF_HOME"]
    locked = connection_config({"ssh_key_file": str(keys["locked"]), "ssh_key_passphrase": "pass-phrase"}, "c")
    assert locked.ssh_key_file == str(keys["locked"])


def test_a_relative_home_from_the_command_line_or_environment_is_made_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Agents run with / as their folder: a relative home would leave every job queued forever."""
    from airflow_batchai.service import Service, default_home

    monkeypatch.chdir(tmp_path)
    assert Service.embedded("rel/home").store.root == tmp_path / "rel" / "home" / "control"  # type: ignore[attr-defined]
    monkeypatch.setenv("BATCHAI_HOME", "env-home")
    assert default_home() == tmp_path / "env-home"


@pytest.mark.skipif(shutil.which("unshare") is None, reason="unshare (util-linux) makes the empty network namespace")
def test_the_command_refuses_bad_connections_in_an_empty_network_namespace(tmp_path: Path, keys: dict[str, Path]) -> None:
    """The real command, in a network namespace with nothing in it: each refusal is exit 2 and one
    line naming the field, and it comes before any lookup (there is nothing to look up with)."""
    probe = subprocess.run(["unshare", "--net", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"cannot make a network namespace here: {probe.stderr.decode().strip()}")
    cases = [
        ({"hosts": ["gpu-1.example.com"], "ssh_private_key": keys["public"].read_text()}, "ssh_private_key"),
        ({"hosts": ["gpu-1.example.com"], "host_key_fingerprints": {"gpu-1.example.com": "MD5:aa:bb"}}, "host_key_fingerprints"),
        ({"hosts": ["gpu-1.example.com"], "node_root": "/srv/$(id)"}, "node_root"),
        ({"storage_account": "acct", "storage_blob_endpoint": "https://acct.example.com:99999"}, "storage_blob_endpoint"),
        (
            {"storage_connection_string": f"AccountName=acct;AccountKey={KEY_SECRET};BlobEndpoint=http://[::1/x"},
            "storage_connection_string",
        ),
    ]
    for extras, field in cases:
        done = subprocess.run(
            ["unshare", "--net", sys.executable, "-m", "airflow_batchai.cli", "cluster", "list", "--home", str(tmp_path / "home")],
            env={**os.environ, "BATCHAI_CONNECTION": json.dumps(extras)},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 2, (extras, done.stdout, done.stderr)
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and field in lines[0] and "Traceback" not in done.stderr, (field, done.stderr)
        assert KEY_SECRET not in done.stderr
    assert not (tmp_path / "home").exists(), "a refused connection wrote nothing"
