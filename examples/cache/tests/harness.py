"""harness.py — start and stop tpcache (or memcached) for the tests.

Servers listen on 127.0.0.1 on a free port picked here (retried if another
process takes it first), write a pidfile, and are stopped by that PID with
SIGTERM; stop() returns the exit status and what the server printed on
stdout (tpcache must print nothing there without -v).
"""
import os
import random
import signal
import socket
import subprocess
import tempfile
import time

MEMCACHED = "/usr/bin/memcached"


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Server:
    def __init__(self, binary, extra=(), memcached=False):
        self.binary = binary
        self.extra = list(extra)
        self.memcached = memcached
        self.proc = None

    def start(self):
        tmp = os.environ.get("TEST_TMPDIR", tempfile.gettempdir())
        for _ in range(5):
            self.port = free_port()
            fd, self.pidfile = tempfile.mkstemp(dir=tmp, suffix=".pid")
            os.close(fd)
            os.unlink(self.pidfile)
            self.out = tempfile.TemporaryFile(dir=tmp)
            argv = [self.binary, "-p", str(self.port), "-l", "127.0.0.1", "-U", "0",
                    "-P", self.pidfile] + self.extra
            if self.memcached and os.geteuid() == 0:
                argv += ["-u", "root"]
            self.proc = subprocess.Popen(argv, stdout=self.out)
            deadline = time.time() + 20
            while time.time() < deadline and self.proc.poll() is None:
                try:
                    socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                    if os.path.exists(self.pidfile) and os.path.getsize(self.pidfile) > 0:
                        return self
                except OSError:
                    pass
                time.sleep(0.05)
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
        raise RuntimeError("server %s did not start" % self.binary)

    @property
    def pid(self):
        with open(self.pidfile) as f:
            return int(f.read().strip())

    def rss_kib(self):
        with open("/proc/%d/status" % self.proc.pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0

    def sanitized(self):
        """True when the server runs under ASan/TSan (its RSS then includes
        shadow memory and quarantines: RSS bounds do not apply)."""
        with open("/proc/%d/maps" % self.proc.pid) as f:
            maps = f.read()
        return any(lib in maps for lib in ("libasan", "libtsan", "libubsan"))

    def stop(self):
        """SIGTERM by the pidfile's PID; returns (exit status, stdout bytes)."""
        if self.proc is None:
            return 0, b""
        pid = self.pid
        assert pid == self.proc.pid, "pidfile holds %d, server is %d" % (pid, self.proc.pid)
        os.kill(pid, signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            rc = "hung on SIGTERM"
        self.out.seek(0)
        out = self.out.read()
        self.proc = None
        return rc, out

    def connect(self, timeout=10):
        s = socket.create_connection(("127.0.0.1", self.port), timeout=timeout)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return s


def exchange(sock, data, timeout=2.0):
    """Sends data, then a meta get of a key never set, whose miss line
    (with a random opaque) marks the end; reads until that line, the peer
    closes, or timeout. Returns (bytes, closed)."""
    nonce = b"%d" % random.randrange(1 << 60)
    sentinel = b"EN Oend" + nonce + b"\r\n"
    sock.sendall(data + b"mg __never_set__ Oend" + nonce + b"\r\n")
    buf = b""
    sock.settimeout(timeout)
    try:
        while not buf.endswith(sentinel):
            b = sock.recv(1 << 20)
            if not b:
                return buf, True
            buf += b
    except socket.timeout:
        return buf, False
    except ConnectionResetError:
        return buf, True
    return buf[: -len(sentinel)], False


def recv_until(sock, end, timeout=10.0):
    buf = b""
    sock.settimeout(timeout)
    while not buf.endswith(end):
        b = sock.recv(1 << 20)
        if not b:
            raise ConnectionError("closed after %r" % buf[-200:])
        buf += b
    return buf
