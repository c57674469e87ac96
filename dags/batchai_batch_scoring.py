"""Batch scoring, as Azure's batch-scoring reference architecture for Batch AI ran it: a trigger file lands
in storage, many jobs score in parallel on an autoscaling cluster, and the results are stitched back together.

trigger file ``scoring/incoming/*.trigger`` (an AssetWatcher on the storage event trigger) → split a
short clip into frames → upload the frames, the style image and the scoring script → an autoscale
cluster with minimum 0 → one job per slice of frames (``jobs`` defaults to the cluster's maximum
nodes, as the reference architecture advised; each job colour-transfers its frames and logs one line per frame into the
run's shared log folder) → stitch the styled frames into a GIF in ``scoring/results/``. Nothing
scales the cluster down here: autoscale takes it back to zero once the jobs are done.

Sizing: fewer, bigger jobs pay node start-up once each; more, smaller jobs re-do less
when one fails (a failed slice's retry re-runs only that slice's job).
"""

from __future__ import annotations

import math
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

from airflow.sdk import Asset, AssetWatcher, Param, dag, task

from airflow_batchai.hooks.batchai import BatchAIHook
from airflow_batchai.operators.batchai import BatchAICreateClusterOperator, BatchAISubmitJobOperator, BatchAIUploadOperator
from airflow_batchai.triggers.batchai import BatchAIStorageEventTrigger

SCRIPTS = Path(__file__).parent / "assets" / "scoring"
CONTAINER = "scoring"
CLUSTER = "scoring"
EXPERIMENT = "batch_scoring"
MAX_NODES = 2
ROOT = f"$AZ_BATCHAI_JOB_MOUNT_ROOT/{CONTAINER}"

trigger_file = Asset(
    "batchai_scoring_trigger_file",
    watchers=[
        AssetWatcher(
            name="scoring_trigger_file",
            trigger=BatchAIStorageEventTrigger(container=CONTAINER, prefix="incoming/", pattern="*.trigger"),
        )
    ],
)


def run_key(run_id: str) -> str:
    """A run's folder name in storage: its run id, with what paths and shells mind replaced."""
    return re.sub(r"[^\w-]", "_", run_id)


