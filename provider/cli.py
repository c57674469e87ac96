"""``batchai``: the ``az batchai`` commands, on the embedded default or on a connection.

``--connection`` (or ``$BATCHAI_CONNECTION``) takes the same extras as the Airflow connection,
as JSON text or a file holding it (or the whole Airflow connection as JSON, as in
``AIRFLOW_CONN_BATCHAI_DEFAULT``), so a script switches to SSH nodes or Azure Storage (Azurite
included) by changing only that.

Output is Batch AI's JSON (camelCase read models) on stdout, so scripts written against the az
CLI's ``-o json`` keep working. Bad input exits with status 2 and one line on stderr.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Sequence
from datetime import date, datetime, timedelta, timezone
from typing import Any

from pydantic import ValidationError

from .errors import BatchAIError, ErrorCode
from .records import ExecutionState
from .service import DEFAULT_EXPERIMENT, DEFAULT_WORKSPACE, Service
from .spec import AutoScaleSettings, BatchAIView, ClusterSpec, ManualScaleSettings, ScaleSettings, load_cluster_spec, load_job_spec

STREAM_POLL_S = 0.5
EXIT_USAGE = 2
MAX_ERROR_LINE = 299
_opened: list[Service] = []  # background passes these started finish before the command exits


def one_line(text: str, limit: int = MAX_ERROR_LINE) -> str:
    """What bad input gets: one line, and a short one, whatever the input held."""
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _print(document: Any) -> None:
    """A read model (or a list of them) as Batch AI's JSON, as ``az batchai`` printed it."""

    def shown(value: Any) -> Any:
        return value.to_json() if isinstance(value, BatchAIView) else value

    document = [shown(item) for item in document] if isinstance(document, list) else shown(document)
    print(json.dumps(document, indent=2, sort_keys=True))


def _service(args: argparse.Namespace, kind: str = "reader") -> Service:
    service = _open_service(args, kind)
    _opened.append(service)
    return service


def _open_service(args: argparse.Namespace, kind: str) -> Service:
    raw = args.connection or os.environ.get("BATCHAI_CONNECTION")
    if not raw:
        return Service.embedded(args.home, kind=kind)
    from .config import parse_connection_text, service_from_config

    config = parse_connection_text(raw, "--connection")
    if args.home:
        config = config.model_copy(update={"home": args.home})
    return service_from_config(config, kind=kind)


def upload(args: argparse.Namespace) -> int:
    """``az storage blob|file upload-batch``: progress on stderr, the report as JSON."""
    from .data.upload import upload_batch

    service = _service(args)
    report = upload_batch(
        service.data,
        source=args.source,
        account=args.account_name or service.settings.default_storage_account,
        container=args.destination,
        destination_path=args.destination_path,
        pattern=args.pattern,
        overwrite=args.overwrite,
        kind=args.type,
        on_progress=lambda line: print(line, file=sys.stderr),
    )
    _print(report)
    return 0


def _scale_from_args(args: argparse.Namespace) -> ScaleSettings | None:
    if args.min is None and args.max is None:
        return None if args.target is None else ScaleSettings(manual=ManualScaleSettings(target_node_count=args.target))
    if args.min is None or args.max is None:
        raise BatchAIError(ErrorCode.INVALID_ARGUMENTS, "--min and --max go together", "--min/--max")
    if args.min == args.max:
        return ScaleSettings(manual=ManualScaleSettings(target_node_count=args.min))
    return ScaleSettings(
        auto_scale=AutoScaleSettings(minimum_node_count=args.min, maximum_node_count=args.max, initial_node_count=args.target or 0)
    )


def cluster_create(args: argparse.Namespace) -> int:
    if args.config_file:
        spec = load_cluster_spec(
            args.config_file, storage_account_name=args.storage_account_name, storage_account_key=args.storage_account_key
        )
    else:
        spec = ClusterSpec()
    scale = _scale_from_args(args)
    if scale is not None:
        spec = spec.model_copy(update={"scale_settings": scale})
    if args.vm_size:
        spec = spec.model_copy(update={"vm_size": args.vm_size})
    _print(_service(args).create_cluster(args.name, spec, args.workspace))
    return 0


def cluster_show(args: argparse.Namespace) -> int:
    _print(_service(args).show_cluster(args.name, args.workspace))
    return 0


def cluster_list(args: argparse.Namespace) -> int:
    _print(_service(args).list_clusters(args.workspace))
    return 0


def cluster_resize(args: argparse.Namespace) -> int:
    _print(_service(args).resize_cluster(args.name, args.target, args.workspace))
    return 0


def cluster_delete(args: argparse.Namespace) -> int:
    _service(args).delete_cluster(args.name, args.workspace)
    return 0


