"""badinput_test.py TPCACHE [SEED] — hostile and broken clients.

Garbage and binary junk, lines without "\\r\\n", overlong lines and keys,
data blocks longer or shorter than announced, negative and huge lengths,
slowloris connections stalled mid-request, connections that vanish
mid-value, and more connections than -c. Each gets memcached's answer (or
is closed where memcached closes it); meanwhile a well-behaved client is
served throughout, the reference data it stored first is intact at the
end, and memory stays bounded (RSS, and the item memory the server
accounts returns to where it was).
"""
import random
import socket
import struct
import sys
import threading
import time

from harness import Server, exchange, recv_until

ROUNDS_OK = []


def good_client(srv, ref, stop, errors, rng, me):
    """Sets and reads its own keys and checks the reference keys, until
    stopped."""
    try:
        s = srv.connect(timeout=30)
        i = 0
        while not stop.is_set():
            k = rng.choice(list(ref))
            v = b"g%d" % i
            g = b"good%d_%d" % (me, i % 50)
            r, closed = exchange(s, b"set %s 0 0 %d\r\n%s\r\nget %s %s\r\n"
                                    % (g, len(v), v, g, k), timeout=30)
            want = (b"STORED\r\nVALUE %s 0 %d\r\n%s\r\nVALUE %s 0 %d\r\n%s\r\nEND\r\n"
                    % (g, len(v), v, k, len(ref[k]), ref[k]))
            if r != want or closed:
                errors.append("good client got %r (%d bytes, closed %s), want %r"
                              % (r[:100], len(r), closed, want[:100]))
                return
            i += 1
        ROUNDS_OK.append(i)
        s.close()
    except Exception as e:  # noqa
        errors.append("good client: %r" % e)


def expect(srv, data, want, closed_ok=False):
    s = srv.connect()
    r, closed = exchange(s, data)
    s.close()
    if closed and closed_ok:
        return
    assert r == want, "sent %r\n got %r\nwant %r" % (data[:120], r[:300], want)


def stats(srv, arg=b""):
    s = srv.connect()
    s.sendall(b"stats " + arg + b"\r\n")
    raw = recv_until(s, b"END\r\n")
    s.close()
    return {l.split()[1].decode(): l.split()[2].decode()
            for l in raw.splitlines() if l.startswith(b"STAT ")}


