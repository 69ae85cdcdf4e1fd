"""Exposed ports: a job's server reached through `status.exposeUrls`, with the Hub's auth rule.

Real jobs (local processes) serve HTTP and WebSocket on loopback; the client is httpx / websockets /
the `hf` CLI, as a user's would be. Every wait is a poll with a deadline.
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import httpx
import pytest
import websockets
from helpers import Lines, poll, subprocess_env, wait_stage
from huggingface_hub import HfApi
from huggingface_hub.errors import HfHubHTTPError

from hfremote.emulator import Emulator

# A tiny HTTP server (standard library): GET echoes the path and headers it got, POST the body too;
# /events streams three server-sent events one at a time.
HTTP_SERVER = textwrap.dedent(
    """
    import asyncio, json, sys

    async def serve(reader, writer):
        head = (await reader.readuntil(b"\\r\\n\\r\\n")).decode("latin-1").split("\\r\\n")
        method, path, _ = head[0].split(" ")
        headers = {k.lower(): v for k, v in (line.split(": ", 1) for line in head[1:] if line)}
        body = await reader.readexactly(int(headers.get("content-length", "0")))
        if path.startswith("/forever"):
            writer.write(b"HTTP/1.1 200 OK\\r\\ncontent-type: text/event-stream\\r\\n\\r\\n")
            try:
                while True:
                    writer.write(b"data: more\\n\\n")
                    await writer.drain()
                    await asyncio.sleep(0.05)
            except ConnectionError:
                print("client left", flush=True)
                return
        if path.startswith("/events"):
            writer.write(b"HTTP/1.1 200 OK\\r\\ncontent-type: text/event-stream\\r\\nconnection: close\\r\\n\\r\\n")
            for i in range(3):
                writer.write(f"data: tick {i}\\n\\n".encode())
                await writer.drain()
                await asyncio.sleep(0.2)
        else:
            out = json.dumps({"method": method, "path": path, "headers": headers, "size": len(body)}).encode()
            writer.write(b"HTTP/1.1 200 OK\\r\\ncontent-type: application/json\\r\\nconnection: close\\r\\n")
            writer.write(f"content-length: {len(out)}\\r\\n\\r\\n".encode() + out)
            await writer.drain()
        writer.close()

    async def main():
        server = await asyncio.start_server(serve, "127.0.0.1", int(sys.argv[1]))
        async with server:
            await server.serve_forever()

    asyncio.run(main())
    """
)
# A WebSocket echo server.
WS_SERVER = textwrap.dedent(
    """
    import asyncio, sys
    from websockets.asyncio.server import serve

    async def echo(ws):
        async for message in ws:
            await ws.send(message)

    async def main():
        async with serve(echo, "127.0.0.1", int(sys.argv[1])) as server:
            await server.serve_forever()

    asyncio.run(main())
    """
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def two_users(tmp_path: Path) -> Emulator:
    # Host processes: the servers are scripts in the test's folder, run with this environment's Python (one
    # needs its websockets package); the exposed-port test below runs in the sandbox with `python -m http.server`.
    emu = Emulator(
        tmp_path / "state",
        token="hf_alice_token_123",
        user="alice",
        users=(("bob", "hf_bob_token_456"),),
        sandbox="off",
    )
    with emu:
        yield emu


def start_server_job(api: HfApi, tmp_path: Path, port: int, public: bool = False, source: str = HTTP_SERVER) -> str:
    script = tmp_path / f"server_{port}.py"
    script.write_text(source)
    job = api.run_job(
        image="python:3.12",
        command=[sys.executable, str(script), str(port)],
        expose=None if public else [port],
        expose_public=[port] if public else None,
    )
    assert job.status.expose_urls is not None  # known at creation: the CLI prints it at once
    wait_stage(api, job.id, job.owner.name, stages=("RUNNING",), timeout=30)
    return job.id


def reachable(url: str, **kwargs: object) -> httpx.Response | None:
    try:
        response = httpx.get(url, timeout=5, **kwargs)  # type: ignore[arg-type]
    except httpx.HTTPError:
        return None
    return None if response.status_code == 502 else response


def test_private_port_needs_a_token_of_the_namespace(two_users: Emulator, tmp_path: Path) -> None:
    alice = HfApi(endpoint=two_users.endpoint, token="hf_alice_token_123")
    port = free_port()
    job_id = start_server_job(alice, tmp_path, port)
    (url,) = alice.inspect_job(job_id=job_id).status.expose_urls or []
    assert url == f"{two_users.endpoint}/_proxy/{job_id}--{port}/"

    token = {"Authorization": "Bearer hf_alice_token_123"}
    answer = poll(lambda: reachable(f"{url}some/path?x=1", headers={**token, "X-Mine": "yes"}), what="the job's server")
    assert answer.status_code == 200
    echoed = answer.json()
    assert echoed["path"] == "/some/path?x=1" and echoed["headers"]["x-mine"] == "yes"
    assert "authorization" not in echoed["headers"]  # the Hub token never reaches the job
    assert echoed["headers"]["x-forwarded-prefix"] == f"/_proxy/{job_id}--{port}"

    # The host form (for browsers, which resolve *.localhost to loopback) reaches the same server at "/".
    host = f"{job_id}--{port}.localhost:{two_users.port}"
    by_host = httpx.get(f"{two_users.endpoint}/x?y=2", headers={**token, "Host": host}, timeout=5)
    assert by_host.status_code == 200 and by_host.json()["path"] == "/x?y=2"

    # No token: 401; another user's token (not a member of alice's namespace): 404, as for a private repo.
    assert httpx.get(url, timeout=5).status_code == 401
    assert httpx.get(url, headers={"Authorization": "Bearer hf_bob_token_456"}, timeout=5).status_code == 404

    # Bodies stream both ways: a POST body arrives whole, server-sent events arrive one by one.
    posted = httpx.post(f"{url}upload", content=b"x" * 3_000_000, headers=token, timeout=10).json()
    assert (posted["method"], posted["size"]) == ("POST", 3_000_000)
    with httpx.stream("GET", f"{url}events", headers=token, timeout=10) as events:
        lines = [line for line in events.iter_lines() if line]
    assert lines == ["data: tick 0", "data: tick 1", "data: tick 2"]
    # A client that leaves an endless stream: the proxy lets go of the job's connection too.
    with httpx.stream("GET", f"{url}forever", headers=token, timeout=10) as endless:
        assert next(endless.iter_lines()) == "data: more"
    poll(lambda: "client left" in list(alice.fetch_job_logs(job_id=job_id)), 60, what="the job to see the client leave")

    # Once the job ends its port is no longer served.
    alice.cancel_job(job_id=job_id)
    wait_stage(alice, job_id, "alice", stages=("CANCELED",), timeout=30)
    assert httpx.get(url, headers=token, timeout=5).status_code == 503


def test_websocket_upgrades_are_relayed(two_users: Emulator, tmp_path: Path) -> None:
    alice = HfApi(endpoint=two_users.endpoint, token="hf_alice_token_123")
    port = free_port()
    job_id = start_server_job(alice, tmp_path, port, source=WS_SERVER)
    (url,) = alice.inspect_job(job_id=job_id).status.expose_urls or []
    ws_url = url.replace("http://", "ws://") + "chat"
    token = {"Authorization": "Bearer hf_alice_token_123"}

    async def echo() -> list[str | bytes]:
        async with websockets.connect(ws_url, additional_headers=token, open_timeout=10) as ws:
            await ws.send("hello")
            await ws.send(b"\x00\x01")
            return [await ws.recv(), await ws.recv()]

    def attempt() -> list[str | bytes] | None:
        try:
            return asyncio.run(echo())
        except (OSError, websockets.WebSocketException):
            return None  # the job's server is not listening yet

    assert poll(attempt, what="the WebSocket echo") == ["hello", b"\x00\x01"]

    async def anonymous() -> None:
        async with websockets.connect(ws_url, open_timeout=10):
            pass

    with pytest.raises(websockets.InvalidStatus) as refused:
        asyncio.run(anonymous())
    assert refused.value.response.status_code == 401
    alice.cancel_job(job_id=job_id)


def test_public_port_needs_no_token(two_users: Emulator, tmp_path: Path) -> None:
    alice = HfApi(endpoint=two_users.endpoint, token="hf_alice_token_123")
    port = free_port()
    job_id = start_server_job(alice, tmp_path, port, public=True)
    (url,) = alice.inspect_job(job_id=job_id).status.expose_urls or []
    answer = poll(lambda: reachable(f"{url}hi"), what="the job's public server")
    assert answer.status_code == 200 and answer.json()["path"] == "/hi"
    alice.cancel_job(job_id=job_id)


def test_a_job_exposing_a_held_port_waits(api: HfApi, emulator: Emulator, tmp_path: Path) -> None:
    """Jobs share the host network: the second job exposing a port waits until the first one ends."""
    port = free_port()
    first = api.run_job(image="python:3.12", command=["python", "-c", "import time; time.sleep(60)"], expose=[port])
    wait_stage(api, first.id, emulator.user, stages=("RUNNING",), timeout=30)
    second = api.run_job(image="python:3.12", command=["python", "-c", "print('second')"], expose=[port])
    other = api.run_job(image="python:3.12", command=["python", "-c", "print('other')"], expose=[port + 1])
    wait_stage(api, other.id, emulator.user, stages=("COMPLETED",), timeout=60)  # a free port does not wait
    assert api.inspect_job(job_id=second.id).status.stage == "SCHEDULING"
    # Exposing the held port on another running job is refused too.
    third = api.run_job(image="python:3.12", command=["python", "-c", "import time; time.sleep(60)"])
    wait_stage(api, third.id, emulator.user, stages=("RUNNING",), timeout=30)
    with pytest.raises(HfHubHTTPError) as refused:
        api.update_job_expose(job_id=third.id, expose=[port])
    assert refused.value.response.status_code == 409
    api.cancel_job(job_id=third.id)
    api.cancel_job(job_id=first.id)
    wait_stage(api, second.id, emulator.user, stages=("COMPLETED",), timeout=60)


def test_hf_jobs_run_expose_prints_a_url_that_serves_the_listing(emulator: Emulator, tmp_path: Path) -> None:
    port = free_port()
    hf = Path(sys.executable).with_name("hf")
    env = subprocess_env(emulator, tmp_path / "home")
    proc = subprocess.Popen(
        [str(hf), "jobs", "run", "--expose", str(port), "python:3.12", "python", "-m", "http.server", str(port)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert proc.stdout is not None
        lines = Lines(proc.stdout)
        url = lines.wait_for(r"(http://[^\s\x1b]+/_proxy/[^\s\x1b]+)", timeout=60).group(1)
        token = {"Authorization": f"Bearer {emulator.token}"}
        listing = poll(lambda: reachable(url, headers=token), timeout=30, what="http.server's listing")
        assert listing.status_code == 200 and "Directory listing for /" in listing.text
    finally:
        for job in emulator.jobs(stages=["SCHEDULING", "RUNNING"]):
            HfApi(endpoint=emulator.endpoint, token=emulator.token).cancel_job(job_id=job["id"])
        proc.terminate()
        proc.wait(30)
