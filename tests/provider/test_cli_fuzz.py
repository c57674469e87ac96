"""Seeded fuzzing of what users hand the CLI: mutated recipe job files and malformed connections.

Every outcome must be clean: exit 0, or exit 2 with exactly one short ``error:`` line; never a
traceback, never a line that echoes a megabyte of input. The mutations are the ones fault
finding turned up (huge and boolean integers, deep nesting, bytes that are not UTF-8, names
the kernel refuses, oversized paths and command lines) plus random ones over every JSON path
of the 17 official recipes. ``cli.main`` runs in-process so ~150 cases take seconds.
"""

from __future__ import annotations

import copy
import json
import random
from pathlib import Path
from typing import Any

import pytest

from airflow_batchai import cli
from tests.provider.test_spec import RECIPES

SEED = 20261202
SPEC_MUTATIONS = 150
MAX_LINE = 300

HUGE = "x" * 5_000_000
VALUES: list[Any] = [
    10**9,
    10**400,
    True,
    False,
    -1,
    0,
    2.5,
    "",
    " ",
    "-1",
    "a" * 100_000,
    HUGE,
    None,
    [],
    {},
    [1, [2, [3]]],
    "\x00",
    "$(rm -rf /)",
    "../../etc/passwd",
    "/abs/path",
    "P99999999D",
    "99999999.00:00:00",
    "1BAD=X",
    "é" * 10,
]


def _paths(document: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [path]
    if isinstance(document, dict):
        for key, value in document.items():
            found += _paths(value, (*path, key))
    elif isinstance(document, list):
        for index, value in enumerate(document):
            found += _paths(value, (*path, index))
    return found


def _parent(document: Any, path: tuple[Any, ...]) -> Any:
    for part in path[:-1]:
        document = document[part]
    return document


def _mutate(document: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    document = copy.deepcopy(document)
    path = rng.choice([p for p in _paths(document) if p])
    parent, last = _parent(document, path), path[-1]
    action = rng.choice(["replace", "replace", "replace", "delete", "add", "rename"])
    if action == "replace":
        parent[last] = rng.choice(VALUES)
    elif action == "delete":
        del parent[last]
    elif action == "add" and isinstance(parent, dict):
        parent[rng.choice(["location", "tags", "bogus", "name", "value"])] = rng.choice(VALUES)
    elif action == "rename" and isinstance(parent, dict):
        parent[str(last).upper()] = parent.pop(last)
    return document


def _deep(depth: int) -> str:
    return '{"properties": ' + '{"a": ' * depth + "1" + "}" * depth + "}"


def _spec_files() -> list[bytes]:
    rng = random.Random(SEED)
    recipes = [json.loads(path.read_text()) for path in RECIPES]
    cases = [json.dumps(_mutate(rng.choice(recipes), rng)).encode() for _ in range(SPEC_MUTATIONS)]
    base = RECIPES[0].read_text()
    cases += [
        _deep(1_000).encode(),
        _deep(100_000).encode(),
        ("[" * 5000 + "]" * 5000).encode(),
        b"\xff\xfe" + base.encode("utf-16-le"),
        base.encode("utf-16"),
        b"\xef\xbb\xbf" + base.encode(),  # a UTF-8 BOM is fine
        base.encode()[:-40],
        base.encode().replace(b"{", b"{\xc3\x28", 1),
        b"",
        b"null",
        b'{"properties": {"nodeCount": ' + b"9" * 5000 + b"}}",
        ('{"properties": ' + '{"' + "k" * 40 + '": ' * 31 + "1" + "}" * 32).encode(),  # long keys, deep: the path is cut
        json.dumps({"properties": {"bad\nkey" * 20: 1, "nodeCount": 1}}).encode(),  # a key that would break the line
    ]
    return cases


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = cli.main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _assert_clean(code: int, out: str, err: str, case: str) -> None:
    assert code in (0, cli.EXIT_USAGE), (case[:200], code, err[:500])
    if code == 0:
        assert err == "", (case[:200], err[:500])
        return
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), (case[:200], err[:500])
    assert len(lines[0]) < MAX_LINE, (case[:200], lines[0][:500])


@pytest.mark.parametrize("options", [["-t", "5000"], ["--min", "0", "--max", "100000"], ["-t", "-1"]])
def test_cluster_sizes_given_as_options_are_refused_in_one_line(
    options: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = _run(["cluster", "create", "-n", "c", "--home", str(tmp_path), *options], capsys)
    _assert_clean(code, out, err, " ".join(options))
    assert code == cli.EXIT_USAGE and "InvalidSpec" in err


def test_mutated_recipes_are_validated_or_refused_in_one_short_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    outcomes = {0: 0, cli.EXIT_USAGE: 0}
    for index, content in enumerate(_spec_files()):
        job = tmp_path / f"job-{index}.json"
        job.write_bytes(content)
        code, out, err = _run(["job", "validate", "-f", str(job)], capsys)
        _assert_clean(code, out, err, content[:200].decode("utf-8", "replace"))
        outcomes[code] += 1
    assert outcomes[0] > 10 and outcomes[cli.EXIT_USAGE] > 50, outcomes  # the fuzzing reaches both sides


HOST = "127.0.0.1:2222"
CONNECTIONS: list[Any] = [
    {"hosts": 5},
    {"hosts": True},
    {"hosts": "[]"},
    {"hosts": []},
    {"hosts": [5]},
    {"hosts": [None]},
    {"hosts": [{"host": "127.0.0.1", "port": "x"}]},
    {"hosts": [{"port": 22}]},
    {"hosts": [{"host": "127.0.0.1", "colour": "blue"}]},
    {"hosts": [{"host": "127.0.0.1", "port": 99999}]},
    {"hosts": [{"host": "127.0.0.1", "port": True}]},
    {"hosts": [{"host": "127.0.0.1", "gpus": "2"}]},
    {"hosts": [{"host": "127.0.0.1", "labels": "gpu"}]},
    {"hosts": ["127.0.0.1:99999"]},
    {"hosts": ["127.0.0.1:0"]},
    {"hosts": ["@127.0.0.1"]},
    {"hosts": ["user@"]},
    {"hosts": ["bad host name"]},
    {"hosts": ["-oProxyCommand=touch"]},
    {"hosts": ["h" * 300]},
    {"hosts": [HOST], "insecure_accept_unknown_host_keys": "yes"},
    {"hosts": [HOST], "cluster_ssh_keys": 1},
    {"local_nodes": "2"},
    {"local_nodes": 0},
    {"local_nodes": 10**400},
    {"home": ""},
    {"storage_connection_string": ""},
    {"storage_account": "acct", "storage_account_key": "not base64 at all!"},
    {"storage_account_key": "a2V5"},
    {"nodes": 3},
    {"x" * 100_000: 1},
    [],
    "[]",
    5,
    {"conn_type": "batchai", "extra": "{not json"},
    {"volume_mode": "fast"},
    {"host_key_fingerprints": ["SHA256:x"]},
]


@pytest.mark.parametrize("connection", CONNECTIONS, ids=[f"connection-{i}" for i in range(len(CONNECTIONS))])
def test_malformed_connections_are_refused_in_one_line_naming_the_field(
    connection: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = _run(["cluster", "list", "--home", str(tmp_path), "--connection", json.dumps(connection)], capsys)
    _assert_clean(code, out, err, json.dumps(connection)[:200])
    assert code == cli.EXIT_USAGE, (connection, out[:300])
    assert "InvalidConnection" in err or "InvalidStorageCredential" in err, err
    assert "not base64 at all" not in err  # a key, even a broken one, is not echoed