def main():
    tp = sys.argv[1]
    seed = int(sys.argv[2]) if len(sys.argv) > 2 else random.randrange(1 << 30)
    print("badinput_test seed", seed)
    rng = random.Random(seed)
    srv = Server(tp, ["-t", "2", "-m", "64", "-c", "300"]).start()
    errors = []
    try:
        # reference data
        ref = {}
        s = srv.connect()
        for i in range(200):
            k = b"ref%d" % i
            v = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 3000)))
            ref[k] = v
            s.sendall(b"set %s 0 0 %d\r\n%s\r\n" % (k, len(v), v))
            assert recv_until(s, b"\r\n") == b"STORED\r\n"
        s.close()
        base_rss = srv.rss_kib()
        base_mem = int(stats(srv, b"tidepool")["store_mem_used"])

        stop = threading.Event()
        goods = [threading.Thread(target=good_client,
                                  args=(srv, ref, stop, errors, random.Random(seed + j), j))
                 for j in range(3)]
        for g in goods:
            g.start()

        # 1. answers for malformed requests (as memcached's)
        expect(srv, b"set k 0 0 1\r\nxyz\r\n", b"CLIENT_ERROR bad data chunk\r\nERROR\r\n")
        # (7 bytes due: the "m" of the sentinel completes it; its rest is ERROR)
        expect(srv, b"set k 0 0 5\r\nab\r\n\r\n", b"CLIENT_ERROR bad data chunk\r\nERROR\r\n")
        expect(srv, b"set k 0 0 -1\r\n", b"CLIENT_ERROR bad command line format\r\n")
        expect(srv, b"set k 0 0 2147483648\r\n", b"CLIENT_ERROR bad command line format\r\n")
        expect(srv, b"set " + b"k" * 251 + b" 0 0 1\r\nx\r\n",
               b"CLIENT_ERROR bad command line format\r\nERROR\r\n")
        expect(srv, b"get k\nget k\n", b"END\r\nEND\r\n")
        expect(srv, b"\x00\x01\x02\xff\xfe\r\n", b"ERROR\r\n")
        expect(srv, b"GET / HTTP/1.1\r\n", b"", closed_ok=True)
        # an overlong line without "\n" that is not a get: closed (memcached too)
        s = srv.connect()
        s.sendall(b"x" * 100000)
        s.settimeout(10)
        try:
            assert s.recv(100) == b"", "overlong line not closed"
        except ConnectionResetError:
            pass
        s.close()
        # a huge announced length: swallowed, answered, the connection lives on
        s = srv.connect()
        s.sendall(b"set k 0 0 100000000\r\n" + b"z" * 100000)
        assert recv_until(s, b"\r\n") == b"SERVER_ERROR object too large for cache\r\n"
        s.close()

        # 2. junk floods on many connections
        def junk(j):
            r = random.Random(seed * 1000 + j)
            try:
                s = srv.connect()
                for _ in range(200):
                    n = r.randrange(1, 2000)
                    b = bytes(r.randrange(256) for _ in range(n))
                    if r.random() < 0.3:
                        b = b.replace(b"\n", b"") + b"\r\n"
                    s.sendall(b)
                s.shutdown(socket.SHUT_WR)
                s.settimeout(20)
                while s.recv(65536):
                    pass
                s.close()
            except OSError:
                pass
        ths = [threading.Thread(target=junk, args=(j,)) for j in range(20)]
        for t in ths:
            t.start()

        # 3. slowloris: stalled mid-line and mid-value
        slow = []
        for j in range(60):
            s = srv.connect()
            s.sendall([b"set slow%d 0 0 100\r\nabc" % j, b"get slo", b"set slow 0 0"][j % 3])
            slow.append(s)
        # 4. vanishing mid-value (RST), 500 KB announced, 100 KB sent
        for j in range(40):
            s = srv.connect()
            s.sendall(b"set van%d 0 0 500000\r\n" % j + b"v" * 100000)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            s.close()
        for t in ths:
            t.join()

        # 5. more connections than -c 300
        extra = []
        rejected = 0
        for j in range(300):
            try:
                s = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
                extra.append(s)
            except OSError:
                rejected += 1
        served = 0
        for s in extra:
            # every one is answered: served, or refused with memcached's line
            try:
                s.sendall(b"version\r\n")
                d = recv_until(s, b"\r\n", timeout=60)
            except (OSError, ConnectionError):
                d = b""
            if d.startswith(b"VERSION"):
                served += 1
            else:
                assert d in (b"ERROR Too many open connections\r\n", b""), d
                rejected += 1
        for s in extra:
            s.close()
        st = stats(srv)
        print("  over -c: %d of %d refused; rejected_connections %s, curr %s"
              % (rejected, len(extra), st["rejected_connections"], st["curr_connections"]))
        assert rejected > 0 and served > 0 and int(st["rejected_connections"]) >= rejected
        # the stalled ones complete correctly afterwards
        for j, s in enumerate(slow):
            if j % 3 == 0:
                s.sendall(b"d" * 97 + b"\r\nget slow%d\r\n" % j)
                r = recv_until(s, b"END\r\n")
                assert r == b"STORED\r\nVALUE slow%d 0 100\r\nabc%s\r\nEND\r\n" % (j, b"d" * 97), r
            s.close()

        stop.set()
        for g in goods:
            g.join()
        assert not errors, errors[:3]
        assert ROUNDS_OK and min(ROUNDS_OK) > 0, "the good clients made no progress"

        # 6. nothing corrupted, memory bounded
        s = srv.connect()
        for k, v in ref.items():
            s.sendall(b"get " + k + b"\r\n")
            r = recv_until(s, b"END\r\n")
            assert r == b"VALUE %s 0 %d\r\n%s\r\nEND\r\n" % (k, len(v), v), "ref %r corrupted" % k
        s.sendall(b"delete slow0\r\n")
        recv_until(s, b"\r\n")
        for g in range(150):
            s.sendall(b"delete good%d_%d noreply\r\n" % (g // 50, g % 50))
        for j in range(0, 60, 3):
            s.sendall(b"delete slow%d noreply\r\n" % j)
        exchange(s, b"")
        s.close()
        deadline = time.time() + 20
        while time.time() < deadline:
            mem = int(stats(srv, b"tidepool")["store_mem_used"])
            if mem == base_mem and int(stats(srv)["curr_connections"]) <= 2:
                break
            time.sleep(0.1)
        rss = srv.rss_kib()
        print("  item memory %d -> %d bytes; rss %d -> %d KiB; good rounds %s"
              % (base_mem, mem, base_rss, rss, ROUNDS_OK))
        assert mem == base_mem, "items of vanished/stalled connections leaked"
        assert srv.sanitized() or rss < base_rss + 64 * 1024, "RSS grew by %d KiB" % (rss - base_rss)
    finally:
        rc, out = srv.stop()
    assert rc == 0, "tpcache exit status %r on SIGTERM" % rc
    assert out == b"", out[:200]
    print("badinput_test passed")


if __name__ == "__main__":
    main()
