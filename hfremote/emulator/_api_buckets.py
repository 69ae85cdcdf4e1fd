"""HTTP routes for Buckets and the Xet CAS data plane that stores their bytes."""

from __future__ import annotations

import hashlib
import io
import time
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import msgspec
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ._api_jobs import body_of, ctx_of, cursor_of, namespace_of, next_link
from ._specs import BatchOp, BucketCreate, PathsRequest, check_path, decode
from ._store import Record
from ._util import HTTPError, bad_request, iso, json_object, not_found
from ._xet import parse_range

if TYPE_CHECKING:
    from ._server import Context

_MAX_XORB = 128 << 20
_MAX_SHARD = 64 << 20
_MAX_BATCH = 16 << 20
_TOKEN_LIFETIME = 3600


def _base(request: Request) -> str:
    return str(request.base_url).rstrip("/")


def _bucket_id(request: Request) -> str:
    return f"{namespace_of(request)}/{request.path_params['name']}"


def _bucket(request: Request) -> Record:
    bucket_id = _bucket_id(request)
    bucket = ctx_of(request).store.bucket(bucket_id)
    if bucket is None:
        raise not_found(f"Bucket {bucket_id!r} not found", code="RepoNotFound")
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
async def create_bucket(request: Request) -> Response:
    ctx = ctx_of(request)
    bucket_id = _bucket_id(request)
    options = decode(await body_of(request), BucketCreate, "bucket settings")
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


async def bucket_item(request: Request) -> Response:
    ctx = ctx_of(request)
    bucket = _bucket(request)
    if request.method == "DELETE":
        ctx.store.delete_bucket(bucket["id"])
        return JSONResponse({})
    return JSONResponse(_bucket_json(ctx, bucket))


async def list_buckets(request: Request) -> Response:
    ctx = ctx_of(request)
    search = request.query_params.get("search", "")
    buckets = [_bucket_json(ctx, b) for b in ctx.store.buckets(namespace_of(request)) if search in b["id"]]
    return _page(request, buckets)


async def bucket_settings(request: Request) -> Response:
    ctx = ctx_of(request)
    bucket = _bucket(request)
    settings = json_object(await body_of(request), "bucket settings")
    if not isinstance(settings, dict) or not isinstance(settings.get("private", False), bool):
        raise bad_request('Bucket settings must be an object such as {"private": true}')
    bucket["private"] = settings.get("private", bucket["private"])
    ctx.store.update_bucket(bucket)
    return JSONResponse({})


def xet_token(ctx: Context) -> str:
    """Derived, not random: tokens stay valid across a restart on the same state directory."""
    return "xet_" + hashlib.sha256(f"{ctx.token}:{ctx.instance}".encode()).hexdigest()[:40]


async def xet_token_route(request: Request) -> Response:
    ctx = ctx_of(request)
    _bucket(request)
    cas = f"{_base(request)}/cas/{ctx.instance}"
    exp = int(time.time()) + _TOKEN_LIFETIME
    token = xet_token(ctx)
    # hf_xet reads the JSON body; huggingface_hub's repo helpers read the headers.
    return JSONResponse(
        {"accessToken": token, "exp": exp, "casUrl": cas},
        headers={"X-Xet-Cas-Url": cas, "X-Xet-Access-Token": token, "X-Xet-Token-Expiration": str(exp)},
    )


async def batch(request: Request) -> Response:
    ctx = ctx_of(request)
    bucket = _bucket(request)
    lines = [line for line in (await body_of(request, _MAX_BATCH)).splitlines() if line.strip()]
    if len(lines) > 1000:
        raise bad_request(f"A batch holds at most 1000 operations, got {len(lines)}")
    failed = []
    added: list[str] = []
    now = iso(ctx.clock.now())
    for line in lines:
        try:
            op = msgspec.json.decode(line, type=BatchOp)
        except (msgspec.ValidationError, msgspec.DecodeError) as e:
            raise bad_request(f"Invalid batch operation {line[:200]!r}: {e}") from None
        check_path(op.path, "file path")
        if op.type == "deleteFile":
            ctx.store.delete_file(bucket["id"], op.path)
            continue
        if op.type not in ("addFile", "copyFile"):
            raise bad_request(f"Unknown batch operation type {op.type!r}: use addFile, copyFile or deleteFile")
        size = ctx.storage.file_size(op.xet_hash or "")
        if size is None:
            failed.append({"path": op.path, "error": f"Unknown xetHash {op.xet_hash!r}: upload its content first"})
            continue
        mtime = op.mtime if op.mtime is not None else int(time.time() * 1000)
        ctx.store.put_file(bucket["id"], op.path, op.xet_hash or "", size, mtime, now, op.content_type)
        added.append(op.path)
    if added:
        ctx.runtime.bucket_changed(bucket["id"], added)
    status = 422 if failed and len(failed) == len(lines) else 200
    return JSONResponse({"success": not failed, "processed": len(lines), "failed": failed}, status_code=status)


