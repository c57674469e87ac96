"""``batchai serve``: the REST API on its own (uvicorn), behind one bearer token.

The token comes from ``BATCHAI_API_TOKEN`` or a file (``--token-file``, read once at start).
Without one the server still starts and answers every request 401, saying why: it never falls
back to open. The token is compared in constant time and never logged; uvicorn's access log
holds request lines only, and no secret travels in a URL of this API.
"""

from __future__ import annotations

import hmac
import logging
import os
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated
from urllib.parse import urlsplit

from fastapi import Depends, FastAPI, Header

from ..errors import BatchAIError, ErrorCode, shown
from ..service import Service
from .app import create_app
from .arm import ArmError

log = logging.getLogger(__name__)

TOKEN_ENV = "BATCHAI_API_TOKEN"
MIN_TOKEN_CHARS = 16


def load_token(token_file: str | None, environ: Mapping[str, str] = os.environ) -> str | None:
    """The file's token (its first line), else $BATCHAI_API_TOKEN; None when neither is set."""
    if token_file:
        try:
            text = Path(token_file).read_text().strip()
        except OSError as error:
            raise BatchAIError(
                ErrorCode.INVALID_ARGUMENTS, f"cannot read --token-file {token_file}: {error.strerror}", "--token-file"
            ) from None
        token = text.splitlines()[0].strip() if text else ""
        if not token:
            raise BatchAIError(ErrorCode.INVALID_ARGUMENTS, f"--token-file {token_file} is empty", "--token-file")
    else:
        token = environ.get(TOKEN_ENV, "").strip()
        if not token:
            return None
    if len(token) < MIN_TOKEN_CHARS:
        raise BatchAIError(ErrorCode.INVALID_ARGUMENTS, f"the API token must be at least {MIN_TOKEN_CHARS} characters", "--token-file")
    return token


def bearer_check(token: str | None) -> Callable[..., None]:
    """A dependency that lets through ``Authorization: Bearer <token>`` and refuses everything else."""
    expected = token.encode() if token else None

    def check(authorization: Annotated[str | None, Header()] = None) -> None:
        if expected is None:
            raise ArmError(
                401,
                ErrorCode.AUTHENTICATION_FAILED,
                f"this server has no API token (set {TOKEN_ENV} or --token-file): every request is refused",
            )
        scheme, _, presented = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(presented.strip().encode(), expected):
            raise ArmError(401, ErrorCode.AUTHENTICATION_FAILED, "Authorization: Bearer <token> is missing or wrong")

    return check


def check_public_url(url: str) -> str:
    """``--public-url``: http(s), a host, maybe a port and a path; nothing a client would not send back as is."""
    parsed = urlsplit(url)
    try:
        parsed.port  # noqa: B018 - raises for a port out of range
    except ValueError:
        parsed = parsed._replace(netloc="")
    if parsed.scheme not in ("http", "https") or not parsed.hostname or parsed.query or parsed.fragment or any(c in url for c in " \r\n\t"):
        raise BatchAIError(ErrorCode.INVALID_ARGUMENTS, f"--public-url {shown(url)} must be http(s)://host[:port][/prefix]", "--public-url")
    return url.rstrip("/")


def serve_app(service: Service, token: str | None, public_url: str | None = None) -> FastAPI:
    return create_app(lambda: service, [Depends(bearer_check(token))], public_url)


def serve(service: Service, host: str, port: int, token: str | None, controller: bool = True, public_url: str | None = None) -> None:
    """Until SIGTERM/SIGINT (uvicorn's): the API, and unless told otherwise every cluster's passes."""
    import uvicorn

    from ..controller import Controller

    if token is None:
        log.warning("no API token (%s or --token-file): every request will be refused with 401", TOKEN_ENV)
    running = Controller(service) if controller else None
    thread = threading.Thread(target=running.run, name="batchai-controller", daemon=True) if running else None
    if thread:
        thread.start()
    try:
        uvicorn.run(serve_app(service, token, public_url), host=host, port=port, log_level="info")
    finally:
        if running and thread:
            running.stop.set()
            thread.join(timeout=30)
