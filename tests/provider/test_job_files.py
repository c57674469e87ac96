"""A job's files never lead outside its folders: links a job makes are not followed by anything
that lists, reads, serves, signs or uploads its files (real jobs on local nodes, real folders)."""

from __future__ import annotations

from pathlib import Path

from airflow_batchai.reading.readmodels import JobView
from airflow_batchai.service import Service
from airflow_batchai.spec import load_cluster_spec, load_job_spec
from airflow_batchai.transport.local import LocalTransport
from tests.conftest import custom_job, wait_until

SECRET_TEXT = "the service's own secret, outside every job folder"

LINKS = """
ln -s {secret} $AZ_BATCHAI_STDOUTERR_DIR/stolen.txt
ln -s /etc $AZ_BATCHAI_STDOUTERR_DIR/etc
ln -s {secret} $AZ_BATCHAI_OUTPUT_MODEL/stolen.txt
ln -s ../../../../../../../../.. $AZ_BATCHAI_OUTPUT_MODEL/up
ln -s /nowhere $AZ_BATCHAI_OUTPUT_MODEL/dangling
ln -s {secret} $AZ_BATCHAI_OUTPUT_SCRATCH/stolen.txt
mkfifo $AZ_BATCHAI_OUTPUT_MODEL/fifo
echo real > $AZ_BATCHAI_OUTPUT_MODEL/real.txt
echo scratch > $AZ_BATCHAI_OUTPUT_SCRATCH/real.txt
echo done
"""


def linking_job(service: Service, home: Path) -> tuple[JobView, Path]:
    secret = home.parent / "service-secret.txt"
    secret.write_text(SECRET_TEXT)
    service.create_cluster("c", load_cluster_spec({"scaleSettings": {"manual": {"targetNodeCount": 1}}}, environ={}))
    wait_until(lambda: service.show_cluster("c").allocation_state == "steady", 30, 0.1, what="cluster steady")
    outputs = [
        {"id": "MODEL", "pathPrefix": "$AZ_BATCHAI_JOB_MOUNT_ROOT/logs"},  # on a (local) storage volume
        {"id": "SCRATCH", "pathPrefix": "$AZ_BATCHAI_JOB_TEMP"},  # on the node only: read through the transport
    ]
    body = custom_job(LINKS.format(secret=secret), outputDirectories=outputs)
    service.create_job("c", "links", load_job_spec({"properties": body}, environ={}), "exp")
    return service.wait_job("links", "exp", timeout_s=60, poll_s=0.1), secret


def test_links_a_job_makes_are_neither_listed_nor_read_nor_linked(service: Service, home: Path) -> None:
    done, secret = linking_job(service, home)
    assert done.execution_state == "succeeded", done
    logs = {f.name for f in service.list_output_files("links", "exp")}
    assert logs == {"execution.log", "resources-local-0.json", "stderr.txt", "stdout.txt"}  # the job's link planted there is not
    model = service.list_output_files("links", "exp", output_directory_id="MODEL")
    assert [f.name for f in model] == ["real.txt"]
    assert Path(model[0].download_url[len("file://") :]).resolve().is_relative_to(home.resolve())
    scratch = service.list_output_files("links", "exp", output_directory_id="SCRATCH")
    assert "stolen.txt" not in {f.name for f in scratch} and "real.txt" in {f.name for f in scratch}
    for directory, name in (("stdouterr", "stolen.txt"), ("MODEL", "stolen.txt"), ("SCRATCH", "stolen.txt"), ("MODEL", "fifo")):
        files = service.output_files("links", "exp")
        assert files.read(directory, name) is None
    files = service.output_files("links", "exp")
    assert files.list("stdouterr", "etc") == [] and files.list("MODEL", "up") == [] and files.list("MODEL", "dangling") == []
    assert files.read("stdouterr", "etc/passwd") is None and files.read("MODEL", "up/" + str(secret).lstrip("/")) is None


def test_a_link_swapped_in_under_a_listed_folder_is_refused_on_the_opened_file(tmp_path: Path) -> None:
    """The check is made on what was opened, so a folder replaced by a link after it was listed gains nothing."""
    base = tmp_path / "job"
    (base / "out").mkdir(parents=True)
    (base / "out" / "a.txt").write_text("mine")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "a.txt").write_text(SECRET_TEXT)
    files = LocalTransport()
    assert files.read_inside(str(base), "out/a.txt") == b"mine"
    (base / "out").rename(base / "old")
    (base / "out").symlink_to(outside)
    assert files.read_inside(str(base), "out/a.txt") is None
    assert files.list_inside(str(base), "out") is None
    assert [i.name for i in files.list_inside(str(base), "") or []] == ["old"], "the link itself is not listed"
    assert files.read_inside(str(base), "../outside/a.txt") is None
