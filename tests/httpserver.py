"""httpserver.py - ursa-http started on 127.0.0.1:0 for the Python
suites (http_test, http_files_test): its port from its first line, its
memory from /proc, and a stop by SIGTERM that checks its exit."""
import re
import signal
import subprocess

from checks import check


class Http:
    def __init__(self, binary, backend, *args):
        self.p = subprocess.Popen([binary, "--backend", backend, "--listen",
                                   "127.0.0.1:0", *args],
                                  stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True)
        line = self.p.stdout.readline()
        m = re.search(r"listening on 127\.0\.0\.1:(\d+)$", line.strip())
        if not m:
            self.p.kill()
            raise RuntimeError(f"ursa-http did not start: {line!r} "
                               f"{self.p.stderr.read()!r}")
        self.port = int(m.group(1))
        self.url = f"http://127.0.0.1:{self.port}"
        # A sanitizer's shadow memory multiplies what the server's own
        # buffers cost: TSan's by several times (memory bounds are for the
        # plain build, and ASan's fits them).
        with open(f"/proc/{self.p.pid}/maps") as f:
            self.tsan = "libtsan" in f.read()

    def rss_kib(self, field="VmRSS"):
        with open(f"/proc/{self.p.pid}/status") as f:
            for ln in f:
                if ln.startswith(field + ":"):
                    return int(ln.split()[1])
        return -1

    def stop(self):
        self.p.send_signal(signal.SIGTERM)
        out, err = self.p.communicate(timeout=30)
        check(self.p.returncode == 0, f"exit {self.p.returncode} {err}")
        return out