def job_create(args: argparse.Namespace) -> int:
    """Unfilled account placeholders fall back to the embedded default's local account."""
    service = _service(args)
    account = args.storage_account_name or os.environ.get("AZURE_BATCHAI_STORAGE_ACCOUNT") or service.settings.default_storage_account
    spec = load_job_spec(args.config_file, cluster=args.cluster, storage_account_name=account, storage_account_key=args.storage_account_key)
    _print(service.create_job(args.cluster, args.name, spec, args.experiment, args.workspace))
    return 0


def job_validate(args: argparse.Namespace) -> int:
    spec = load_job_spec(args.config_file, storage_account_name=args.storage_account_name, storage_account_key=args.storage_account_key)
    print(f"{args.config_file}: valid {spec.tool_type} job for {spec.node_count} node(s)")
    return 0


def job_show(args: argparse.Namespace) -> int:
    _print(_service(args).show_job(args.name, args.experiment, args.workspace))
    return 0


def job_list(args: argparse.Namespace) -> int:
    _print(_service(args).list_jobs(args.experiment, args.workspace))
    return 0


def job_terminate(args: argparse.Namespace) -> int:
    _print(_service(args).terminate_job(args.name, args.experiment, args.workspace))
    return 0


def job_delete(args: argparse.Namespace) -> int:
    _service(args).delete_job(args.name, args.experiment, args.workspace)
    return 0


def job_wait(args: argparse.Namespace) -> int:
    """Exit with the job's exit code, as ``az batchai job wait`` did (1 for a failure without one)."""
    view = _service(args).wait_job(args.name, args.experiment, args.workspace, timeout_s=args.timeout, poll_s=args.interval)
    info = view.execution_info
    if view.execution_state == ExecutionState.SUCCEEDED:
        return 0
    for error in info.errors or []:
        print(f"{error.code}: {error.message}", file=sys.stderr)
    code = info.exit_code
    return code if isinstance(code, int) and 0 < code < 256 else 1


def file_list(args: argparse.Namespace) -> int:
    files = _service(args).list_output_files(args.job, args.experiment, args.workspace, args.output_directory_id, args.path, args.expiry)
    _print(files)
    return 0


def file_stream(args: argparse.Namespace) -> int:
    """``tail -f`` of a job's file: print what is new every poll; stop once the job has ended."""
    service = _service(args)
    files = service.output_files(args.job, args.experiment, args.workspace)  # located once, then only byte ranges
    offset = 0
    out = sys.stdout.buffer
    while True:
        state = service.refresh_job(args.job, args.experiment, args.workspace).execution_state
        chunk = files.read(args.output_directory_id, args.file_name, offset)
        if chunk:
            out.write(chunk)
            out.flush()
            offset += len(chunk)
        if state.finished:
            tail = files.read(args.output_directory_id, args.file_name, offset)
            if tail:
                out.write(tail)
                out.flush()
            if chunk is None and offset == 0 and tail is None:
                raise BatchAIError(
                    ErrorCode.FILE_NOT_FOUND,
                    f"the job ended and {args.file_name} was not found in {args.output_directory_id}",
                    args.file_name,
                )
            return 0
        time.sleep(STREAM_POLL_S)


def usage(args: argparse.Namespace) -> int:
    """Node-hours, GPU-hours and estimated cost by day and cluster (idle and boot apart), and by experiment."""
    today = datetime.now(timezone.utc).date()
    since = args.since or (today - timedelta(days=6)).isoformat()
    try:
        date.fromisoformat(since)
    except ValueError:
        raise BatchAIError(
            ErrorCode.INVALID_ARGUMENTS, f"--since must be a day as YYYY-MM-DD, got {one_line(since, 40)!r}", "--since"
        ) from None
    report = _service(args).usage_report(since, args.workspace)
    if args.output == "json":
        print(json.dumps(report, indent=2, sort_keys=True))
        return 0
    print(f"Clusters since {since} (UTC days; node-hours by state; cost estimated)")
    header = ("day", "cluster", "node-h", "running", "idle", "boot", "setup", "other", "GPU-h", "cost")
    lines: list[tuple[str, ...]] = [header]
    for row in report["clusters"]:
        states = {state: value["nodeSeconds"] / 3600 for state, value in row["byState"].items()}
        other = sum(v for k, v in states.items() if k not in ("running", "idle", "starting", "preparing"))
        lines.append(
            (
                row["day"],
                row["cluster"],
                f"{row['nodeSeconds'] / 3600:.3f}",
                *(f"{states.get(s, 0.0):.3f}" for s in ("running", "idle", "starting", "preparing")),
                f"{other:.3f}",
                f"{row['gpuHours']:.3f}",
                _money(row["estimatedCost"]),
            )
        )
    _table(lines)
    print(f"\nExperiments since {since} (their jobs' node-hours while running)")
    lines = [("day", "cluster", "experiment", "jobs", "node-h", "GPU-h", "cost")]  # another table
    for row in report["experiments"]:
        lines.append(
            (
                row["day"],
                row["cluster"],
                row["experiment"],
                str(row["jobs"]),
                f"{row['nodeSeconds'] / 3600:.3f}",
                f"{row['gpuHours']:.3f}",
                _money(row["estimatedCost"]),
            )
        )
    _table(lines)
    return 0


