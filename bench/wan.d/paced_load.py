#!/usr/bin/env python3
"""Paced SET load for bench/wan: a steady RATE of `SET key:<random> <64 B value>` for SECONDS,
spread over CONNS pipelined RESP connections. redis-benchmark cannot rate-limit, hence this.

Each connection runs a token bucket: every ~0.5 ms it sends the SETs owed since the start
(pre-built, fixed-width commands sliced from one buffer, so building costs nothing per write)
and a reader task counts the replies. Sending stops while more than INFLIGHT_MAX replies are
outstanding on a connection: the server is behind, and the achieved rate then says so.

Prints one JSON object: sent, acked, errors, first_error, send_seconds, achieved_per_s,
behind_ms (total time sending was held back by the in-flight cap).
"""
import argparse
import asyncio
import json
import random
import sys
import time

POOL_COMMANDS = 1 << 16
BATCH_MAX = 8192
INFLIGHT_MAX = 262144
TICK_S = 0.0005


def build_pool(value_bytes: int, keyspace: int, seed: int) -> tuple[bytes, int]:
    rng = random.Random(seed)
    value = b"x" * value_bytes
    width = len(str(keyspace - 1))
    cmds = []
    for _ in range(POOL_COMMANDS):
        key = b"key:%0*d" % (width, rng.randrange(keyspace))
        cmds.append(
            b"*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n" % (len(key), key, len(value), value)
        )
    # Fixed width: every command has the same length, so a batch is one slice.
    assert len({len(c) for c in cmds}) == 1
    return b"".join(cmds) * 2, len(cmds[0])


class Conn:
    def __init__(self, reader, writer):
        self.reader = reader
        self.writer = writer
        self.sent = 0
        self.acked = 0
        self.errors = 0
        self.first_error = None
        self.behind_s = 0.0

    async def read_replies(self):
        while True:
            chunk = await self.reader.read(1 << 20)
            if not chunk:
                return
            self.acked += chunk.count(b"\n")
            if b"-" in chunk:
                # Values are never echoed by SET, so '-' only starts an error reply.
                self.errors += chunk.count(b"\r\n-") + (1 if chunk.startswith(b"-") else 0)
                if self.first_error is None:
                    start = chunk.find(b"-")
                    self.first_error = chunk[start : chunk.find(b"\r\n", start)].decode(
                        "utf-8", "replace"
                    )


async def pace(conn: Conn, pool: bytes, cmd_len: int, rate: float, seconds: float, offset: int):
    start = time.monotonic()
    deadline = start + seconds
    cursor = offset % POOL_COMMANDS
    while True:
        now = time.monotonic()
        if now >= deadline:
            break
        owed = int(rate * (now - start)) - conn.sent
        if conn.sent - conn.acked > INFLIGHT_MAX:
            conn.behind_s += TICK_S
            owed = 0
        while owed > 0:
            n = min(owed, BATCH_MAX, POOL_COMMANDS - cursor)
            conn.writer.write(pool[cursor * cmd_len : (cursor + n) * cmd_len])
            conn.sent += n
            owed -= n
            cursor = (cursor + n) % POOL_COMMANDS
        await conn.writer.drain()
        await asyncio.sleep(TICK_S)
    return time.monotonic() - start


async def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--rate", type=float, required=True, help="SETs per second in total")
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--conns", type=int, default=4)
    p.add_argument("--value-bytes", type=int, default=64)
    p.add_argument("--keyspace", type=int, default=10_000_000)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--ack-timeout", type=float, default=60.0)
    args = p.parse_args()

    pool, cmd_len = build_pool(args.value_bytes, args.keyspace, args.seed)
    conns = []
    for _ in range(args.conns):
        reader, writer = await asyncio.open_connection(args.host, args.port)
        conns.append(Conn(reader, writer))
    readers = [asyncio.create_task(c.read_replies()) for c in conns]
    per_conn = args.rate / args.conns
    step = POOL_COMMANDS // args.conns
    durations = await asyncio.gather(
        *(pace(c, pool, cmd_len, per_conn, args.seconds, i * step) for i, c in enumerate(conns))
    )
    send_seconds = max(durations)
    sent = sum(c.sent for c in conns)
    deadline = time.monotonic() + args.ack_timeout
    while sum(c.acked for c in conns) < sent and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    for c in conns:
        c.writer.close()
    for t in readers:
        t.cancel()
    acked = sum(c.acked for c in conns)
    errors = [c.first_error for c in conns if c.first_error]
    print(
        json.dumps(
            {
                "sent": sent,
                "acked": acked,
                "errors": sum(c.errors for c in conns),
                "first_error": errors[0] if errors else None,
                "send_seconds": round(send_seconds, 3),
                "achieved_per_s": round(sent / send_seconds) if send_seconds > 0 else 0,
                "behind_ms": round(1000 * sum(c.behind_s for c in conns)),
            }
        )
    )
    return 0 if acked == sent else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
