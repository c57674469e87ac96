"""``unmanagedFileSystems``: file systems the nodes mount themselves, as Batch AI ran ``mountCommand <path>``.

On self-hosted GPU nodes this is how an NFS, GlusterFS or Lustre export reaches jobs. The
mounts here are real (the suite runs as root): ``mount --bind`` of a folder stands in for
``mount -t nfs server:/export``, since this machine runs no NFS server; the agent treats both
the same way, as a command that makes a foreign file system appear at the mount path.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from airflow_batchai.agent.volumes import mount_points
from airflow_batchai.service import Service
from airflow_batchai.spec import load_cluster_spec
from tests.conftest import custom_job, wait_until
from tests.provider.test_service import job, ready_cluster

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounting needs root (CI runs as root)")


def mounted_under(home: Path) -> list[str]:
    return sorted(p for p in mount_points() if p.startswith(str(home)))


@pytest.fixture
def export(tmp_path: Path) -> Path:
    """The 'NFS server's' export: a dataset the jobs read, where they may also write."""
    folder = tmp_path / "export"
    (folder / "data").mkdir(parents=True)
    (folder / "data" / "train.csv").write_text("x,y\n1,2\n")
    return folder


def test_a_job_mounts_its_file_system_for_its_run_and_leaves_the_data_where_it_wrote_it(service: Service, home: Path, export: Path) -> None:
    ready_cluster(service, nodes=1)
    body: dict[str, Any] = custom_job(
        'grep -c " $AZ_BATCHAI_JOB_MOUNT_ROOT/nfs " /proc/self/mountinfo; cat $AZ_BATCHAI_JOB_MOUNT_ROOT/nfs/data/train.csv;'
        " echo weights > $AZ_BATCHAI_OUTPUT_MODEL/model.txt"
    )
    body["mountVolumes"]["unmanagedFileSystems"] = [{"mountCommand": f"mount --bind {export}", "relativeMountPath": "nfs"}]
    body["outputDirectories"] = [{"id": "MODEL", "pathPrefix": "$AZ_BATCHAI_JOB_MOUNT_ROOT/nfs/models"}]
    service.create_job("c", "nfs", job(body))
    done = service.wait_job("nfs", timeout_s=60, poll_s=0.1)
    stdout = service.read_output_file("nfs", "stdout.txt")
    assert done.execution_state == "succeeded", (done.execution_info, stdout, service.read_output_file("nfs", "stderr.txt"))
    assert stdout == b"1\nx,y\n1,2\n"  # a real mount at the Batch AI path, with the export's files
    [model] = list((export / "models").rglob("model.txt"))
    assert model.read_text() == "weights\n" and model.parent.name == "outputs"  # Batch AI's output layout, on the export
    assert mounted_under(home) == []  # unmounted when the job ended
    assert (export / "data" / "train.csv").exists()  # and nothing of the export was removed with the job's folders


def test_a_cluster_mount_stays_for_every_job_and_scaling_to_zero_keeps_the_exports_data(service: Service, home: Path, export: Path) -> None:
    spec = load_cluster_spec(
        {
            "scaleSettings": {"manual": {"targetNodeCount": 1}},
            "nodeSetup": {
                "mountVolumes": {"unmanagedFileSystems": [{"mountCommand": f"mount --bind {export}", "relativeMountPath": "nfs"}]}
            },
        },
        environ={},
    )
    ready_cluster(service, spec=spec)
    wait_until(lambda: service.show_cluster("c").node_state_counts.idle_node_count == 1, 30, what="node set up")
    for name in ("first", "second"):
        command = f"cat $AZ_BATCHAI_MOUNT_ROOT/nfs/data/train.csv > $AZ_BATCHAI_MOUNT_ROOT/nfs/{name}.csv"
        service.create_job("c", name, job(custom_job(command)))
        done = service.wait_job(name, timeout_s=60, poll_s=0.1)
        assert done.execution_state == "succeeded", (done.execution_info, service.read_output_file(name, "stderr.txt"))
        assert (export / f"{name}.csv").read_text() == "x,y\n1,2\n"
        assert [p for p in mounted_under(home) if p.endswith("/nfs")]  # still mounted between jobs

    service.resize_cluster("c", 0)
    wait_until(lambda: service.show_cluster("c").current_node_count == 0, 60, 0.1, what="scaled to zero")
    assert mounted_under(home) == []
    assert sorted(p.name for p in export.iterdir()) == ["data", "first.csv", "second.csv"]  # the node's root went, the data stayed
    assert (export / "data" / "train.csv").read_text() == "x,y\n1,2\n"


def test_a_mount_command_that_fails_fails_the_job_naming_the_mount(service: Service, home: Path) -> None:
    ready_cluster(service, nodes=1)
    body: dict[str, Any] = custom_job("echo should not run")
    body["mountVolumes"]["unmanagedFileSystems"] = [{"mountCommand": "mount -t no-such-fs none", "relativeMountPath": "lustre"}]
    service.create_job("c", "broken", job(body))
    done = service.wait_job("broken", timeout_s=60, poll_s=0.1)
    [error] = done.execution_info.errors
    assert done.execution_state == "failed" and error.code == "MountFailed"
    assert "/lustre exited with code 32: mount:" in error.message and "none does not exist" in error.message
    assert service.read_output_file("broken", "stdout.txt") in (None, b"")
    assert mounted_under(home) == []
    assert service.show_cluster("c").node_state_counts.idle_node_count == 1  # the node is free for the next job


def test_an_empty_mount_command_is_refused_naming_the_field(service: Service) -> None:
    ready_cluster(service, nodes=1)
    body: dict[str, Any] = custom_job("true")
    body["mountVolumes"]["unmanagedFileSystems"] = [{"mountCommand": " ", "relativeMountPath": "nfs"}]
    with pytest.raises(Exception, match=r"mountVolumes.unmanagedFileSystems\[0\].mountCommand"):
        service.create_job("c", "empty", job(body))
    assert service.list_jobs() == []


def test_a_mount_command_takes_credentials_from_the_jobs_secrets_not_from_its_text(service: Service, home: Path, export: Path) -> None:
    """mountCommand is stored and shown like any field; a credential belongs in ``secrets``, which the
    command sees as variables (mount.cifs, for one, reads its password from $PASSWD)."""
    ready_cluster(service, nodes=1)
    body: dict[str, Any] = custom_job("cat $AZ_BATCHAI_JOB_MOUNT_ROOT/nfs/data/train.csv")
    body["mountVolumes"]["unmanagedFileSystems"] = [{"mountCommand": 'mount --bind "$EXPORT_PATH"', "relativeMountPath": "nfs"}]
    body["secrets"] = [{"name": "EXPORT_PATH", "value": str(export)}]
    service.create_job("c", "secret-mount", job(body))
    done = service.wait_job("secret-mount", timeout_s=60, poll_s=0.1)
    assert done.execution_state == "succeeded", (done.execution_info, service.read_output_file("secret-mount", "stderr.txt"))
    assert service.read_output_file("secret-mount", "stdout.txt") == b"x,y\n1,2\n"
    shown = service.show_job("secret-mount")
    assert shown.to_json()["mountVolumes"]["unmanagedFileSystems"][0]["mountCommand"] == 'mount --bind "$EXPORT_PATH"'
    assert str(export) not in str(shown)
