#!/usr/bin/env python3
"""What one connection costs the router (ARCHITECTURE.md, "Bounds"), measured on loopback:
RSS per idle h2c connection, per parked HTTP/1.1 connection, per zero-window h2 client with 256
streams of 1 MiB responses, and a good h2c client's p99 before and while those clients stall.

    python3 loadtests/router_costs.py TARGET/release    # needs ktx-router and ktx-testbackend

N_IDLE (1000) and N_BAD (8) set the counts; raise `ulimit -n` above 2 * N_IDLE first. Bounded:
every socket is to 127.0.0.1, both processes are stopped at the end."""
import os, socket, struct, subprocess, sys, time, json

BIN = sys.argv[1]  # target/release dir
N_IDLE = int(os.environ.get("N_IDLE", "1000"))
N_BAD = int(os.environ.get("N_BAD", "8"))

def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p

def rss_kb(pid):
    for l in open(f"/proc/{pid}/status"):
        if l.startswith("VmRSS:"):
            return int(l.split()[1])

def wait_port(port):
    for _ in range(500):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close(); return
        except OSError:
            time.sleep(0.01)
    raise SystemExit(f"port {port} never opened")

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
def frame(typ, flags, stream, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([typ, flags]) + struct.pack(">I", stream) + payload
def settings(pairs):
    return frame(4, 0, 0, b"".join(struct.pack(">HI", k, v) for k, v in pairs))
def lit(idx, value):
    # HPACK literal with incremental indexing and an indexed name (`idx` has 0x40 set); values
    # here are shorter than 127 bytes, so the length fits the 7-bit prefix.
    v = value.encode()
    return bytes([idx]) + bytes([len(v)]) + v
def get_headers(path, authority="x"):
    # :method GET (2), :scheme http (6), :path literal (name 4), :authority literal (name 1)
    return b"\x82\x86" + lit(0x44, path) + lit(0x41, authority)

def h2_client(port, window0=False):
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(PREFACE + settings([(4, 0)] if window0 else []))
    return s

def h2_get(s, stream, path):
    s.sendall(frame(1, 0x5, stream, get_headers(path)))  # END_STREAM|END_HEADERS

def read_until_data_end(s, stream, timeout=10):
    s.settimeout(timeout)
    buf = b""; got = 0; t0 = time.time()
    while True:
        while len(buf) < 9:
            c = s.recv(65536)
            if not c: raise RuntimeError("closed")
            buf += c
        ln = int.from_bytes(buf[:3], "big"); typ = buf[3]; fl = buf[4]; sid = int.from_bytes(buf[5:9], "big") & 0x7fffffff
        while len(buf) < 9 + ln:
            c = s.recv(65536)
            if not c: raise RuntimeError("closed")
            buf += c
        payload = buf[9:9+ln]; buf = buf[9+ln:]
        if typ == 4 and not fl & 1:
            s.sendall(frame(4, 1, 0))
        if typ == 6 and not fl & 1:
            s.sendall(frame(6, 1, 0, payload))
        if sid == stream and typ in (0, 1) and fl & 1:
            return time.time() - t0

def main():
    bport, rport, aport = free_port(), free_port(), free_port()
    routes = "/tmp/riso-measure-routes.yaml"
    open(routes, "w").write(f'default: {{ addrs: ["127.0.0.1:{bport}"] }}\n')
    be = subprocess.Popen([f"{BIN}/ktx-testbackend", "--listen", f"127.0.0.1:{bport}", "--name", "original", "--log-level", "warn"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    rt = subprocess.Popen([f"{BIN}/ktx-router", "--listen", f"127.0.0.1:{rport}", "--admin", f"127.0.0.1:{aport}", "--routes-file", routes, "--threads", "1", "--log-level", "warn"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    out = {}
    try:
        wait_port(bport); wait_port(rport); time.sleep(0.5)
        # warm-up: one good request
        g = h2_client(rport); h2_get(g, 1, "/hello"); read_until_data_end(g, 1); g.close()
        time.sleep(0.3)
        out["rss_base_kb"] = rss_kb(rt.pid)
        # idle h2c connections
        idle = [h2_client(rport) for _ in range(N_IDLE)]
        time.sleep(1.0)
        out["rss_idle_h2c_kb"] = rss_kb(rt.pid)
        out["per_idle_h2c_bytes"] = (out["rss_idle_h2c_kb"] - out["rss_base_kb"]) * 1024 // N_IDLE
        for s in idle: s.close()
        time.sleep(1.0)
        base2 = rss_kb(rt.pid)
        # parked h1 connections
        h1 = []
        for _ in range(N_IDLE):
            s = socket.create_connection(("127.0.0.1", rport)); s.sendall(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n"); h1.append(s)
        for s in h1:
            s.settimeout(5); d = b""
            while b"hello\n" not in d: d += s.recv(4096)
        time.sleep(2.5)
        out["rss_parked_h1_kb"] = rss_kb(rt.pid)
        out["per_parked_h1_bytes"] = (out["rss_parked_h1_kb"] - base2) * 1024 // N_IDLE
        for s in h1: s.close()
        time.sleep(1.0)
        # good client quiet latency
        g = h2_client(rport)
        lat = []
        for i in range(200):
            h2_get(g, 2*i+1, "/hello"); lat.append(read_until_data_end(g, 2*i+1))
        lat.sort(); out["good_quiet_p99_ms"] = round(lat[int(len(lat)*0.99)-1]*1000, 3)
        base3 = rss_kb(rt.pid)
        # window-0 clients, 256 streams of 1 MiB each
        bad = []
        for _ in range(N_BAD):
            s = h2_client(rport, window0=True)
            for k in range(256):
                h2_get(s, 2*k+1, "/bytes?n=1048576")
            bad.append(s)
        time.sleep(3.0)
        out["bad_clients"] = N_BAD
        out["rss_window0_kb"] = rss_kb(rt.pid)
        out["per_window0_client_bytes"] = (out["rss_window0_kb"] - base3) * 1024 // N_BAD
        lat = []
        for i in range(200, 400):
            try:
                h2_get(g, 2*i+1, "/hello"); lat.append(read_until_data_end(g, 2*i+1, timeout=5))
            except Exception as e:
                out["good_error"] = repr(e); break
        if lat:
            lat.sort(); out["good_noisy_p99_ms"] = round(lat[int(len(lat)*0.99)-1]*1000, 3)
        # a new good connection while they stall
        g2 = h2_client(rport)
        try:
            h2_get(g2, 1, "/hello"); out["new_good_conn_ms"] = round(read_until_data_end(g2, 1, timeout=5)*1000, 3)
        except Exception as e:
            out["new_good_conn_error"] = repr(e)
    finally:
        rt.terminate(); be.terminate(); rt.wait(); be.wait()
    print(json.dumps(out, indent=1))

main()
