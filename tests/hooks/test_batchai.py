"""The hook builds the Service from a `batchai` connection, or the embedded default without one."""

from __future__ import annotations

import json
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import AIRFLOW

pytest.importorskip("airflow")

HOOK_PROBE = """
import json
from airflow_batchai.hooks.batchai import BatchAIHook
hook = BatchAIHook()
ok, message = hook.test_connection()
try:
    nodes = [node_id for node_id, *_ in hook.service.pool.inventory()]
    records = hook.service.store.list("")
    home = str(hook.service.store.root)
except Exception as error:
    nodes, records, home = None, None, f"{type(error).__name__}: {error}"
print(json.dumps({"ok": ok, "message": message, "nodes": nodes, "home": home, "records": records}))
"""


def probe(env: dict[str, str]) -> dict:
    result = subprocess.run(
        [str(Path(AIRFLOW).with_name("python")), "-c", HOOK_PROBE], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_without_a_connection_the_hook_uses_the_embedded_default(airflow_env: dict[str, str], home: Path) -> None:
    found = probe({**airflow_env, "BATCHAI_HOME": str(home)})
    assert found["ok"] and "2 node(s) answer" in found["message"]
    assert found["nodes"] == ["local-0", "local-1"] and found["home"] == str(home / "control")
    assert found["records"] == [] and not home.exists(), "testing a connection writes nothing"


def test_connection_extras_choose_the_home_and_the_pool_size(airflow_env: dict[str, str], tmp_path: Path) -> None:
    connection = json.dumps({"conn_type": "batchai", "extra": {"home": str(tmp_path / "elsewhere"), "local_nodes": 3}})
    found = probe({**airflow_env, "AIRFLOW_CONN_BATCHAI_DEFAULT": connection})
    assert found["ok"] and found["nodes"] == ["local-0", "local-1", "local-2"]
    assert found["home"] == str(tmp_path / "elsewhere" / "control")


def test_an_azure_storage_connection_is_checked_and_its_key_never_shown(airflow_env: dict[str, str], tmp_path: Path, azurite: Any) -> None:
    good = {"storage_connection_string": azurite.connection_string, "control_container": "hook-check", "home": str(tmp_path)}
    found = probe({**airflow_env, "AIRFLOW_CONN_BATCHAI_DEFAULT": json.dumps({"conn_type": "batchai", "extra": good})})
    assert found["ok"] and "2 node(s) answer" in found["message"] and "devstoreaccount1" in found["message"], found
    wrong_key = "QWNjb3VudEtleU5vdFRvQmVTaG93bg=="
    bad = {"storage_account": "devstoreaccount1", "storage_account_key": wrong_key, "storage_blob_endpoint": azurite.endpoint}
    found = probe(
        {**airflow_env, "AIRFLOW_CONN_BATCHAI_DEFAULT": json.dumps({"conn_type": "batchai", "extra": {**bad, "home": str(tmp_path)}})}
    )
    assert not found["ok"] and "ControlStoreUnavailable" in found["message"] and "devstoreaccount1" in found["message"], found
    assert wrong_key not in json.dumps(found)


def test_ssh_hosts_in_the_connection_are_checked_one_by_one(airflow_env: dict[str, str], tmp_path: Path, ssh_hosts: Any) -> None:
    with socket.socket() as probe_socket:
        probe_socket.bind(("127.0.0.1", 0))
        closed_port = probe_socket.getsockname()[1]
    extra = {
        "hosts": [h.entry for h in ssh_hosts.hosts[:2]],
        "ssh_key_file": str(ssh_hosts.client_key),
        "known_hosts": str(ssh_hosts.known_hosts),
        "node_root": str(tmp_path / "nodes"),
        "home": str(tmp_path / "home"),
    }
    found = probe({**airflow_env, "AIRFLOW_CONN_BATCHAI_DEFAULT": json.dumps({"conn_type": "batchai", "extra": extra})})
    assert found["ok"] and "2 node(s) answer" in found["message"], found
    extra["hosts"] = [ssh_hosts.hosts[0].entry, f"root@127.0.0.1:{closed_port}"]
    found = probe({**airflow_env, "AIRFLOW_CONN_BATCHAI_DEFAULT": json.dumps({"conn_type": "batchai", "extra": extra})})
    assert not found["ok"] and f"unreachable nodes: 127.0.0.1-{closed_port} (127.0.0.1)" in found["message"]
    assert found["records"] == [], "no 'free' pool node is left behind by a test"
    assert ssh_hosts.hosts[0].address not in found["message"].split("unreachable nodes:")[1]
    extra["node_root"] = "relative/nodes"
    found = probe({**airflow_env, "AIRFLOW_CONN_BATCHAI_DEFAULT": json.dumps({"conn_type": "batchai", "extra": extra})})
    assert not found["ok"] and found["message"].startswith("InvalidConnection: connection batchai_default: field node_root"), found


def test_airflow_lists_the_provider_and_accepts_a_batchai_connection(airflow_env: dict[str, str], tmp_path: Path) -> None:
    providers = subprocess.run([AIRFLOW, "providers", "list", "-o", "json"], env=airflow_env, capture_output=True, text=True, timeout=120)
    assert any(p["package_name"] == "airflow-provider-batchai" for p in json.loads(providers.stdout))
    extra = json.dumps({"home": str(tmp_path / "h"), "local_nodes": "2"})
    added = subprocess.run(
        [AIRFLOW, "connections", "add", "batchai_cli_test", "--conn-type", "batchai", "--conn-extra", extra],
        env=airflow_env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert added.returncode == 0, added.stderr
    shown = subprocess.run(
        [AIRFLOW, "connections", "get", "batchai_cli_test", "-o", "json"], env=airflow_env, capture_output=True, text=True, timeout=120
    )
    assert json.loads(shown.stdout)[0]["conn_type"] == "batchai"


def test_a_task_gives_control_back_only_once_its_background_passes_have_ended(tmp_path: Path) -> None:
    """Airflow ends a task's process with os._exit after execute returns, raises, defers or reschedules: a
    launching pass still running then would die mid-way (its job waits launch_timeout_s to start again)."""
    from airflow_batchai.hooks.batchai import BatchAIHook, settles
    from airflow_batchai.service import Service

    hook = BatchAIHook()
    hook.__dict__["service"] = service = Service.embedded(tmp_path / "home", nodes=1)  # what the cached property holds
    ended: list[tuple[str, str]] = []

    def slow_pass(ref: tuple[str, str], urgent: bool = False) -> bool:
        time.sleep(0.3)
        ended.append(ref)
        return True

    service.passes.maybe_pass = slow_pass  # type: ignore[method-assign]

    class Task:
        def __init__(self) -> None:
            self.hook = hook

        @settles
        def execute(self, defer: bool) -> str:
            service.passes.kick("default", "c", urgent=True)  # a submit's launching pass, in the background
            if defer:
                raise RuntimeError("TaskDeferred")  # what self.defer() raises
            return "submitted"

    assert Task().execute(False) == "submitted" and ended == [("default", "c")]
    with pytest.raises(RuntimeError, match="TaskDeferred"):
        Task().execute(True)
    assert ended == [("default", "c")] * 2
    BatchAIHook().settle()  # a hook that made no Service has nothing to wait for


def batchai_connection(monkeypatch: pytest.MonkeyPatch, conn_id: str, extra: dict[str, Any]) -> None:
    """A connection as Airflow hands it to the hook (from the environment, as the api-server's Test route does)."""
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps({"conn_type": "batchai", "extra": extra}))


def test_a_test_under_airflows_transient_id_names_the_connection_the_user_clicked(monkeypatch: pytest.MonkeyPatch) -> None:
    """Airflow's Test route copies the connection under a random id; the api-server middleware keeps the real one."""
    from airflow_batchai.hooks.batchai import BatchAIHook
    from airflow_batchai.hooks.connection_test import tested_connection_id

    batchai_connection(monkeypatch, "qzrandomid", {"hosts": "gpu-1\nuser@gpu-2:notaport"})
    token = tested_connection_id.set("my_gpus")
    try:
        ok, message = BatchAIHook("qzrandomid").test_connection()
    finally:
        tested_connection_id.reset(token)
    assert not ok and message.startswith("InvalidConnection: connection my_gpus: field hosts[1]: 'user@gpu-2:notaport'"), message
    assert "qzrandomid" not in message
    ok, message = BatchAIHook("qzrandomid").test_connection()
    assert "connection qzrandomid: field hosts[1]" in message, "outside a Test request the hook names its own id"


def test_testing_the_embedded_default_checks_that_its_home_can_be_made(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from airflow_batchai.hooks.batchai import BatchAIHook

    a_file = tmp_path / "a-file"
    a_file.write_text("")
    batchai_connection(monkeypatch, "batchai_in_a_file", {"home": str(a_file / "batchai"), "local_nodes": 1})
    ok, message = BatchAIHook("batchai_in_a_file").test_connection()
    assert not ok and message == f"InvalidConnection: connection batchai_in_a_file: field home (or $BATCHAI_HOME): {a_file} is not a folder"
    batchai_connection(monkeypatch, "batchai_fine", {"home": str(tmp_path / "new" / "home"), "local_nodes": 1})
    ok, message = BatchAIHook("batchai_fine").test_connection()
    assert ok and "1 node(s) answer" in message, message
    assert not (tmp_path / "new").exists(), "a test makes nothing"


def test_the_nulls_and_empty_texts_the_form_saves_change_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    """Airflow 3.3's form saves every field of the type, null unless typed in: its edit form shows only
    the fields the stored extras name, so they stay, and the hook reads them as "not set"."""
    from airflow_batchai.hooks.batchai import BatchAIHook
    from airflow_batchai.provider_info import get_provider_info

    fields = get_provider_info()["connection-types"][0]["conn-fields"]
    typed = {"hosts": "gpu-1\nuser@gpu-2:2222", "ssh_user": "batchai"}
    batchai_connection(monkeypatch, "batchai_typed", typed)
    batchai_connection(monkeypatch, "batchai_from_the_form", {**dict.fromkeys(fields), "node_root": "", **typed})
    assert BatchAIHook("batchai_from_the_form").config == BatchAIHook("batchai_typed").config


def test_the_hosts_text_takes_user_host_port_and_host_objects_and_slurm_takes_a_partition_name(monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow_batchai.hooks.batchai import BatchAIHook

    hosts = 'gpu-1\nuser@gpu-2:2222, gpu-3\n{"host": "gpu-4", "port": 2200, "user": "batchai", "gpus": 4, "labels": ["a100"]}'
    batchai_connection(monkeypatch, "batchai_hosts", {"hosts": hosts})
    assert BatchAIHook("batchai_hosts").config.hosts == [
        "gpu-1",
        "user@gpu-2:2222",
        "gpu-3",
        {"host": "gpu-4", "port": 2200, "user": "batchai", "gpus": 4, "labels": ["a100"]},
    ]
    batchai_connection(monkeypatch, "batchai_broken_object", {"hosts": 'gpu-1\n{"host": "gpu-4", "gpus": 4'})
    ok, message = BatchAIHook("batchai_broken_object").test_connection()
    assert not ok and "field hosts[1]: a line starting with '{' must be one JSON object" in message
    batchai_connection(monkeypatch, "batchai_slurm_name", {"slurm": "gpu"})
    batchai_connection(monkeypatch, "batchai_slurm_json", {"slurm": '{"partition": "gpu"}'})
    assert BatchAIHook("batchai_slurm_name").config == BatchAIHook("batchai_slurm_json").config
    assert BatchAIHook("batchai_slurm_name").config.slurm.partition == "gpu"  # type: ignore[union-attr]
