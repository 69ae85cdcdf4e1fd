"""HTTP routes for Buckets and the Xet CAS data plane that stores their bytes."""

from __future__ import annotations

import hashlib
import io
import re
import secrets
import time
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import msgspec
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ._api_jobs import ctx_of, cursor_of, drain, namespace_of, next_link, user_of, with_body
from ._specs import BatchOp, BucketCreate, PathsRequest, RepoMove, check_path, decode
from ._store import Record
from ._util import HTTPError, bad_request, iso, json_object, not_found
from ._xet import parse_range

if TYPE_CHECKING:
    from ._server import Context

_MAX_XORB = 128 << 20
_MAX_SHARD = 64 << 20
_MAX_BATCH = 16 << 20
_TOKEN_LIFETIME = 3600
_CONTENT_TYPE_RE = re.compile(r"^[\x20-\x7e]{1,255}$")  # served back as a header: printable ASCII only


def _base(request: Request) -> str:
    return str(request.base_url).rstrip("/")


def _bucket_id(request: Request) -> str:
    """The bucket a write names: the caller must be a member of its namespace."""
    return f"{namespace_of(request)}/{request.path_params['name']}"


def _missing(request: Request, bucket_id: str) -> HTTPError:
    # As the Hub: a visitor without a token gets a 401 for what it cannot see, a user a 404.
    status = 401 if user_of(request) is None else 404
    return HTTPError(status, f"Bucket {bucket_id!r} not found", {"X-Error-Code": "RepoNotFound"})


def readable(request: Request, bucket_id: str) -> Record:
    """A bucket the caller may read: public, or in one of the caller's namespaces."""
    ctx = ctx_of(request)
    bucket = ctx.store.bucket(bucket_id)
    if bucket is None or (bucket["private"] and not ctx.users.member(user_of(request), bucket_id.split("/")[0])):
        raise _missing(request, bucket_id)
    return bucket


def _bucket(request: Request) -> Record:
    """The bucket of the route, for reading."""
    ns = request.path_params["namespace"]
    if ns == "me":
        ns = ctx_of(request).users.acting_in(user_of(request), ns)
    return readable(request, f"{ns}/{request.path_params['name']}")


def _own_bucket(request: Request) -> Record:
    """The bucket of the route, for writing: 404 if the caller cannot see it, 403 if only read it."""
    bucket = _bucket(request)
    ctx_of(request).users.acting_in(user_of(request), bucket["id"].split("/")[0])
    return bucket


def _bucket_json(ctx: Context, bucket: Record) -> dict[str, Any]:
    size, count = ctx.store.bucket_stats(bucket["id"])
    return {**bucket, "size": size, "totalFiles": count}


def _file_json(f: Record) -> dict[str, Any]:
    mtime = datetime.fromtimestamp(f["mtimeMs"] / 1000, timezone.utc)
    return {
        "type": "file",
        "path": f["path"],
        "size": f["size"],
        "xetHash": f["xetHash"],
        "mtime": iso(mtime),
        "uploadedAt": f["uploadedAt"],
    }


def _page(request: Request, items: list[Any]) -> Response:
    page_size = ctx_of(request).page_size
    cursor = cursor_of(request)
    headers = next_link(request, cursor) if len(items) > cursor + page_size else {}
    return JSONResponse(items[cursor : cursor + page_size], headers=headers)


# -- buckets ----------------------------------------------------------------------------------------
@with_body()
def create_bucket(request: Request, body: bytes) -> Response:
    ctx = ctx_of(request)
    bucket_id = _bucket_id(request)
    options = decode(body, BucketCreate, "bucket settings")
    check_path(request.path_params["name"], "bucket name")
    if options.visibility not in (None, "private", "public"):
        raise bad_request(f"Invalid visibility {options.visibility!r}: use 'private' or 'public'")
    private = options.visibility == "private" if options.visibility else bool(options.private)
    url = f"{_base(request)}/buckets/{bucket_id}"
    bucket = {"id": bucket_id, "private": private, "createdAt": iso(ctx.clock.now())}
    if not ctx.store.put_bucket(bucket):
        # `create_bucket(exist_ok=True)` swallows the 409 and still reads `url` from its body.
        return JSONResponse({"error": f"Bucket {bucket_id!r} already exists", "url": url}, status_code=409)
    return JSONResponse({"url": url, "id": bucket_id, "name": request.path_params["name"]})


