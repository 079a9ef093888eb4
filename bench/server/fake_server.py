#!/usr/bin/python3
"""bench/server/fake_server.py — a tiny memcached-text-protocol server for
loadgen_detect_test: right by default, wrong on purpose with --mode.

  fake_server.py --port-file F [--mode ok|corrupt|stale|miss|wrongkey|garbage]

Listens on 127.0.0.1 on a free port, which it writes to F once it listens.
Understands get (one key), set, delete, flush_all. Modes, each starting after
--after correct get hits (default 200), then on every 50th get hit:
  ok        always right (shows the test's loadgen runs pass against it)
  corrupt   one byte of the value flipped
  stale     the value the key had before its last set
  miss      END for a stored key
  wrongkey  the value of another stored key, under that other key's name
  garbage   a line the protocol does not have
Exits after --lifetime seconds (default 60) or on SIGTERM.
"""
import argparse
import asyncio
import os
import signal
import sys


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port-file", required=True)
    ap.add_argument("--mode", default="ok",
                    choices=["ok", "corrupt", "stale", "miss", "wrongkey", "garbage"])
    ap.add_argument("--after", type=int, default=200)
    ap.add_argument("--lifetime", type=float, default=60)
    a = ap.parse_args()

    store = {}  # key -> (flags, data)
    prev = {}   # key -> (flags, data) before the last set
    hits = [0]

    def wrong_now():
        hits[0] += 1
        return a.mode != "ok" and hits[0] > a.after and hits[0] % 50 == 0

    async def serve(reader, writer):
        try:
            while True:
                line = await reader.readline()
                if not line:
                    return
                parts = line.rstrip(b"\r\n").split()
                if not parts:
                    writer.write(b"ERROR\r\n")
                elif parts[0] == b"get" and len(parts) == 2:
                    k = parts[1]
                    out = b"END\r\n"
                    if k in store:
                        flags, data = store[k]
                        name = k
                        if wrong_now():
                            if a.mode == "corrupt":
                                i = len(data) // 2
                                data = data[:i] + bytes([data[i] ^ 1]) + data[i + 1:]
                            elif a.mode == "stale" and k in prev:
                                flags, data = prev[k]
                            elif a.mode == "miss":
                                data = None
                            elif a.mode == "wrongkey":
                                other = next((o for o in store if o != k), None)
                                if other is not None:
                                    name = other
                                    flags, data = store[other]
                            elif a.mode == "garbage":
                                data = None
                                out = b"SERVER_ERROR out of luck\r\n"
                        if data is not None:
                            out = b"VALUE %s %d %d\r\n%s\r\nEND\r\n" % (name, flags, len(data), data)
                    writer.write(out)
                elif parts[0] == b"set" and len(parts) == 5:
                    n = int(parts[4])
                    data = await reader.readexactly(n + 2)
                    k = parts[1]
                    if k in store:
                        prev[k] = store[k]
                    store[k] = (int(parts[2]), data[:n])
                    writer.write(b"STORED\r\n")
                elif parts[0] == b"delete" and len(parts) == 2:
                    found = store.pop(parts[1], None) is not None
                    prev.pop(parts[1], None)
                    writer.write(b"DELETED\r\n" if found else b"NOT_FOUND\r\n")
                elif parts[0] == b"flush_all":
                    store.clear()
                    prev.clear()
                    writer.write(b"OK\r\n")
                else:
                    writer.write(b"ERROR\r\n")
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def run():
        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        tmp = a.port_file + ".tmp"
        with open(tmp, "w") as f:
            f.write("%d\n" % port)
        os.rename(tmp, a.port_file)
        loop = asyncio.get_running_loop()
        stop = loop.create_future()
        loop.add_signal_handler(signal.SIGTERM, lambda: stop.done() or stop.set_result(None))
        try:
            await asyncio.wait_for(stop, a.lifetime)
        except asyncio.TimeoutError:
            print("fake_server: lifetime over", file=sys.stderr)
        server.close()

    asyncio.run(run())


if __name__ == "__main__":
    main()
