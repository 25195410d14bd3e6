"""The ws-broadcast load generator: its own process, pinned to the load core.

    python -m benchmarks.scenarios.wsload broadcast --port P --server-pid PID [...]
    python -m benchmarks.scenarios.wsload idle --port P --server-pid PID [...]

``broadcast``: ``--clients`` members join one room of ``examples/chat``; the first
``--senders`` of them post, each keeping ``--window`` of its own messages in
flight (sent, not yet seen back in the broadcast), so the room always has work.
Deliveries are the chat messages received by all clients; the server's CPU time
over the same window comes from ``/proc/PID/stat``.  At the end every client must
have received every message, all clients the same sequence (a CRC chained over
the payloads), and one client's sequence is checked in full: each sender's
messages complete and in order, timestamps strictly increasing.

``idle``: opens ``--connections`` sockets to one room without joining (each is
accepted for hibernation), waits until the stats endpoint reports no live object
(the room was evicted), and reports the server's RSS before and after.  Then a
``ping`` is answered ``pong`` without waking the room, and one late join wakes it.

Prints one JSON object on its last line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import statistics
import sys
import time
import urllib.request
import zlib
from collections import deque
from typing import Any

import uvloop

from ..harness import cpu_seconds
from .wsclient import Client, connect

CHAT_PREFIX = b'{"name": '


def raise_fd_limit() -> None:
    """Allow as many open files as the hard limit does (10,000 sockets need it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def source_address(index: int) -> str:
    """A distinct loopback address per client (Linux routes all of 127/8 to lo)."""
    return f"127.0.{1 + index // 250}.{1 + index % 250}"


# -- broadcast ---------------------------------------------------------------------------


class Member:
    """One room member's view: counts, a CRC of the sequence, its own messages' echoes."""

    def __init__(self, index: int, run: Broadcast, *, keep: bool) -> None:
        self.index = index
        self.name = f"c{index}"
        self.run = run
        self.count = 0
        self.crc = 0
        self.kept: list[bytes] | None = [] if keep else None
        self.own_prefix = f'{{"name": "{self.name}", '.encode()
        self.sent = 0
        self.sent_at: deque[float] = deque()
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.client: Client | None = None

    def on_text(self, payload: bytes) -> None:
        if not payload.startswith(CHAT_PREFIX):
            if payload == b'{"ready": true}' and not self.ready.done():
                self.ready.set_result(None)
            elif payload.startswith(b'{"error"'):
                self.run.errors.append(payload.decode())
            return
        self.count += 1
        self.run.deliveries += 1
        self.crc = zlib.crc32(payload, self.crc)
        if self.kept is not None:
            self.kept.append(payload)
        if self.sent_at and payload.startswith(self.own_prefix):
            now = time.perf_counter()
            if self.run.measuring:
                self.run.latencies.append(now - self.sent_at.popleft())
            else:
                self.sent_at.popleft()
            if self.run.sending:
                self.post()

    def post(self) -> None:
        assert self.client is not None
        self.client.send_text(f'{{"message": "m{self.sent}"}}'.encode())
        self.sent += 1
        self.sent_at.append(time.perf_counter())


class Broadcast:
    def __init__(self) -> None:
        self.deliveries = 0
        self.sending = False
        self.measuring = False
        self.latencies: list[float] = []
        self.errors: list[str] = []


async def broadcast(args: argparse.Namespace) -> dict[str, Any]:
    run = Broadcast()
    # The checker keeps every payload; it is the last member, not a sender.
    members = [Member(i, run, keep=i == args.clients - 1) for i in range(args.clients)]
    path = f"/api/room/{args.room}/websocket"
    for member in members:  # one by one: each join is answered before the next
        member.client = await connect(
            "127.0.0.1",
            args.port,
            path,
            on_text=member.on_text,
            local_host=source_address(member.index),
        )
        member.client.send_text(json.dumps({"name": member.name}).encode())
        await asyncio.wait_for(member.ready, 30)
    await asyncio.sleep(0.2)  # let the last "joined" broadcasts land

    senders = members[: args.senders]
    run.sending = True
    for sender in senders:
        for _ in range(args.window):
            sender.post()
    await asyncio.sleep(args.warmup)
    run.measuring = True
    start_deliveries, start_cpu, start = (
        run.deliveries,
        cpu_seconds(args.server_pid),
        time.perf_counter(),
    )
    start_own = time.process_time()
    await asyncio.sleep(args.seconds)
    end_deliveries, end_cpu, end = run.deliveries, cpu_seconds(args.server_pid), time.perf_counter()
    own_cpu = time.process_time() - start_own
    run.measuring = False
    run.sending = False

    total = sum(s.sent for s in senders)
    deadline = time.monotonic() + 60
    while any(m.count < total for m in members) and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.2)  # anything beyond `total` would be a duplicate: let it show

    problems = _verify(members, senders, total)
    problems.extend(run.errors[:5])
    for member in members:
        assert member.client is not None and member.client.transport is not None
        member.client.transport.close()

    elapsed = end - start
    deliveries = end_deliveries - start_deliveries
    cpu = end_cpu - start_cpu
    lat = sorted(run.latencies)
    return {
        "deliveries_per_s": deliveries / elapsed,
        "messages_per_s": deliveries / elapsed / args.clients,
        "server_cpu_share": cpu / elapsed,
        "load_cpu_share": own_cpu / elapsed,
        "deliveries_per_cpu_s": deliveries / cpu if cpu else float("nan"),
        "latency_p50_ms": 1000 * statistics.median(lat) if lat else float("nan"),
        "latency_p99_ms": 1000 * lat[int(0.99 * (len(lat) - 1))] if lat else float("nan"),
        "messages_sent": total,
        "clients": args.clients,
        "senders": args.senders,
        "problems": problems,
    }


