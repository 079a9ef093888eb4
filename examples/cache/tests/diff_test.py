"""diff_test.py TPCACHE — tpcache against memcached 1.6.18, byte for byte.

Each case is a raw request script sent on a fresh connection to both
servers (after a flush_all); the responses must be identical once cas
uniques (which count differently) are masked. Covers every command, the
errors and limits, noreply, meta commands, bad data chunks, overlong lines
and keys, NUL and control bytes, and seeded binary junk.
"""
import random
import re
import sys
import time

from harness import MEMCACHED, Server, exchange

K250 = b"k" * 250
K251 = b"k" * 251
BIG = 1024 * 1024


def cases(rng):
    c = []
    add = c.append
    # storage and retrieval
    add(b"set a 5 0 3\r\nabc\r\nget a\r\ngets a\r\nget a b a\r\nget nope\r\n")
    add(b"set a 0 0 3 noreply\r\nabc\r\nget a\r\n")
    add(b"add a 0 0 1\r\nx\r\nadd a 0 0 1\r\ny\r\nget a\r\nadd b 0 0 1 noreply\r\nz\r\nget b\r\n")
    add(b"replace a 0 0 1\r\nx\r\nset a 0 0 1\r\ny\r\nreplace a 7 0 2\r\nzz\r\nget a\r\n")
    add(b"append a 0 0 1\r\nx\r\nprepend a 0 0 1\r\nx\r\nset a 9 0 2\r\nmm\r\n"
        b"append a 0 0 2\r\n>>\r\nprepend a 1 0 2\r\n<<\r\nget a\r\n"
        b"append a 0 0 1 noreply\r\n!\r\nprepend a 0 0 1 noreply\r\n^\r\nget a\r\n")
    add(b"cas a 0 0 1 1\r\nx\r\nset a 0 0 1\r\ny\r\ncas a 0 0 1 999999\r\nz\r\n"
        b"cas a 0 0 1 999999 noreply\r\nz\r\ncas a 0 0 1\r\nz\r\nget a\r\n")
    add(b"set bin 0 0 8\r\n\r\n\x00\x01\xff\r\n\r\r\nget bin\r\n")
    add(b"set " + K250 + b" 0 0 1\r\nx\r\nget " + K250 + b"\r\n")
    # (memcached drops responses queued before a get's too-long-key error in
    # the same read: a quirk not copied, so the get is tested on its own)
    add(b"set " + K251 + b" 0 0 1\r\nx\r\nget a\r\n")
    add(b"get " + K251 + b"\r\n")
    add(b"get a " + K251 + b" b\r\n")
    add(b"delete " + K251 + b"\r\nincr " + K251 + b" 1\r\ntouch " + K251 + b" 1\r\n")
    add(b"set a\x01b 0 0 1\r\nx\r\nget a\x01b\r\nget a\tb\r\n")
    add(b"get a\x00b\r\nset z 0 0 1\x00junk\r\nq\r\n")
    add(b"set k 0 0 1\nx\nget k\n")
    add(b"set k 0 0 1\r\nxyz\r\nget k\r\n")
    add(b"set k 0 0 5\r\nab\r\nget k\r\n\r\n")
    add(b"set k 0 0 1\r\nxy")
    add(b"set k 0 0 1 noreply\r\nxyz\r\nget k\r\n")
    add(b"set k 0 0 -1\r\nx\r\nset k 0 0 abc\r\nx\r\nset k abc 0 1\r\nx\r\nset k 0 abc 1\r\nx\r\n")
    add(b"set k -1 0 1\r\nx\r\nset k 4294967295 0 1\r\nx\r\nget k\r\nset k 4294967296 0 1\r\nx\r\n")
    # (a length past 2^31 wraps as in memcached; one that wraps to a huge
    # positive size is answered at once here, while memcached holds the
    # SERVER_ERROR until the 1 GB it swallows has arrived: not compared)
    add(b"set k 0 0 2147483648\r\nx\r\nset k 0 0 4294967295\r\nx\r\n")
    add(b"set k 0 0 1 2 3\r\nset k 0 0\r\nset\r\nadd k\r\ncas k 0 0 1\r\n")
    add(b"set k 0 0 1\r\nx\r\nset k 0 0 2000000\r\n" + b"y" * 2000000 + b"\r\nget k\r\n")
    for v in (BIG - 56 - 2 - 2, BIG - 56 - 2 - 1, BIG - 56 - 2, BIG - 56 - 1, BIG):
        add(b"set kk 0 0 %d\r\n" % v + b"v" * v + b"\r\nget kk\r\n")
    # arithmetic
    add(b"set n 0 0 2\r\n10\r\nincr n 5\r\ndecr n 6\r\ndecr n 100\r\nget n\r\nincr n 1\r\n"
        b"incr nope 1\r\ndecr nope 1\r\n")
    add(b"set n 0 0 20\r\n18446744073709551615\r\nincr n 1\r\nget n\r\nincr n 18446744073709551615\r\n")
    add(b"set n 0 0 3\r\nabc\r\nincr n 1\r\nset n 0 0 0\r\n\r\nincr n 1\r\nset n 0 0 2\r\n-1\r\nincr n 1\r\n")
    add(b"set n 0 0 1\r\n5\r\nincr n abc\r\nincr n -1\r\nincr n 18446744073709551616\r\n"
        b"incr n 1 noreply\r\ndecr n 2 noreply\r\nget n\r\nincr n\r\n")
    add(b"set n 0 0 3\r\n 12\r\nincr n 1\r\nset n 0 0 3\r\n12 \r\nincr n 1\r\nget n\r\n")
    # touch, gat, expiry
    add(b"set t 0 0 1\r\nx\r\ntouch t 100\r\ntouch nope 1\r\ntouch t abc\r\ntouch t 1 noreply\r\n"
        b"gat 100 t nope\r\ngats 0 t\r\ngat abc t\r\ngat 1\r\ngat\r\n")
    add(b"set e 0 -1 1\r\nx\r\nget e\r\nset e 0 1000 1\r\nx\r\nget e\r\n"
        b"set e 0 %d 1\r\nx\r\nget e\r\nset e 0 %d 1\r\nx\r\nget e\r\n"
        % (int(time.time()) - 100, int(time.time()) + 100))
    add(b"set t 0 0 1\r\nx\r\ntouch t -1\r\nget t\r\nset t 0 0 1\r\nx\r\ngat -1 t\r\nget t\r\n")
    # delete
    add(b"set d 0 0 1\r\nx\r\ndelete d\r\ndelete d\r\nset d 0 0 1\r\nx\r\ndelete d 0\r\n"
        b"delete d 5\r\ndelete d noreply\r\ndelete d 0 noreply\r\ndelete d 1 2 3\r\n"
        b"delete d 0 x\r\nget d\r\n")
    # flush
    add(b"set f 0 0 1\r\nx\r\nflush_all\r\nget f\r\nset f 0 0 1\r\nx\r\nget f\r\n"
        b"flush_all noreply\r\nget f\r\nflush_all 0\r\nflush_all -1\r\nflush_all abc\r\n"
        b"flush_all 1 2 3\r\n")
    add(b"set f 0 0 1\r\nx\r\nflush_all 100\r\nget f\r\nflush_all 0\r\n")
    # misc
    add(b"version\r\nverbosity\r\nverbosity 1\r\nverbosity 1 noreply\r\nverbosity a b c\r\n")
    add(b"\r\n\r\nfoo\r\nGET a\r\nget\r\ngets\r\ngetx a\r\ns\r\nx y\r\nstats nonsense\r\n")
    add(b"set q 0 0 1\r\nx\r\nget q\r\nquit\r\nget q\r\n")
    add(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    add(b"a" * 3000)
    add(b"a" * 3000 + b"\r\n")
    add(b"get " + b" ".join(b"key%d" % i for i in range(2000)) + b"\r\n")
    add(b"set m 0 0 1\r\nx\r\nget " + b"m " * 1500 + b"\r\n")
    add(b"  get   a   \r\n  set  a  0  0  1  \r\nx\r\nget a\r\n")
    # meta
    add(b"set a 0 0 1\r\nx\r\nmg a v k O123 s t f c\r\nmg b v k O1\r\nmg b q k\r\nmd b q\r\n"
        b"md b\r\nms c 2 T0 F5 c k\r\nhi\r\nms c 2 MA\r\nzz\r\nma c\r\nma n N0 J5 v\r\n"
        b"ma n v t c\r\nmd n\r\nmd n q\r\nmg a\r\nms a S2\r\nab\r\nms a 2 MX\r\nab\r\n"
        b"mg a h l\r\nms a 2 q\r\nab\r\nmg zz k O9\r\n")
    add(b"mg\r\nmg a v v\r\nmg a zz\r\nmg a O" + b"o" * 40 + b"\r\nmg " + K251 + b" v\r\nme\r\n")
    add(b"ms k abc\r\nms k\r\nms k -1\r\nms k 2 F-1\r\nxx\r\nms k 2 Fabc\r\nxx\r\n"
        b"ms k 2 T-1\r\nxx\r\nmg k v\r\nms k 2 MR\r\nyy\r\nms k 2 ME\r\nzz\r\nmg k v\r\n")
    add(b"ms k 2 I\r\nxx\r\nms k 2 C1\r\nxx\r\nms k 2 MEE\r\nxx\r\nms k 1\r\nxyz\r\n")
    add(b"ma k D abc\r\nma k MX\r\nma k Dabc\r\nma k N0 D5 J10 v\r\nma k MD D3 v\r\n"
        b"ma k M- v\r\nma k C1\r\nma k q\r\nma nope q\r\nma nope\r\nmg k v t\r\n")
    add(b"ms k 2 T100\r\nxx\r\nmg k t v\r\nmg k T0 t\r\nmg k t\r\nmd k C1\r\nmd k q\r\nmg k\r\n")
    add(b"mg a " + b" ".join(b"%c" % ch for ch in b"sftkcvq") + b" O1 O2\r\n")
    add(b"mn\r\nmx\r\nm\r\nmgg a\r\n")
    # binary junk (no binary-protocol magic byte)
    for _ in range(12):
        n = rng.randrange(1, 400)
        junk = bytes(rng.choice([rng.randrange(256), 10, 13, 32, 48]) for _ in range(n))
        if junk[:1] == b"\x80":
            junk = b"x" + junk
        add(junk + b"\r\n")
    # random command-shaped lines
    words = [b"set", b"get", b"gets", b"add", b"cas", b"incr", b"decr", b"touch", b"delete",
             b"mg", b"ms", b"md", b"ma", b"k", b"0", b"1", b"-1", b"noreply", b"v", b"q",
             b"T1", b"F3", b"4294967296", b"abc", b""]
    for _ in range(40):
        line = b" ".join(rng.choice(words) for _ in range(rng.randrange(1, 8)))
        add(line + b"\r\n" + b"xx\r\n")
    return c


CAS_RE = [
    (re.compile(rb"^(VALUE \S+ \d+ \d+) \d+\r$", re.M), rb"\1 CAS\r"),
    (re.compile(rb"^((?:HD|VA|EN|NF|NS|EX)\b[^\r\n]*) c\d+", re.M), rb"\1 cCAS"),
    (re.compile(rb"cas=\d+"), rb"cas=CAS"),
]


def normalize(b):
    for rx, rep in CAS_RE:
        b = rx.sub(rep, b)
    return b


def run_all(server, cs):
    out = []
    for data in cs:
        s = server.connect()
        f, _ = exchange(s, b"flush_all\r\n")
        s.close()
        s = server.connect()
        resp, closed = exchange(s, data)
        s.close()
        out.append((normalize(resp), closed))
    return out


def main():
    tpcache = sys.argv[1]
    seed = int(sys.argv[2]) if len(sys.argv) > 2 else random.randrange(1 << 30)
    print("diff_test seed", seed)
    cs = cases(random.Random(seed))
    mc = Server(MEMCACHED, ["-t", "1", "-m", "64"], memcached=True).start()
    tp = Server(tpcache, ["-t", "2", "-m", "64"]).start()
    try:
        want = run_all(mc, cs)
        got = run_all(tp, cs)
    finally:
        mc.stop()
        rc, out = tp.stop()
    bad = 0
    for i, (data, w, g) in enumerate(zip(cs, want, got)):
        if w != g:
            bad += 1
            print("case %d differs\n  sent     %r\n  memcached %r\n  tpcache   %r"
                  % (i, data[:300], (w[0][:600], w[1]), (g[0][:600], g[1])))
    assert rc == 0, "tpcache exit status %r on SIGTERM" % rc
    assert out == b"", "tpcache printed on stdout: %r" % out[:200]
    print("%d cases, %d differ" % (len(cs), bad))
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