def bucket_item(request: Request) -> Response:
    ctx = ctx_of(request)
    if request.method == "DELETE":
        bucket = _own_bucket(request)
        ctx.store.delete_bucket(bucket["id"])
        return JSONResponse({})
    bucket = _bucket(request)
    return JSONResponse(_bucket_json(ctx, bucket))


async def no_namespace(request: Request) -> Response:
    # `DELETE /api/buckets/{name}`: a bucket id always has a namespace.
    raise not_found(f"Bucket {request.path_params['namespace']!r} not found: use namespace/name", code="RepoNotFound")


def list_buckets(request: Request) -> Response:
    ctx = ctx_of(request)
    ns, user = request.path_params["namespace"], user_of(request)
    if ns == "me":
        ns = ctx.users.acting_in(user, ns)
    if not ctx.users.known(ns):
        # Also what `GET /api/buckets/{name}` (an id without namespace) gets, as on the Hub.
        raise not_found(f"No user or organization {ns!r}", code="RepoNotFound")
    search = request.query_params.get("search", "")
    member = ctx.users.member(user, ns)

    def listing() -> list[dict[str, Any]]:
        found = ctx.store.buckets(ns)
        return [_bucket_json(ctx, b) for b in found if search in b["id"] and (member or not b["private"])]

    return _page(request, listing())


@with_body()
def bucket_settings(request: Request, body: bytes) -> Response:
    ctx = ctx_of(request)
    bucket = _own_bucket(request)
    settings = json_object(body, "bucket settings")
    if not isinstance(settings, dict) or not isinstance(settings.get("private", False), bool):
        raise bad_request('Bucket settings must be an object such as {"private": true}')
    bucket["private"] = settings.get("private", bucket["private"])
    ctx.store.update_bucket(bucket)
    return JSONResponse({})


@with_body()
def move_repo(request: Request, body: bytes) -> Response:
    """`POST /api/repos/move` for buckets (rename, or transfer to another namespace of the caller)."""
    ctx = ctx_of(request)
    move = decode(body, RepoMove, "move request")
    if move.type != "bucket":
        raise bad_request(f"The emulator serves buckets only; it cannot move a {move.type} repository")
    for repo_id in (move.from_repo, move.to_repo):
        if repo_id.count("/") != 1:
            raise bad_request(f"Invalid repository id {repo_id!r}: use namespace/name")
        check_path(repo_id, "repository id")
    user = user_of(request)
    bucket = readable(request, move.from_repo)
    ctx.users.acting_in(user, bucket["id"].split("/")[0])
    ctx.users.acting_in(user, move.to_repo.split("/")[0])
    if not ctx.store.move_bucket(move.from_repo, move.to_repo):
        raise HTTPError(409, f"Bucket {move.to_repo!r} already exists")
    return JSONResponse({})


def xet_token_route(request: Request) -> Response:
    ctx = ctx_of(request)
    write = request.url.path.endswith("/xet-write-token")
    _own_bucket(request) if write else _bucket(request)
    cas = f"{_base(request)}/cas/{ctx.instance}"
    exp = int(time.time()) + _TOKEN_LIFETIME
    token = ctx.xet_token("write" if write else "read")
    # hf_xet reads the JSON body; huggingface_hub's repo helpers read the headers.
    return JSONResponse(
        {"accessToken": token, "exp": exp, "casUrl": cas},
        headers={"X-Xet-Cas-Url": cas, "X-Xet-Access-Token": token, "X-Xet-Token-Expiration": str(exp)},
    )


