"""Loading job.json and cluster.json files as the az CLI did, and refusing bad ones by JSON path."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest

from airflow_batchai.errors import InvalidSpec
from airflow_batchai.spec import format_duration, load_cluster_spec, load_job_spec, parse_duration, unfilled_placeholders
from tests.conftest import DATA, SHARED_REFERENCE

RECIPES = sorted((DATA / "recipes").glob("*.json"))
SHARED_RECIPES = SHARED_REFERENCE / "batchai-recipes"


def test_vendored_recipes_are_the_reference_ones() -> None:
    if not SHARED_RECIPES.is_dir():
        pytest.skip("../shared/reference is not beside this checkout")
    shared = {p.name: p.read_bytes() for p in SHARED_RECIPES.glob("*.json")}
    assert shared == {p.name: p.read_bytes() for p in RECIPES}


@pytest.mark.parametrize("path", RECIPES, ids=[p.stem for p in RECIPES])
def test_every_official_recipe_loads_unchanged(path: Path) -> None:
    spec = load_job_spec(path, cluster="nc6", storage_account_name="mystorage", environ={})
    raw = json.loads(path.read_text())["properties"]
    assert spec.node_count == raw["nodeCount"]
    assert spec.cluster is not None and spec.cluster.id == "nc6"
    assert spec.to_json()["stdOutErrPathPrefix"] == raw["stdOutErrPathPrefix"]
    assert not unfilled_placeholders(spec)
    for share in (spec.mount_volumes.azure_file_shares if spec.mount_volumes else None) or []:
        assert share.account_name == "mystorage"
        assert share.azure_file_url.startswith("https://mystorage.file.core.windows.net/")


def test_seed_quickstart_job_is_the_one_in_the_seed_document() -> None:
    seed = SHARED_REFERENCE / "seeds" / "002_e3a63939d89ffc91.txt"
    if not seed.exists():
        pytest.skip("../shared/reference is not beside this checkout")
    assert (DATA / "seed_002_quickstart_job.json").read_text() in seed.read_text()


def test_seed_quickstart_job_loads_and_fills_its_own_placeholder() -> None:
    path = DATA / "seed_002_quickstart_job.json"
    unfilled = load_job_spec(path, environ={})
    assert unfilled_placeholders(unfilled) == [
        "mountVolumes.azureFileShares[0].accountName",
        "mountVolumes.azureFileShares[1].accountName",
        "mountVolumes.azureBlobFileSystems[0].accountName",
    ]
    spec = load_job_spec(path, cluster="nc6", storage_account_name="acct", environ={})
    assert spec.tool_type == "cntk"
    assert spec.cntk_settings.language_type == "Python"
    assert [s.account_name for s in spec.mount_volumes.azure_file_shares] == ["acct", "acct"]
    assert [s.share_name for s in spec.mount_volumes.azure_file_shares] == ["logs", "scripts"]
    assert spec.mount_volumes.azure_blob_file_systems[0].account_name == "acct"


def test_placeholders_come_from_environment_when_no_option_is_given() -> None:
    body = {
        "nodeCount": 1,
        "customToolkitSettings": {"commandLine": "true"},
        "stdOutErrPathPrefix": "/tmp",
        "mountVolumes": {
            "azureBlobFileSystems": [
                {
                    "accountName": "<AZURE_BATCHAI_STORAGE_ACCOUNT>",
                    "containerName": "data",
                    "relativeMountPath": "data",
                    "credentials": {"accountKey": "<AZURE_BATCHAI_STORAGE_KEY>"},
                }
            ]
        },
    }
    spec = load_job_spec(body, environ={"AZURE_BATCHAI_STORAGE_ACCOUNT": "envacct", "AZURE_BATCHAI_STORAGE_KEY": "k3y"})
    blob = spec.mount_volumes.azure_blob_file_systems[0]
    assert (blob.account_name, blob.credentials.account_key) == ("envacct", "k3y")
    option = load_job_spec(body, storage_account_name="optacct", environ={"AZURE_BATCHAI_STORAGE_ACCOUNT": "envacct"})
    assert option.mount_volumes.azure_blob_file_systems[0].account_name == "optacct"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("7.00:00:00", timedelta(days=7)),
        ("P7D", timedelta(days=7)),
        ("7 days, 0:00:00", timedelta(days=7)),
        ("1 day, 2:03:04", timedelta(days=1, hours=2, minutes=3, seconds=4)),
        ("PT1H30M", timedelta(hours=1, minutes=30)),
        ("00:00:05", timedelta(seconds=5)),
    ],
)
def test_max_wall_clock_time_accepts_every_form_batch_ai_used(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected
    assert parse_duration(format_duration(expected)) == expected


def test_max_wall_clock_time_is_echoed_in_iso_form() -> None:
    body = {"nodeCount": 1, "customToolkitSettings": {"commandLine": "true"}, "stdOutErrPathPrefix": "/x"}
    spec = load_job_spec({**body, "constraints": {"maxWallClockTime": "1.02:00:00"}}, environ={})
    assert spec.to_json()["constraints"] == {"maxWallClockTime": "P1DT2H"}
    assert spec.max_wall_clock == timedelta(days=1, hours=2)


def test_2018_03_01_fields_are_accepted() -> None:
    body = {
        "location": "eastus",
        "properties": {
            "priority": 100,
            "experimentName": "old",
            "nodeCount": 1,
            "customToolkitSettings": {"commandLine": "true"},
            "stdOutErrPathPrefix": "/x",
            "outputDirectories": [{"id": "MODEL", "pathPrefix": "/out", "type": "model", "createNew": False}],
        },
    }
    spec = load_job_spec(body, environ={})
    assert spec.effective_priority == 100
    assert spec.output_directories[0].create_new is False


BASE = {"nodeCount": 1, "customToolkitSettings": {"commandLine": "true"}, "stdOutErrPathPrefix": "/x"}


@pytest.mark.parametrize(
    ("body", "path", "words"),
    [
        ({k: v for k, v in BASE.items() if k != "customToolkitSettings"}, "properties", "exactly one toolkit"),
        ({**BASE, "pyTorchSettings": {"pythonScriptFilePath": "a.py"}}, "properties", "found pyTorchSettings, customToolkitSettings"),
        ({**BASE, "nodeCount": 0}, "properties.nodeCount", "greater than or equal to 1"),
        ({**BASE, "nodeCount": "two"}, "properties.nodeCount", "must be an integer"),
        ({**BASE, "outputDirectories": [{"id": "MY-MODEL", "pathPrefix": "/o"}]}, "properties.outputDirectories[0].id", "env var"),
        ({**BASE, "inputDirectories": [{"id": "A B", "path": "/i"}]}, "properties.inputDirectories[0].id", "env var"),
        ({**BASE, "outputDirectories": [{"id": "stdouterr", "pathPrefix": "/o"}]}, "properties.outputDirectories[0].id", "reserved"),
        (
            {**BASE, "outputDirectories": [{"id": "M", "pathPrefix": "/o", "pathSuffix": "../up"}]},
            "properties.outputDirectories[0].pathSuffix",
            "..",
        ),
        (
            {**BASE, "outputDirectories": [{"id": "M", "pathPrefix": "/o", "pathSuffix": "/abs"}]},
            "properties.outputDirectories[0].pathSuffix",
            "relative",
        ),
        (
            {**BASE, "mountVolumes": {"azureBlobFileSystems": [{"accountName": "a", "containerName": "c", "relativeMountPath": "/etc"}]}},
            "properties.mountVolumes.azureBlobFileSystems[0].relativeMountPath",
            "relative",
        ),
        (
            {
                **BASE,
                "mountVolumes": {"azureBlobFileSystems": [{"accountName": "a", "containerName": "c", "relativeMountPath": "x/../../etc"}]},
            },
            "properties.mountVolumes.azureBlobFileSystems[0].relativeMountPath",
            "..",
        ),
        (
            {
                **BASE,
                "mountVolumes": {
                    "azureFileShares": [
                        {"azureFileUrl": "https://a.file.core.windows.net/s", "relativeMountPath": "s", "fileMode": "0777,uid=0"}
                    ]
                },
            },
            "properties.mountVolumes.azureFileShares[0].fileMode",
            "permission bits",
        ),
        ({**BASE, "nodeCuont": 1}, "properties.nodeCuont", "unknown field"),
        ({**BASE, "customToolkitSettings": {"commandLine": "x", "extra": 1}}, "properties.customToolkitSettings.extra", "unknown field"),
        ({k: v for k, v in BASE.items() if k != "stdOutErrPathPrefix"}, "properties.stdOutErrPathPrefix", "required"),
        ({**BASE, "constraints": {"maxWallClockTime": "soon"}}, "properties.constraints.maxWallClockTime", "not a duration"),
        ({**BASE, "schedulingPriority": "urgent"}, "properties.schedulingPriority", "low"),
        (
            {**BASE, "pyTorchSettings": None, "customToolkitSettings": None, "cntkSettings": {"processCount": 2}},
            "properties.cntkSettings",
            "configFilePath",
        ),
    ],
)
def test_bad_job_spec_is_refused_naming_the_json_path(body: dict, path: str, words: str) -> None:
    with pytest.raises(InvalidSpec) as caught:
        load_job_spec({"properties": body}, environ={})
    assert caught.value.target == path
    assert path in str(caught.value) and words in str(caught.value)


LIMIT_CASES = [
    ({**BASE, "nodeCount": 10**9}, "properties.nodeCount", "less than or equal to 1000"),
    ({**BASE, "nodeCount": 10**400}, "properties.nodeCount", "less than or equal to 1000"),
    ({**BASE, "nodeCount": True}, "properties.nodeCount", "must be an integer, got True"),
    ({**BASE, "nodeCount": 2.0}, "properties.nodeCount", "must be an integer, got 2.0"),
    ({**BASE, "nodeCount": "two"}, "properties.nodeCount", "must be an integer, got 'two'"),
    (
        {**BASE, "customToolkitSettings": {"commandLine": "echo " + "x" * 200_000}},
        "properties.customToolkitSettings.commandLine",
        "too long",
    ),
    ({**BASE, "stdOutErrPathPrefix": "/" + "d" * 5000}, "properties.stdOutErrPathPrefix", "too long for a path"),
    ({**BASE, "environmentVariables": [{"name": "", "value": "x"}]}, "properties.environmentVariables[0].name", "not a variable name"),
    ({**BASE, "environmentVariables": [{"name": "1BAD", "value": "x"}]}, "properties.environmentVariables[0].name", "not a variable name"),
    ({**BASE, "environmentVariables": [{"name": "A=B", "value": "x"}]}, "properties.environmentVariables[0].name", "not a variable name"),
    ({**BASE, "secrets": [{"name": "TOKEN"}]}, "properties.secrets[0]", "exactly one of value and valueSecretReference"),
    ({**BASE, "secrets": [{"name": "A B", "value": "x"}]}, "properties.secrets[0].name", "not a variable name"),
    (
        {**BASE, "containerSettings": {"imageSourceRegistry": {"image": "ubuntu"}, "shmSize": "-1"}},
        "properties.containerSettings.shmSize",
        "not a size",
    ),
    (
        {**BASE, "constraints": {"maxWallClockTime": "99999999.00:00:00"}},
        "properties.constraints.maxWallClockTime",
        "past the limit of P365D",
    ),
    ({**BASE, "constraints": {"maxWallClockTime": "P9999999999D"}}, "properties.constraints.maxWallClockTime", "too long"),
    ({**BASE, "environmentVariables": [{"name": "NUL", "value": "a\x00b"}]}, "properties.environmentVariables[0].value", "NUL"),
    ({**BASE, "tags": {"t" * 600: "v"}}, "properties.tags", "names are 1-512"),
    (
        {**BASE, "customToolkitSettings": None, "horovodSettings": {"pythonScriptFilePath": "t.py", "commandLineArgs": "x" * 127_000}}
        | {"environmentVariables": [{"name": f"V{i}" + "_" * 250, "value": "1"} for i in range(10)]},
        "properties",
        "horovodSettings: the command it runs would be",
    ),
]


@pytest.mark.parametrize(("body", "path", "words"), LIMIT_CASES)
def test_values_past_the_documented_limits_are_refused_in_one_short_line(body: dict, path: str, words: str) -> None:
    with pytest.raises(InvalidSpec) as caught:
        load_job_spec({"properties": body}, environ={})
    assert caught.value.target == path
    assert words in caught.value.message and len(caught.value.message) < 300, caught.value.message


def test_a_count_rendered_from_a_template_is_read_as_the_integer_it_spells() -> None:
    assert load_job_spec({"properties": {**BASE, "nodeCount": "2"}}, environ={}).node_count == 2
    cluster = load_cluster_spec({"scaleSettings": {"manual": {"targetNodeCount": " 3 "}}}, environ={})
    assert cluster.scale_settings.manual is not None and cluster.scale_settings.manual.target_node_count == 3


def test_flags_rendered_from_a_template_are_read_and_other_values_are_not() -> None:
    directory = {"id": "M", "pathPrefix": "/o", "createNew": "True"}
    assert load_job_spec({"properties": {**BASE, "outputDirectories": [directory]}}, environ={}).output_directories[0].create_new is True
    with pytest.raises(InvalidSpec, match="must be true or false, got 1"):
        load_job_spec({"properties": {**BASE, "outputDirectories": [{**directory, "createNew": 1}]}}, environ={})


def test_largest_documented_values_are_accepted() -> None:
    body = {
        **BASE,
        "nodeCount": 1000,
        "customToolkitSettings": {"commandLine": "echo " + "x" * (128_000 - 5)},
        "stdOutErrPathPrefix": "/" + "d" * 4095,
        "constraints": {"maxWallClockTime": "365.00:00:00"},
        "containerSettings": {"imageSourceRegistry": {"image": "ubuntu"}, "shmSize": "16gb"},
        "environmentVariables": [{"name": "_OK_1", "value": "v"}],
        "secrets": [{"name": "TOKEN", "value": "s"}],
    }
    spec = load_job_spec({"properties": body}, environ={})
    assert spec.node_count == 1000 and spec.max_wall_clock == timedelta(days=365)


@pytest.mark.parametrize("depth", [40, 1_000, 100_000])
def test_nesting_past_the_limit_is_refused_without_recursing(depth: int) -> None:
    text = '{"properties": {**}}'.replace("**", '"tags": ' + '{"a": ' * depth + "1" + "}" * depth)
    with pytest.raises(InvalidSpec, match="nested more than 32 levels deep"):
        load_job_spec(text, environ={})


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (b'{"properties": {"nodeCount": 1, "x": "\xc3\x28"}}', "not UTF-8 text: byte 0xc3 at offset"),
        ('{"properties": {}}'.encode("utf-16"), "UTF-16"),
        (b'{"properties": {"nodeCount": ' + b"9" * 5000 + b"}}", "not valid JSON"),
        (b'{"properties": {"stdOutErrPathPrefix": "\\ud800"}}', "lone surrogate"),
    ],
)
def test_files_that_are_not_utf8_json_are_refused_by_name(content: bytes, words: str, tmp_path: Path) -> None:
    job = tmp_path / "job.json"
    job.write_bytes(content)
    with pytest.raises(InvalidSpec, match=words) as caught:
        load_job_spec(job, environ={})
    assert job.name in caught.value.message and len(caught.value.message) < 300


def test_a_utf8_bom_is_accepted(tmp_path: Path) -> None:
    job = tmp_path / "job.json"
    job.write_bytes(b"\xef\xbb\xbf" + json.dumps({"properties": BASE}).encode())
    assert load_job_spec(job, environ={}).node_count == 1


def test_2018_03_01_location_and_tags_are_kept_and_echoed_wrapped_or_not() -> None:
    wrapped = load_job_spec({"location": "eastus", "tags": {"team": "vision"}, "properties": BASE}, environ={})
    flat = load_job_spec({"location": "eastus", "tags": {"team": "vision"}, **BASE}, environ={})
    for spec in (wrapped, flat):
        assert spec.to_json()["location"] == "eastus" and spec.to_json()["tags"] == {"team": "vision"}
    cluster = load_cluster_spec({"location": "westeurope", "properties": {"vmSize": "STANDARD_NC6"}}, environ={})
    assert cluster.to_json()["location"] == "westeurope"


def test_text_that_is_not_json_is_refused_with_its_position(tmp_path: Path) -> None:
    broken = tmp_path / "job.json"
    broken.write_text('{"properties": {"nodeCount": 1,}}')
    with pytest.raises(InvalidSpec, match=r"job.json is not valid JSON: .* line 1 column"):
        load_job_spec(broken, environ={})
    with pytest.raises(InvalidSpec, match="must hold a JSON object"):
        load_job_spec("[1, 2]", environ={})
    with pytest.raises(InvalidSpec, match="cannot read"):
        load_job_spec(tmp_path / "missing.json", environ={})


def test_cluster_spec_with_node_setup_and_autoscale_loads() -> None:
    spec = load_cluster_spec(
        {
            "properties": {
                "vmSize": "STANDARD_NC6",
                "scaleSettings": {"autoScale": {"minimumNodeCount": 0, "maximumNodeCount": 2, "initialNodeCount": 1}},
                "nodeSetup": {
                    "setupTask": {
                        "commandLine": "echo hi",
                        "stdOutErrPathPrefix": "$AZ_BATCHAI_MOUNT_ROOT/logs",
                        "secrets": [{"name": "S", "value": "v"}],
                    },
                    "mountVolumes": {
                        "azureFileShares": [
                            {
                                "azureFileUrl": "https://<AZURE_BATCHAI_STORAGE_ACCOUNT>.file.core.windows.net/logs",
                                "relativeMountPath": "logs",
                            }
                        ]
                    },
                },
                "userAccountSettings": {"adminUserName": "me", "adminUserSshPublicKey": "ssh-rsa AAA"},
            }
        },
        storage_account_name="acct",
        environ={},
    )
    assert spec.max_node_count == 2
    assert spec.node_setup.mount_volumes.azure_file_shares[0].account_name == "acct"
    with pytest.raises(InvalidSpec, match="scaleSettings: set exactly one of manual and autoScale"):
        load_cluster_spec(
            {"scaleSettings": {"manual": {"targetNodeCount": 1}, "autoScale": {"minimumNodeCount": 0, "maximumNodeCount": 1}}}, environ={}
        )
