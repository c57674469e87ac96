"""One list of error codes: Batch AI's, ARM's and ours, and the agent's job codes among them."""

from __future__ import annotations

import ast
import json
import re

from airflow_batchai.errors import BatchAIError, ErrorCode
from airflow_batchai.transport.handle import AGENT_FILES

CODE = re.compile(r"^(?:[A-Z][a-z]+|[A-Z]{2,}(?=[A-Z][a-z]))(?:[A-Z][A-Za-z0-9]*)*$")  # JobFailed, SSHAuthenticationFailed, Conflict
JOB_ERROR_CALLS = {"JobError", "fence"}  # how the agent says why a job failed: JobError(code, message), self.fence(code, why)


def _code_text(node: ast.expr) -> bool:
    return isinstance(node, ast.Constant) and isinstance(node.value, str) and bool(CODE.match(node.value)) and not node.value.isupper()


def agent_codes() -> set[str]:
    """The codes the node agent writes into a job's status, read from its source (it cannot import ErrorCode)."""
    codes: set[str] = set()
    for source in AGENT_FILES.values():
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.Call):
                called = node.func.id if isinstance(node.func, ast.Name) else getattr(node.func, "attr", "")
                if called in JOB_ERROR_CALLS and node.args and isinstance(node.args[0], ast.Constant):
                    codes.add(node.args[0].value)
            elif isinstance(node, ast.Dict):
                for key, value in zip(node.keys, node.values, strict=True):
                    if isinstance(key, ast.Constant) and key.value == "code" and isinstance(value, ast.Constant):
                        codes.add(value.value)
            elif isinstance(node, ast.Tuple) and len(node.elts) == 2 and _code_text(node.elts[0]):  # self.fenced = (code, why)
                codes.add(node.elts[0].value)
    return codes


def test_every_code_the_agent_writes_is_one_of_the_codes() -> None:
    found = agent_codes()
    assert {"JobPreparationFailed", "FailedStartingContainer", "DiskFull", "HeartbeatLost", "JobTerminated"} <= found
    assert found - {code.value for code in ErrorCode} == set()


def test_a_code_reads_as_its_text_everywhere_a_user_meets_it() -> None:
    error = BatchAIError(ErrorCode.JOB_NOT_FOUND, "job j was not found", "j")
    assert error.code == "JobNotFound" and str(error) == "JobNotFound: job j was not found (at j)"
    assert f"{error.code}" == "JobNotFound" and f"{error.code:>12}" == " JobNotFound"
    assert json.dumps(error.to_json()) == '{"code": "JobNotFound", "message": "job j was not found", "target": "j"}'
    assert ErrorCode("ClusterNotFound") is ErrorCode.CLUSTER_NOT_FOUND


def test_each_code_is_written_once_with_a_name_made_from_its_text() -> None:
    values = [code.value for code in ErrorCode]
    assert len(values) == len(set(values))
    for code in ErrorCode:
        assert CODE.match(code.value), code
        assert code.name == re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1_\2", re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", code.value)).upper()