@with_body(_MAX_BATCH)
def batch(request: Request, body: bytes) -> Response:
    ctx = ctx_of(request)
    bucket = _own_bucket(request)
    lines = [line for line in (body).splitlines() if line.strip()]
    if len(lines) > 1000:
        raise bad_request(f"A batch holds at most 1000 operations, got {len(lines)}")
    ops = []
    for line in lines:
        try:
            op = msgspec.json.decode(line, type=BatchOp)
        except (msgspec.ValidationError, msgspec.DecodeError) as e:
            raise bad_request(f"Invalid batch operation {line[:200]!r}: {e}") from None
        check_path(op.path, "file path")
        if op.type not in ("addFile", "copyFile", "deleteFile"):
            raise bad_request(f"Unknown batch operation type {op.type!r}: use addFile, copyFile or deleteFile")
        if op.content_type is not None and not _CONTENT_TYPE_RE.match(op.content_type):
            raise bad_request(f"Invalid contentType {op.content_type[:100]!r}: expected a MIME type such as text/plain")
        if op.type == "copyFile":
            # Only files the caller can read in the named source: a hash alone is no permission.
            if op.source_repo_type != "bucket" or not op.source_repo_id:
                raise bad_request("copyFile needs sourceRepoType 'bucket' and a sourceRepoId (repos are not served)")
            readable(request, op.source_repo_id)
        ops.append(op)

    def apply() -> list[dict[str, str]]:
        failed, now = [], iso(ctx.clock.now())
        added: list[str] = []
        for op in ops:
            if op.type == "deleteFile":
                ctx.store.delete_file(bucket["id"], op.path)
                continue
            size = ctx.storage.file_size(op.xet_hash or "")
            if op.type == "copyFile" and not ctx.store.has_hash(op.source_repo_id or "", op.xet_hash or ""):
                size = None
            if size is None:
                where = f" in {op.source_repo_id!r}" if op.type == "copyFile" else ": upload its content first"
                failed.append({"path": op.path, "error": f"Unknown xetHash {op.xet_hash!r}{where}"})
                continue
            mtime = op.mtime if op.mtime is not None else int(time.time() * 1000)
            ctx.store.put_file(bucket["id"], op.path, op.xet_hash or "", size, mtime, now, op.content_type)
            added.append(op.path)
        if added:  # running jobs' read-only mounts of this bucket follow its changes (a run's lease)
            ctx.runtime.bucket_changed(bucket["id"], added)
        return failed

    failed = apply()
    status = 422 if failed and len(failed) == len(lines) else 200
    return JSONResponse({"success": not failed, "processed": len(lines), "failed": failed}, status_code=status)


@with_body()
def paths_info(request: Request, body: bytes) -> Response:
    ctx = ctx_of(request)
    bucket = _bucket(request)
    paths = decode(body, PathsRequest, "paths-info request").paths
    if len(paths) > 1000:
        raise bad_request(f"At most 1000 paths per request, got {len(paths)}")
    wanted = [check_path(p.strip("/"), "path") for p in paths]
    found = [ctx.store.file(bucket["id"], p) for p in wanted]
    return JSONResponse([_file_json(f) for f in found if f is not None])


def tree_entries(files: list[Record], prefix: str, recursive: bool) -> list[dict[str, Any]]:
    """A listing as the Hub makes it from the files whose path starts with `prefix` (as plain text).

    Recursive: the files. Otherwise one level below the prefix: files, and a folder entry for each
    sub-folder (listing `logs` also shows `logs.json` and the folder `logs_backup`, as on the Hub).
    """
    if recursive:
        return [_file_json(f) for f in files]
    items: list[dict[str, Any]] = []
    folders: dict[str, str] = {}
    for f in files:
        rest = f["path"][len(prefix) :]
        skip = 1 if rest.startswith("/") else 0  # `logs` lists what is inside the folder `logs`
        cut = rest.find("/", skip)
        if cut < 0:
            items.append(_file_json(f))
        else:
            folder = f["path"][: len(prefix) + cut]
            folders[folder] = max(folders.get(folder, ""), f["uploadedAt"])
    items += [{"type": "directory", "path": d, "uploadedAt": at} for d, at in folders.items()]
    return sorted(items, key=lambda item: str(item["path"]))