def _money(cost: dict[str, Any]) -> str:
    if cost.get("amount") is None:
        return "unknown"
    return f"{cost['amount']:.2f} {cost.get('currency') or ''}".strip()


def _table(lines: Sequence[tuple[str, ...]]) -> None:
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    for line in lines:
        print("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip())


def controller(args: argparse.Namespace) -> int:
    """Run passes for every cluster until SIGTERM or SIGINT; then finish the passes under way and exit 0."""
    from .controller import Controller

    if args.interval is not None and not args.interval > 0:
        raise BatchAIError(ErrorCode.INVALID_ARGUMENTS, f"--interval must be more than 0 seconds, got {args.interval}", "--interval")
    logging.getLogger("airflow_batchai").setLevel(logging.DEBUG if args.verbose else logging.INFO)
    running = Controller(_service(args, kind="controller"), interval_s=args.interval)
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: running.stop.set())
    running.run()
    return 0


def serve(args: argparse.Namespace) -> int:
    """Batch AI's REST API (2018-05-01) for the azure-mgmt-batchai SDK, until SIGTERM or SIGINT."""
    from .restapi.serve import check_public_url, load_token
    from .restapi.serve import serve as run_server

    if not 0 < args.port < 65536:
        raise BatchAIError(ErrorCode.INVALID_ARGUMENTS, f"--port must be 1-65535, got {args.port}", "--port")
    token = load_token(args.token_file)
    public_url = check_public_url(args.public_url) if args.public_url else None
    logging.getLogger("airflow_batchai").setLevel(logging.INFO)
    service = _service(args, kind="controller" if args.controller else "reader")
    run_server(service, args.host, args.port, token, args.controller, public_url)
    return 0


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-w", "--workspace", default=DEFAULT_WORKSPACE, help="workspace (default: default)")
    common.add_argument("--home", default=None, help="embedded default's folder (default: $BATCHAI_HOME or ~/.batchai)")
    common.add_argument("--connection", default=None, help="connection extras as JSON or a JSON file (default: $BATCHAI_CONNECTION)")
    storage = argparse.ArgumentParser(add_help=False)
    storage.add_argument("--storage-account-name", default=None, help="fills <AZURE_BATCHAI_STORAGE_ACCOUNT>")
    storage.add_argument("--storage-account-key", default=None, help="fills <AZURE_BATCHAI_STORAGE_KEY>")
    experiment = argparse.ArgumentParser(add_help=False)
    experiment.add_argument("-e", "--experiment", default=DEFAULT_EXPERIMENT)

    parser = argparse.ArgumentParser(prog="batchai", description="Azure Batch AI job specs on your own nodes")
    groups = parser.add_subparsers(dest="group", required=True)

    cluster = groups.add_parser("cluster", help="clusters of nodes").add_subparsers(dest="command", required=True)
    create = cluster.add_parser("create", parents=[common, storage], help="create a cluster (cluster.json, or a node count)")
    create.add_argument("-n", "--name", required=True)
    create.add_argument("-f", "--config-file")
    create.add_argument("-t", "--target", type=int)
    create.add_argument("--min", type=int)
    create.add_argument("--max", type=int)
    create.add_argument("-s", "--vm-size", default=None, help="picks hosts labelled with it (SSH pools); any host when unlabelled")
    create.set_defaults(handler=cluster_create)
    for name, handler, said in (
        ("show", cluster_show, "a cluster: its nodes' states, errors and usage"),
        ("delete", cluster_delete, "delete a cluster (its queued and running jobs fail with ClusterDeleted)"),
    ):
        sub = cluster.add_parser(name, parents=[common], help=said)
        sub.add_argument("-n", "--name", required=True)
        sub.set_defaults(handler=handler)
    cluster.add_parser("list", parents=[common], help="the workspace's clusters").set_defaults(handler=cluster_list)
    resize = cluster.add_parser("resize", parents=[common], help="set a cluster's target node count (0: scale to zero)")
    resize.add_argument("-n", "--name", required=True)
    resize.add_argument("-t", "--target", type=int, required=True)
    resize.set_defaults(handler=cluster_resize)

    job = groups.add_parser("job", help="jobs").add_subparsers(dest="command", required=True)
    submit = job.add_parser("create", parents=[common, storage, experiment], help="submit a job.json to a cluster")
    submit.add_argument("-n", "--name", required=True)
    submit.add_argument("-c", "--cluster", required=True)
    submit.add_argument("-f", "--config-file", required=True)
    submit.set_defaults(handler=job_create)
    validate = job.add_parser("validate", parents=[storage], help="check a job.json without submitting it (exit 0, or 2 and why)")
    validate.add_argument("-f", "--config-file", required=True)
    validate.set_defaults(handler=job_validate)
    for name, handler, said in (
        ("show", job_show, "a job: its state, errors, attempts and usage"),
        ("terminate", job_terminate, "stop a queued or running job"),
        ("delete", job_delete, "delete a job's record (a running one is terminated first)"),
    ):
        sub = job.add_parser(name, parents=[common, experiment], help=said)
        sub.add_argument("-n", "--name", required=True)
        sub.set_defaults(handler=handler)
    job.add_parser("list", parents=[common, experiment], help="the experiment's jobs").set_defaults(handler=job_list)
    wait = job.add_parser("wait", parents=[common, experiment], help="wait for a job to end; exits with its exit code")
    wait.add_argument("-n", "--name", required=True)
    wait.add_argument("--timeout", type=float, default=None, help="seconds (default: no limit)")
    wait.add_argument("--interval", type=float, default=0.5, help="seconds between polls")
    wait.set_defaults(handler=job_wait)

    files = job.add_parser("file", help="job output files").add_subparsers(dest="file_command", required=True)
    listing = files.add_parser("list", parents=[common, experiment], help="a job's output files, with download links")
    listing.add_argument("-j", "--job", required=True)
    listing.add_argument("-d", "--output-directory-id", default="stdouterr")
    listing.add_argument("-p", "--path", default=".")
    listing.add_argument("--expiry", type=int, default=60, help="download link lifetime, minutes (5-600)")
    listing.set_defaults(handler=file_list)
    stream = files.add_parser("stream", parents=[common, experiment], help="print an output file as it grows, until the job ends")
    stream.add_argument("-j", "--job", required=True)
    stream.add_argument("-f", "--file-name", required=True)
    stream.add_argument("-d", "--output-directory-id", default="stdouterr")
    stream.set_defaults(handler=file_stream)
    uploading = groups.add_parser("upload", parents=[common], help="upload a folder into a container or share")
    uploading.add_argument("-s", "--source", required=True)
    uploading.add_argument("-d", "--destination", required=True, help="container or share name")
    uploading.add_argument("--destination-path", default="")
    uploading.add_argument("--pattern", default="*")
    uploading.add_argument("--type", choices=("blob", "file"), default="blob")
    uploading.add_argument("--account-name", default=None)
    uploading.add_argument("--overwrite", action="store_true")
    uploading.set_defaults(handler=upload)
    usage_of = groups.add_parser("usage", parents=[common], help="node-hours, GPU-hours and estimated cost by day, cluster and experiment")
    usage_of.add_argument("--since", default=None, help="first UTC day, YYYY-MM-DD (default: 6 days ago)")
    usage_of.add_argument("-o", "--output", choices=("table", "json"), default="table")
    usage_of.set_defaults(handler=usage)
    owner = groups.add_parser("controller", parents=[common], help="run every cluster's reconcile passes (until SIGTERM)")
    owner.add_argument("--interval", type=float, default=None, help="seconds between full passes per cluster (default 5)")
    owner.add_argument("-v", "--verbose", action="store_true", help="log every pass (when it started and ended, and by whom)")
    owner.set_defaults(handler=controller)
    api = groups.add_parser("serve", parents=[common], help="serve Batch AI's REST API (2018-05-01) for the azure-mgmt-batchai SDK")
    api.add_argument("--port", type=int, default=8090)
    api.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    api.add_argument("--token-file", default=None, help="file holding the bearer token (default: $BATCHAI_API_TOKEN)")
    api.add_argument(
        "--public-url", default=None, help="where clients reach this API (https://host[:port][/prefix]): the start of operation links"
    )
    api.add_argument(
        "--no-controller", dest="controller", action="store_false", help="do not run passes here (a `batchai controller` runs them)"
    )
    api.set_defaults(handler=serve)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except BatchAIError as error:
        print(one_line(f"error: {error.code}: {error.message}"), file=sys.stderr)
        return EXIT_USAGE
    except ValidationError as error:  # a model built from options (-t, --min, --max) rather than from a file
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "(options)"
        print(one_line(f"error: InvalidSpec: {where}: {first['msg'].removeprefix('Value error, ')}"), file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    except OSError as error:
        print(f"error: {error.strerror or error}: {error.filename or ''}".rstrip(": "), file=sys.stderr)
        return EXIT_USAGE
    finally:
        for service in _opened:  # the answer is out; a pass it kicked may still be finishing
            service.passes.drain()
        _opened.clear()


if __name__ == "__main__":
    sys.exit(main())