@dag(
    dag_id="batchai_batch_scoring",
    schedule=[trigger_file],
    catchup=False,
    tags=["batchai", "example"],
    doc_md=__doc__,
    params={
        "frames": Param(24, type="integer", minimum=1, maximum=600, description="frames to cut from the clip"),
        "jobs": Param(None, type=["null", "integer"], minimum=1, description="jobs to score with (default: the cluster's maximum nodes)"),
    },
)
def batchai_batch_scoring() -> None:
    @task
    def split_clip(params: dict[str, Any], run_id: str) -> dict[str, Any]:
        """Make a short clip (a drifting sunrise over a field: nothing is downloaded), split it into PNG
        frames as a video tool would, and draw the style image the jobs transfer the colours of."""
        import numpy as np
        from PIL import Image, ImageSequence

        folder = Path(tempfile.mkdtemp(prefix="batchai-scoring-"))
        height, width, count = 72, 96, int(params["frames"])
        rows, columns = np.mgrid[0:height, 0:width] / np.array([height, width])[:, None, None]
        clip = []
        for index in range(count):
            sun = np.exp(-(((rows - 0.8 + 0.5 * index / count) * 4) ** 2 + ((columns - 0.5) * 4) ** 2))
            sky = np.stack([0.2 + 0.6 * sun, 0.3 + 0.4 * sun + 0.3 * rows, 0.6 - 0.3 * rows], axis=-1)
            field = np.stack([0.2 + 0 * rows, 0.5 + 0.2 * np.sin(columns * 20 + index / 3), 0.2 + 0 * rows], axis=-1)
            frame = np.where((rows > 0.65)[..., None], field, sky)
            clip.append(Image.fromarray((np.clip(frame, 0, 1) * 255).astype(np.uint8)))
        clip[0].save(folder / "clip.gif", save_all=True, append_images=clip[1:], duration=80, loop=0)
        (folder / "frames").mkdir()
        with Image.open(folder / "clip.gif") as movie:
            for index, frame in enumerate(ImageSequence.Iterator(movie)):
                frame.convert("RGB").save(folder / "frames" / f"frame-{index:05d}.png")
        style = np.stack([0.9 - 0.5 * rows, 0.4 + 0.3 * columns, 0.2 + 0.3 * rows * columns], axis=-1)
        (folder / "style").mkdir()
        Image.fromarray((style * 255).astype(np.uint8)).save(folder / "style" / "style.png")
        return {"folder": str(folder), "frames": len(list((folder / "frames").iterdir())), "key": run_key(run_id)}

    clip = split_clip()
    upload_frames = BatchAIUploadOperator(
        task_id="upload_frames",
        source="{{ ti.xcom_pull(task_ids='split_clip')['folder'] }}/frames",
        destination=CONTAINER,
        destination_path="input/{{ ti.xcom_pull(task_ids='split_clip')['key'] }}",
    )
    upload_style = BatchAIUploadOperator(
        task_id="upload_style",
        source="{{ ti.xcom_pull(task_ids='split_clip')['folder'] }}/style",
        destination=CONTAINER,
        destination_path="style",
    )
    upload_script = BatchAIUploadOperator(
        task_id="upload_script", source=str(SCRIPTS), pattern="score.py", destination=CONTAINER, destination_path="code"
    )
    cluster = BatchAICreateClusterOperator(
        task_id="create_cluster",
        cluster_name=CLUSTER,
        spec={"scaleSettings": {"autoScale": {"minimumNodeCount": 0, "maximumNodeCount": MAX_NODES, "idleSecondsBeforeScaledown": 60}}},
        update=True,
    )

    @task
    def slices(clip: dict[str, Any], params: dict[str, Any]) -> list[dict[str, Any]]:
        """One job spec per slice of frames: ``jobs`` of them, or as many as the cluster may have nodes."""
        jobs = int(params["jobs"] or MAX_NODES)
        per_job = math.ceil(clip["frames"] / jobs)
        key = clip["key"]
        specs = []
        for start in range(0, clip["frames"], per_job):
            arguments = (
                f"--frames {ROOT}/input/{key} --style {ROOT}/style/style.png --start {start} --count {per_job} "
                f"--output $AZ_BATCHAI_OUTPUT_FRAMES --log-dir {ROOT}/logs/{key}"
            )
            specs.append(
                {
                    "nodeCount": 1,
                    "customToolkitSettings": {"commandLine": f'"$BATCHAI_PYTHON" {ROOT}/code/score.py {arguments}'},
                    "stdOutErrPathPrefix": ROOT,
                    "outputDirectories": [{"id": "FRAMES", "pathPrefix": ROOT, "pathSuffix": "scored"}],
                    "mountVolumes": {
                        "azureBlobFileSystems": [
                            {"accountName": "<AZURE_BATCHAI_STORAGE_ACCOUNT>", "containerName": CONTAINER, "relativeMountPath": CONTAINER}
                        ]
                    },
                }
            )
        return specs

    score = BatchAISubmitJobOperator.partial(
        task_id="score_slice", cluster_name=CLUSTER, experiment=EXPERIMENT, poll_interval=0.5, retries=2
    ).expand(spec=slices(clip))

    @task
    def stitch(clip: dict[str, Any], jobs: list[dict[str, Any]]) -> str:
        """The styled frames of every slice, in order, as one GIF in ``scoring/results/<run>/``."""
        import io

        from PIL import Image

        service = BatchAIHook().service
        frames: dict[str, bytes] = {}
        for job in jobs:
            for entry in service.list_output_files(job["name"], EXPERIMENT, output_directory_id="FRAMES", max_results=1000):
                if entry.is_file and entry.name.endswith(".png"):
                    frames[entry.name] = service.read_output_file(job["name"], entry.name, EXPERIMENT, output_directory_id="FRAMES") or b""
        images = [Image.open(io.BytesIO(frames[name])) for name in sorted(frames)]
        work = Path(clip["folder"])
        images[0].save(work / "styled.gif", save_all=True, append_images=images[1:], duration=80, loop=0)
        location = f"{CONTAINER}/results/{clip['key']}/styled.gif"
        service.data.upload_target(service.settings.default_storage_account, CONTAINER, f"results/{clip['key']}").put(
            "styled.gif", work / "styled.gif"
        )
        shutil.rmtree(work, ignore_errors=True)
        print(f"stitched {len(images)} frames into {location}")
        return location

    clip >> [upload_frames, upload_style]
    [upload_frames, upload_style, upload_script, cluster] >> score
    stitch(clip, score.output)


batchai_batch_scoring()