def tree(request: Request) -> Response:
    ctx = ctx_of(request)
    bucket = _bucket(request)
    prefix = request.path_params.get("prefix", "").lstrip("/")
    if "\x00" in prefix:
        raise bad_request("Invalid prefix: it contains a NUL character")
    # No `recursive` parameter lists recursively, as the Hub does.
    recursive = request.query_params.get("recursive", "true").lower() != "false"
    files = ctx.store.files(bucket["id"], prefix)
    return _page(request, tree_entries(files, prefix, recursive))


def resolve(request: Request) -> Response:
    ctx = ctx_of(request)
    bucket_id = f"{request.path_params['namespace']}/{request.path_params['name']}"
    readable(request, bucket_id)
    path = check_path(request.path_params["path"], "file path")
    f = ctx.store.file(bucket_id, path)
    if f is None:
        raise not_found(f"File {path!r} not found in bucket {bucket_id!r}", code="EntryNotFound")
    refresh = f"{_base(request)}/api/buckets/{bucket_id}/xet-read-token"
    headers = {
        "X-Xet-Hash": f["xetHash"],
        "X-Xet-Refresh-Route": refresh,  # absolute: only a https://huggingface.co prefix would be rewritten
        "Link": f'<{refresh}>; rel="xet-auth"',
        "ETag": f'"{f["xetHash"]}"',
        "X-Linked-Size": str(f["size"]),
        "Accept-Ranges": "bytes",
        "Content-Type": f.get("contentType") or "application/octet-stream",
    }
    if request.method == "HEAD":
        return Response(headers={**headers, "Content-Length": str(f["size"])})
    first, last = parse_range(request.headers.get("range"), f["size"])

    def read() -> bytes:
        out = io.BytesIO()
        ctx.storage.write_file(f["xetHash"], out, first, last)
        return out.getvalue()

    data = read()
    if request.headers.get("range") and f["size"]:  # a Range on an empty file is ignored: 200, no bytes
        headers["Content-Range"] = f"bytes {first}-{last}/{f['size']}"
        return Response(data, status_code=206, headers=headers)
    return Response(data, headers=headers)


# -- Xet CAS ----------------------------------------------------------------------------------------
def _cas(request: Request, write: bool = False) -> Context:
    """The CAS checks Xet tokens: uploads need the write token, which only a bucket's writers get."""
    ctx = ctx_of(request)
    if request.path_params["instance"] != ctx.instance:
        raise HTTPError(404, "Unknown CAS instance: this emulator was started on another state directory")
    sent = request.headers.get("authorization", "").encode()
    kinds = ("write",) if write else ("read", "write")
    if not any(secrets.compare_digest(sent, f"Bearer {ctx.xet_token(kind)}".encode()) for kind in kinds):
        raise HTTPError(401, f"Invalid or missing Xet {'write' if write else 'access'} token")
    return ctx


async def cas_not_found(request: Request) -> Response:
    # Global dedup, xorb grants and the v2 protocols are not offered: 404 makes hf_xet fall back to v1.
    return Response(status_code=404)


@with_body(_MAX_XORB)
def put_xorb(request: Request, body: bytes) -> Response:
    ctx = _cas(request, write=True)
    data = body
    inserted = ctx.storage.put_xorb(request.path_params["hash"], data)
    return JSONResponse({"was_inserted": inserted})