async def paths_info(request: Request) -> Response:
    ctx = ctx_of(request)
    bucket = _bucket(request)
    paths = decode(await body_of(request), PathsRequest, "paths-info request").paths
    if len(paths) > 1000:
        raise bad_request(f"At most 1000 paths per request, got {len(paths)}")
    found = (ctx.store.file(bucket["id"], check_path(p.strip("/"), "path")) for p in paths)
    return JSONResponse([_file_json(f) for f in found if f is not None])


async def tree(request: Request) -> Response:
    ctx = ctx_of(request)
    bucket = _bucket(request)
    prefix = request.path_params.get("prefix", "").strip("/")
    if prefix:
        check_path(prefix, "folder")
    recursive = request.query_params.get("recursive", "false").lower() == "true"
    base = f"{prefix}/" if prefix else ""
    files, dirs, items = ctx.store.files(bucket["id"], base), set(), []
    for f in files:
        rel = f["path"][len(base) :]
        parts = rel.split("/")[:-1]
        if recursive or not parts:
            items.append(_file_json(f))
        for depth in range(1, (len(parts) if recursive else min(1, len(parts))) + 1):
            dirs.add(base + "/".join(parts[:depth]))
    items += [{"type": "directory", "path": d, "uploadedAt": bucket["createdAt"]} for d in sorted(dirs)]
    return _page(request, items)


async def resolve(request: Request) -> Response:
    ctx = ctx_of(request)
    bucket_id = f"{request.path_params['namespace']}/{request.path_params['name']}"
    bucket = ctx.store.bucket(bucket_id)
    if bucket is None or (bucket["private"] and not ctx.authorized(request)):
        raise not_found(f"Bucket {bucket_id!r} not found", code="RepoNotFound")
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

    data = await run_in_threadpool(read)
    if request.headers.get("range") and f["size"]:  # a Range on an empty file is ignored: 200, no bytes
        headers["Content-Range"] = f"bytes {first}-{last}/{f['size']}"
        return Response(data, status_code=206, headers=headers)
    return Response(data, headers=headers)


# -- Xet CAS ----------------------------------------------------------------------------------------
def _cas(request: Request) -> Context:
    ctx = ctx_of(request)
    if request.path_params["instance"] != ctx.instance:
        raise HTTPError(404, "Unknown CAS instance: this emulator was started on another state directory")
    if request.headers.get("authorization") != f"Bearer {xet_token(ctx)}":
        raise HTTPError(401, "Invalid or missing Xet access token")
    return ctx


async def cas_not_found(request: Request) -> Response:
    # Global dedup, xorb grants and the v2 protocols are not offered: 404 makes hf_xet fall back to v1.
    return Response(status_code=404)


async def put_xorb(request: Request) -> Response:
    ctx = _cas(request)
    data = await body_of(request, _MAX_XORB)
    inserted = await run_in_threadpool(ctx.storage.put_xorb, request.path_params["hash"], data)
    return JSONResponse({"was_inserted": inserted})


async def put_shard(request: Request) -> Response:
    ctx = _cas(request)
    data = await body_of(request, _MAX_SHARD)
    await run_in_threadpool(ctx.storage.put_shard, data)
    return JSONResponse({"result": 1})


async def reconstruction(request: Request) -> Response:
    ctx = _cas(request)
    fetch_url = f"{_base(request)}/cas/{ctx.instance}/fetch"
    plan = await run_in_threadpool(
        ctx.storage.reconstruction,
        request.path_params["hash"],
        request.headers.get("range"),
        fetch_url,
        lambda xorb: fetch_signature(ctx, xorb),
    )
    return JSONResponse(plan)


def fetch_signature(ctx: Context, xorb: str) -> str:
    return hashlib.sha256(f"{ctx.token}:fetch:{xorb}".encode()).hexdigest()[:32]


async def fetch_xorb(request: Request) -> Response:
    # hf_xet sends no token to fetch URLs (they are presigned on the Hub): the signature is in the URL.
    ctx = ctx_of(request)
    xorb = request.path_params["hash"]
    if request.query_params.get("sig") != fetch_signature(ctx, xorb):
        raise HTTPError(403, "Invalid or missing signature on the xorb URL")
    rng = request.headers.get("range")
    if not rng:
        raise bad_request("Xorb reads need a Range header")
    first, _, last = rng.partition("=")[2].split(",")[0].partition("-")
    try:
        a, b = int(first), int(last)
    except ValueError:
        raise bad_request(f"Bad Range header {rng!r}") from None
    data, size = await run_in_threadpool(ctx.storage.xorb_range, request.path_params["hash"], a, b)
    return Response(
        data,
        status_code=206,
        media_type="application/octet-stream",
        headers={"Content-Range": f"bytes {a}-{a + len(data) - 1}/{size}"},
    )


async def telemetry(request: Request) -> Response:
    await request.body()
    return JSONResponse({})


def routes() -> list[Route]:
    bucket = "/api/buckets/{namespace}/{name}"
    cas = "/cas/{instance}"
    return [
        Route("/api/buckets/{namespace}", list_buckets, methods=["GET"]),
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
    ]
