"""ARM's conventions without a server: errors, pages, operation tokens."""

from __future__ import annotations

import pytest

from airflow_batchai.errors import BatchAIError
from airflow_batchai.restapi.arm import ArmError, check_api_version, from_batchai, page, skip_token


def test_our_errors_get_arm_statuses_and_a_missing_resource_is_resource_not_found() -> None:
    missing = from_batchai(BatchAIError("JobNotFound", "The specified job j is not found", "j"), "Microsoft.BatchAI/workspaces/w", "rg")
    assert (missing.status, missing.code) == (404, "ResourceNotFound")
    assert "'Microsoft.BatchAI/workspaces/w' under resource group 'rg'" in missing.message
    assert from_batchai(BatchAIError("JobAlreadyExists", "exists", "j")).status == 409
    assert from_batchai(BatchAIError("InsufficientNodes", "too big", "nodeCount")).body() == {
        "error": {"code": "InsufficientNodes", "message": "too big", "target": "nodeCount"}
    }
    assert from_batchai(BatchAIError("StorageUnavailable", "down")).status == 503
    assert from_batchai(BatchAIError("OutputDirectoryNotFound", "no such id", "MODEL")).code == "OutputDirectoryNotFound"


def test_only_the_2018_05_01_api_version_is_served() -> None:
    check_api_version("2018-05-01")
    for version, code in ((None, "MissingApiVersionParameter"), ("2018-03-01", "InvalidApiVersionParameter")):
        with pytest.raises(ArmError) as refused:
            check_api_version(version)
        assert refused.value.status == 400 and refused.value.code == code


def test_a_page_links_to_the_next_with_the_query_it_was_asked_with() -> None:
    items = [{"name": f"n{i}"} for i in range(5)]
    first = page(items, "http://h/x", {"api-version": "2018-05-01", "maxresults": "2"}, 2, 0)
    assert [i["name"] for i in first["value"]] == ["n0", "n1"]
    assert first["nextLink"] == "http://h/x?api-version=2018-05-01&maxresults=2&$skiptoken=2"
    last = page(items, "http://h/x", {}, 2, skip_token("4"))
    assert [i["name"] for i in last["value"]] == ["n4"] and "nextLink" not in last
    for bad in (0, 1001):
        with pytest.raises(ArmError):
            page(items, "http://h/x", {}, bad, 0)
    with pytest.raises(ArmError):
        skip_token("../etc")