@with_body(_MAX_SHARD)
def put_shard(request: Request, body: bytes) -> Response:
    ctx = _cas(request, write=True)
    data = body
    ctx.storage.put_shard(data)
    return JSONResponse({"result": 1})


def reconstruction(request: Request) -> Response:
    ctx = _cas(request)
    fetch_url = f"{_base(request)}/cas/{ctx.instance}/fetch"
    plan = ctx.storage.reconstruction(
        request.path_params["hash"],
        request.headers.get("range"),
        fetch_url,
        lambda xorb: fetch_signature(ctx, xorb),
    )
    return JSONResponse(plan)


def fetch_signature(ctx: Context, xorb: str) -> str:
    return hashlib.sha256(f"{ctx.token}:fetch:{xorb}".encode()).hexdigest()[:32]


def fetch_xorb(request: Request) -> Response:
    # hf_xet sends no token to fetch URLs (they are presigned on the Hub): the signature is in the URL.
    ctx = ctx_of(request)
    xorb = request.path_params["hash"]
    if not secrets.compare_digest(request.query_params.get("sig", "").encode(), fetch_signature(ctx, xorb).encode()):
        raise HTTPError(403, "Invalid or missing signature on the xorb URL")
    rng = request.headers.get("range")
    if not rng:
        raise bad_request("Xorb reads need a Range header")
    data, first, size = ctx.storage.xorb_range(xorb, rng)
    return Response(
        data,
        status_code=206,
        media_type="application/octet-stream",
        headers={"Content-Range": f"bytes {first}-{first + len(data) - 1}/{size}"},
    )


async def no_repos(request: Request) -> Response:
    # Model, dataset and Space repos are not emulated: each one "does not exist", with the Hub's code,
    # so clients treat it as a missing repo (a FileNotFoundError in HfFileSystem), not a broken server.
    raise not_found("The emulator serves buckets only: no model, dataset or Space repository exists", "RepoNotFound")


async def telemetry(request: Request) -> Response:
    await drain(request)
    return JSONResponse({})


def routes() -> list[Route]:
    bucket = "/api/buckets/{namespace}/{name}"
    cas = "/cas/{instance}"
    return [
        Route("/api/buckets/{namespace}", list_buckets, methods=["GET"]),
        Route("/api/buckets/{namespace}", no_namespace, methods=["DELETE"]),
        Route("/api/repos/move", move_repo, methods=["POST"]),
        Route(bucket, create_bucket, methods=["POST"]),
        Route(bucket, bucket_item, methods=["GET", "DELETE"]),
        Route(f"{bucket}/settings", bucket_settings, methods=["PUT"]),
        Route(f"{bucket}/xet-write-token", xet_token_route, methods=["GET"]),
        Route(f"{bucket}/xet-read-token", xet_token_route, methods=["GET"]),
        Route(f"{bucket}/batch", batch, methods=["POST"]),
        Route(f"{bucket}/paths-info", paths_info, methods=["POST"]),
        Route(f"{bucket}/tree", tree, methods=["GET"]),
        Route(bucket + "/tree/{prefix:path}", tree, methods=["GET"]),
        Route("/buckets/{namespace}/{name}/resolve/{path:path}", resolve, methods=["GET", "HEAD"]),
        Route(cas + "/v1/xorbs/{prefix}/{hash}", put_xorb, methods=["POST"]),
        Route(cas + "/v1/shards", put_shard, methods=["POST"]),
        Route(cas + "/v1/reconstructions/{hash}", reconstruction, methods=["GET"]),
        Route(cas + "/fetch/{hash}", fetch_xorb, methods=["GET"]),
        Route(cas + "/{rest:path}", cas_not_found, methods=["GET", "POST", "PUT", "HEAD"]),
        Route("/v1/telemetry", telemetry, methods=["POST"]),
        *(
            Route(f"/api/{kind}/{{rest:path}}", no_repos, methods=["GET", "HEAD"])
            for kind in ("models", "datasets", "spaces")
        ),
    ]