def _verify(members: list[Member], senders: list[Member], total: int) -> list[str]:
    problems = []
    counts = {m.count for m in members}
    if counts != {total}:
        short = [m.name for m in members if m.count != total][:5]
        problems.append(f"{total} messages posted, but clients received {sorted(counts)} ({short})")
    if len({m.crc for m in members}) != 1:
        problems.append("clients received different sequences")
    checker = members[-1]
    assert checker.kept is not None
    last_ts = -1
    next_seq = {s.name: 0 for s in senders}
    for payload in checker.kept:
        message = json.loads(payload)
        if message["timestamp"] <= last_ts:
            problems.append(f"timestamp {message['timestamp']} after {last_ts}")
            break
        last_ts = message["timestamp"]
        name, seq = message["name"], int(message["message"][1:])
        if next_seq.get(name) != seq:
            problems.append(f"{name}: message {seq} where {next_seq.get(name)} was due")
            break
        next_seq[name] = seq + 1
    missing = {s.name: s.sent - next_seq[s.name] for s in senders if next_seq[s.name] != s.sent}
    if missing:
        problems.append(f"messages never broadcast: {missing}")
    return problems


# -- idle -------------------------------------------------------------------------------------


def _stats(port: int, path: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
        stats: dict[str, Any] = json.loads(response.read())
    return stats


async def _wait_evicted(port: int, path: str, limit: float) -> tuple[float, dict[str, Any]]:
    start = time.monotonic()
    while True:
        stats = await asyncio.to_thread(_stats, port, path)
        if stats["runtime"]["live_objects"] == 0:
            return time.monotonic() - start, stats
        if time.monotonic() - start > limit:
            raise RuntimeError(f"objects still live after {limit} s: {stats}")
        await asyncio.sleep(0.25)


async def idle(args: argparse.Namespace) -> dict[str, Any]:
    path = f"/api/room/{args.room}/websocket"
    # Warm the server first (imports, the room's storage, free lists), then forget it.
    warm = [await connect("127.0.0.1", args.port, path) for _ in range(50)]
    for client in warm:
        assert client.transport is not None
        client.transport.close()
    await asyncio.gather(*(c.closed for c in warm))
    await _wait_evicted(args.port, args.stats, 120)
    rss_before = rss_bytes(args.server_pid)

    clients: list[Client] = []
    opened = time.perf_counter()
    for start in range(0, args.connections, 250):
        batch = range(start, min(start + 250, args.connections))
        clients += await asyncio.gather(
            *(connect("127.0.0.1", args.port, path, local_host=source_address(i)) for i in batch)
        )
    open_seconds = time.perf_counter() - opened
    rss_open = rss_bytes(args.server_pid)
    waited, stats = await _wait_evicted(args.port, args.stats, 120)
    await asyncio.sleep(1.0)  # let the sweep's garbage go
    rss_after = rss_bytes(args.server_pid)

    # A hibernated room still answers: ping is auto-answered without waking it...
    pongs: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
    probe = clients[len(clients) // 2]

    def on_pong(payload: bytes) -> None:
        if not pongs.done():
            pongs.set_result(payload)

    probe.on_text = on_pong
    probe.send_text(b"ping")
    pong = await asyncio.wait_for(pongs, 10)
    after_ping = await asyncio.to_thread(_stats, args.port, args.stats)
    still_evicted = after_ping["runtime"]["live_objects"]
    # ... and a join wakes it, and it sees every member.
    ready: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
    late = clients[-1]

    def on_ready(payload: bytes) -> None:
        if payload == b'{"ready": true}' and not ready.done():
            ready.set_result(payload)

    late.on_text = on_ready
    late.send_text(b'{"name": "late"}')
    await asyncio.wait_for(ready, 30)
    for client in clients:
        assert client.transport is not None
        client.transport.close()
    problems = []
    if pong != b"pong":
        problems.append(f"ping answered {pong!r}")
    if still_evicted:
        problems.append("the auto-response woke an object")
    hibernated = stats["websockets"]["hibernatable"]
    if hibernated != args.connections:
        problems.append(f"{hibernated} hibernatable sockets, expected {args.connections}")
    return {
        "connections": args.connections,
        "rss_before_mib": rss_before / 2**20,
        "rss_open_mib": rss_open / 2**20,
        "rss_after_mib": rss_after / 2**20,
        "rss_per_connection_kib": (rss_after - rss_before) / args.connections / 1024,
        "open_seconds": open_seconds,
        "eviction_wait_s": waited,
        "live_objects_after": stats["runtime"]["live_objects"],
        "hibernatable": hibernated,
        "problems": problems,
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="wsload")
    parser.add_argument("mode", choices=["broadcast", "idle"])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--server-pid", type=int, required=True)
    parser.add_argument("--room", default="bench")
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--senders", type=int, default=20)
    parser.add_argument("--window", type=int, default=2)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--connections", type=int, default=10_000)
    parser.add_argument("--stats", default="/_roost/stats")
    args = parser.parse_args()
    raise_fd_limit()
    result = uvloop.run(broadcast(args) if args.mode == "broadcast" else idle(args))
    sys.stdout.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
