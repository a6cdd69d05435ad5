#!/usr/bin/env python3
"""Helpers for loadtests/run.sh (python3 stdlib only).

run.sh owns the flow (install, build, start/stop processes, run load); this file owns the
parts that are awkward in bash: reading /proc, parsing h2load output, percentiles, generating
configs for each subject, the idle-connection client, the rule churner and the final report.

Subcommands (all print to stdout, errors to stderr, exit non-zero on failure):
  cpu PID                       CPU time (us) of PID and all its descendants (reaped children included)
  rss PID                       resident memory (KB) of PID and all its descendants
  h2load FILE                   parse h2load's stdout -> JSON
  latency FILE                  percentiles of an h2load --log-file -> JSON
  routes ...                    ktx-router routes file (YAML)
  nginx-conf ... / haproxy-conf ...   subject configs
  idle ...                      hold N idle keep-alive connections (see cmd_idle)
  churn ...                     change the rules every 100 ms until told to stop
  row ...                       one results.json row (JSON line)
  report ...                    results.json + RESULTS.md from the rows
"""

import argparse
import json
import os
import re
import signal
import socket
import sys
import time

CLK_TCK = os.sysconf("SC_CLK_TCK")


# ---------------------------------------------------------------- /proc

def _children_map():
    children = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        # comm may contain spaces and parentheses: split after the last ')'.
        fields = stat[stat.rindex(")") + 2:].split()
        children.setdefault(int(fields[1]), []).append(int(entry))
    return children


def _tree(pid):
    children = _children_map()
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def _stat_ticks(pid, with_children):
    with open(f"/proc/{pid}/stat") as f:
        stat = f.read()
    fields = stat[stat.rindex(")") + 2:].split()
    # fields[0] is field 3 (state); utime=14, stime=15, cutime=16, cstime=17 (1-based).
    utime, stime, cutime, cstime = (int(x) for x in fields[11:15])
    return utime + stime + ((cutime + cstime) if with_children else 0)


def tree_cpu_us(pid):
    """utime+stime of every live process in the tree, plus cutime+cstime (children that
    already exited and were reaped, e.g. nginx workers retired by a reload)."""
    total = 0
    for p in _tree(pid):
        try:
            total += _stat_ticks(p, with_children=True)
        except (OSError, ValueError):
            pass  # exited between listing and reading
    return total * 1_000_000 // CLK_TCK


def tree_rss_kb(pid):
    total = 0
    for p in _tree(pid):
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total


def core_busy_us(cpu):
    """Busy time of one CPU (everything but idle and iowait) from /proc/stat, in us."""
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith(f"cpu{cpu} "):
                v = [int(x) for x in line.split()[1:]]
                # user nice system idle iowait irq softirq steal (guest is inside user).
                # irq/softirq are left out: on loopback they are mostly the subject's own
                # packets, which the kernel does not charge to the subject's stime.
                busy = v[0] + v[1] + v[2]
                return busy * 1_000_000 // CLK_TCK
    raise SystemExit(f"no cpu{cpu} in /proc/stat")


def cmd_core(a):
    print(f"{core_busy_us(a.cpu)} {time.monotonic_ns() // 1000}")


def cmd_snap(a):
    """One sample for a measurement window: subject CPU (us), core 1 busy (us), monotonic (us)."""
    print(f"{tree_cpu_us(a.pid)} {core_busy_us(1)} {time.monotonic_ns() // 1000}")


def window(snap0, snap1, subject):
    """CPU of the subject between two snaps, and the share of core 1 other processes used
    (None for direct, which does not run on core 1)."""
    c0, b0, t0 = (int(x) for x in snap0.split())
    c1, b1, t1 = (int(x) for x in snap1.split())
    cpu = c1 - c0
    foreign = None
    if subject != "direct":
        foreign = round(max(0, (b1 - b0) - cpu) * 100 / max(1, t1 - t0), 1)
    return cpu, foreign


def cmd_foreign(a):
    """Share of core `cpu` used by processes other than the subject between two `core` samples:
    other builds or services on a shared machine show up here."""
    b0, t0 = (int(x) for x in a.before.split())
    b1, t1 = (int(x) for x in a.after.split())
    wall = max(1, t1 - t0)
    print(round(max(0, (b1 - b0) - a.subject_us) * 100 / wall, 1))


def cmd_cpu(a):
    print(tree_cpu_us(a.pid))


def cmd_rss(a):
    print(tree_rss_kb(a.pid))


# ---------------------------------------------------------------- h2load

def parse_h2load(text):
    out = {}
    m = re.search(r"finished in ([\d.]+)(m?s), ([\d.]+) req/s", text)
    if m:
        secs = float(m.group(1)) / (1000 if m.group(2) == "ms" else 1)
        out["elapsed_s"] = secs
    m = re.search(
        r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, "
        r"(\d+) failed, (\d+) errored, (\d+) timeout", text)
    if not m:
        raise SystemExit("h2load output has no 'requests:' line (did it run?)")
    keys = ["total", "started", "done", "succeeded", "failed", "errored", "timeout"]
    out.update({k: int(v) for k, v in zip(keys, m.groups())})
    m = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", text)
    if m:
        out.update({k: int(v) for k, v in zip(["s2xx", "s3xx", "s4xx", "s5xx"], m.groups())})
    # h2load counts 4xx/5xx as failed; requests never answered (connection reset) show as
    # started - done at the end of a timed run only for those still in flight, so not errors.
    out["errors"] = out["failed"]
    out["ok"] = out.get("s2xx", out["succeeded"])
    if out.get("elapsed_s"):
        out["rps"] = round(out["ok"] / out["elapsed_s"], 1)
    return out


def cmd_h2load(a):
    with open(a.file) as f:
        out = parse_h2load(f.read())
    if a.cpu_us is not None:
        out["cpu_us"] = a.cpu_us
        out["cpu_us_per_req"] = round(a.cpu_us / out["ok"], 2) if out["ok"] else None
    if a.foreign is not None:
        out["core1_foreign_pct"] = json.loads(a.foreign)
    print(json.dumps(out))


def cmd_median(a):
    """The run whose CPU per request is the median of the runs (lower median for an even count)."""
    runs = [_load(p) for p in a.files]
    runs = [r for r in runs if r.get("cpu_us_per_req") is not None] or runs
    runs.sort(key=lambda r: r.get("cpu_us_per_req") or 0)
    best = dict(runs[(len(runs) - 1) // 2])
    best["runs"] = len(runs)
    best["cpu_us_per_req_all"] = [r.get("cpu_us_per_req") for r in runs]
    print(json.dumps(best))


def cmd_quiet(a):
    """Waits until both CPUs are mostly idle (this script's own processes are idle when it is
    called), at most max_wait seconds. Prints what it saw."""
    deadline = time.monotonic() + a.max_wait
    while True:
        b0 = [core_busy_us(c) for c in (0, 1)]
        t0 = time.monotonic()
        time.sleep(0.25)
        b1 = [core_busy_us(c) for c in (0, 1)]
        wall = (time.monotonic() - t0) * 1e6
        busy = max((b1[i] - b0[i]) * 100 / wall for i in (0, 1))
        if busy <= a.threshold or time.monotonic() >= deadline:
            print(f"quiet: busiest core {busy:.0f}% busy (threshold {a.threshold}%)")
            return



def percentile(sorted_values, q):
    if not sorted_values:
        return None
    k = max(0, min(len(sorted_values) - 1, int(round(q / 100 * len(sorted_values) + 0.5)) - 1))
    return sorted_values[k]


def cmd_latency(a):
    print(json.dumps(latency_summary(a.file)))


def latency_summary(path):
    durations, bad = [], 0
    if not os.path.exists(path):
        return {}
    with open(path) as f:
        for line in f:
            parts = line.split()
            if len(parts) < 3:
                continue
            status, dur = int(parts[1]), int(parts[2])
            if 200 <= status < 300:
                durations.append(dur)
            else:
                bad += 1
    durations.sort()
    return {
        "samples": len(durations),
        "bad": bad,
        "p50_us": percentile(durations, 50),
        "p99_us": percentile(durations, 99),
    }


# ---------------------------------------------------------------- configs

STUNTMAN = os.environ.get("KTX_BENCH_STUNTMAN", "127.0.0.1:29180")
SHADOW = os.environ.get("KTX_BENCH_SHADOW", "127.0.0.1:29181")


def rule_values(n):
    """Header values of an n-rule table; the benchmark request matches the last one."""
    if n == 1:
        return ["foobar"]
    return [f"dev-{i:05d}" for i in range(1, n + 1)]


def routes_yaml(values, extra=None):
    lines = ["default:", f'  addrs: ["{STUNTMAN}"]', "rules:"]
    for i, v in enumerate(values + ([extra] if extra else [])):
        lines += [
            f"  - session: s{i}",
            "    match:",
            "      headers:",
            f"        - {{ name: VERSION, exact: {v} }}",
            "    target:",
            f'      addrs: ["{SHADOW}"]',
            "    onUnavailable: fallback",
        ]
    return "\n".join(lines) + "\n"


def write_atomic(path, text):
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(text)
    os.rename(tmp, path)


def cmd_routes(a):
    write_atomic(a.out, routes_yaml(rule_values(a.rules), a.extra))


def nofile():
    """The open-file limit run.sh raised to (inherited); configs size themselves by it."""
    import resource
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return soft if soft != resource.RLIM_INFINITY else 1 << 20


def nginx_conf(prefix, h1, h2, rules, extra=None):
    """kt-connect style: `if ($http_VERSION = ...)` + proxy_pass to keepalive upstreams.
    With many rules, a `map` (hash lookup) instead: 10,000 `if` blocks are not a config anyone
    would run, and the map is the closest honest equivalent."""
    values = rule_values(rules)
    ups = []
    for name, addr in (("stuntman", STUNTMAN), ("shadow", SHADOW)):
        for kind in ("", "_grpc"):
            ups.append(f"  upstream {name}{kind} {{ server {addr}; keepalive 64; "
                       f"keepalive_requests 1000000; keepalive_timeout 120s; }}")
    if rules == 1:
        ifs = [f'      if ($http_VERSION = "{v}") {{ proxy_pass http://shadow; }}'
               for v in values + ([extra] if extra else [])]
        gifs = [f'      if ($http_VERSION = "{v}") {{ grpc_pass grpc://shadow_grpc; }}'
                for v in values + ([extra] if extra else [])]
        routing = "\n".join(ifs) + "\n      proxy_pass http://stuntman;"
        grouting = "\n".join(gifs) + "\n      grpc_pass grpc://stuntman_grpc;"
        maps = ""
    else:
        entries = "\n".join(f"    {v} shadow;" for v in values)
        maps = ("  map_hash_max_size 65536;\n  map_hash_bucket_size 128;\n"
                f"  map $http_VERSION $ktx_up {{\n    default stuntman;\n{entries}\n  }}\n")
        routing = "      proxy_pass http://$ktx_up;"
        grouting = "      grpc_pass grpc://${ktx_up}_grpc;"
    return f"""# generated by loadtests/lib/ktxbench.py
daemon off;
master_process on;
user root;
worker_processes 1;
worker_rlimit_nofile {nofile()};
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections {max(1024, nofile() - 100)}; use epoll; }}
http {{
  access_log off;
  client_body_temp_path {prefix}/tmp/body;
  proxy_temp_path {prefix}/tmp/proxy;
  fastcgi_temp_path {prefix}/tmp/fastcgi;
  uwsgi_temp_path {prefix}/tmp/uwsgi;
  scgi_temp_path {prefix}/tmp/scgi;
  keepalive_timeout 120s;
  keepalive_requests 1000000;
  client_max_body_size 0;
  proxy_request_buffering off;
{maps}{chr(10).join(ups)}
  server {{
    listen {h1} backlog=8192;
    listen {h2} http2 backlog=8192;
    location / {{
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $http_host;
{routing}
    }}
    location /ktx.test.Echo/ {{
{grouting}
    }}
  }}
}}
"""


def cmd_nginx_conf(a):
    os.makedirs(os.path.join(a.prefix, "tmp"), exist_ok=True)
    write_atomic(a.out, nginx_conf(a.prefix, a.h1, a.h2, a.rules, a.extra))


def haproxy_conf(sock, h1, h2, rules, map_file):
    """Header ACL routing with http-reuse; h2c front-end to h2 servers (needed for gRPC).
    With many rules, or when rules must change at run time, a map file looked up per request
    and edited over the runtime API (`add map` / `del map`): HAProxy's own way to change
    routing without a reload."""
    if rules == 1 and map_file is None:
        route = ("  use_backend shadow{k} if {{ req.hdr(version) -m str foobar }}\n"
                 "  default_backend stuntman{k}\n")
    else:
        route = (f"  use_backend %[req.hdr(version),map_str({map_file},stuntman)]{{k}}\n"
                 "  default_backend stuntman{k}\n")
    return f"""# generated by loadtests/lib/ktxbench.py
global
  nbthread 1
  maxconn {max(1000, nofile() // 2 - 500)}
  stats socket {sock} mode 600 level admin
defaults
  mode http
  timeout connect 5s
  timeout client 120s
  timeout server 120s
  timeout http-keep-alive 120s
  http-reuse always
  option http-keep-alive
frontend fe_h1
  bind {h1} backlog 8192
{route.format(k="")}frontend fe_h2
  bind {h2} proto h2 backlog 8192
{route.format(k="_h2")}backend stuntman
  server s1 {STUNTMAN}
backend shadow
  server s1 {SHADOW}
backend stuntman_h2
  server s1 {STUNTMAN} proto h2
backend shadow_h2
  server s1 {SHADOW} proto h2
"""


def cmd_haproxy_conf(a):
    map_file = None
    if a.rules > 1 or a.map:
        map_file = a.map or (a.out + ".map")
        write_atomic(map_file, "".join(f"{v} shadow\n" for v in rule_values(a.rules)))
    write_atomic(a.out, haproxy_conf(a.sock, a.h1, a.h2, a.rules, map_file))


# ---------------------------------------------------------------- idle connections

async def _one_request(reader, writer, request):
    writer.write(request)
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    m = re.search(rb"(?i)\r\ncontent-length:\s*(\d+)", head)
    if not m:
        raise ValueError("response without content-length")
    await reader.readexactly(int(m.group(1)))
    if status != 200:
        raise ValueError(f"status {status}")


async def _idle(a):
    import asyncio
    host, port = a.addr.rsplit(":", 1)
    request = (f"GET /hello HTTP/1.1\r\nhost: {a.addr}\r\n"
               + "".join(f"{h}\r\n" for h in a.header) + "\r\n").encode()
    conns, errors = [], 0
    sem = asyncio.Semaphore(a.parallel)

    async def open_one():
        nonlocal errors
        async with sem:
            try:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection(host, int(port)), 10)
                await asyncio.wait_for(_one_request(reader, writer, request), 10)
                conns.append((reader, writer))
            except Exception:  # noqa: BLE001 - every failure is one error
                errors += 1

    await asyncio.gather(*(open_one() for _ in range(a.conns)))
    go = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGUSR1, go.set)
    with open(a.status, "w") as f:
        json.dump({"open": len(conns), "errors": errors}, f)
    try:
        await asyncio.wait_for(go.wait(), a.max_wait)
    except asyncio.TimeoutError:
        pass
    # Still alive? One more request on every held connection.
    dead = 0

    async def check(rw):
        nonlocal dead
        async with sem:
            try:
                await asyncio.wait_for(_one_request(rw[0], rw[1], request), 10)
            except Exception:  # noqa: BLE001
                dead += 1

    checked = conns[::a.check_every]
    await asyncio.gather(*(check(rw) for rw in checked))
    for _, w in conns:
        w.close()
    with open(a.status + ".done", "w") as f:
        json.dump({"open": len(conns), "errors": errors, "checked_after_idle": len(checked),
                   "dead_after_idle": dead}, f)


def cmd_idle(a):
    import asyncio  # only the idle client needs it; the other commands start faster without
    asyncio.run(_idle(a))


# ---------------------------------------------------------------- noisy neighbours

def _h2_frame(ftype, flags, stream, payload=b""):
    return len(payload).to_bytes(3, "big") + bytes([ftype, flags]) + stream.to_bytes(4, "big") + payload


def _hpack_literal(name, value):
    """Literal header field without indexing, new name, no Huffman (RFC 7541 §6.2.2)."""
    def string(b):
        assert len(b) < 127
        return bytes([len(b)]) + b
    return b"\x00" + string(name) + string(value)


async def _noisy_h2_window0(a, host, port, stop):
    """One h2c connection with SETTINGS_INITIAL_WINDOW_SIZE=0 that opens `streams` GETs of big
    bodies, answers PINGs, and never grants any window."""
    import asyncio
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
    writer.write(_h2_frame(0x4, 0, 0, (0x4).to_bytes(2, "big") + (0).to_bytes(4, "big")))
    for i in range(a.streams):
        block = (_hpack_literal(b":method", b"GET") + _hpack_literal(b":scheme", b"http")
                 + _hpack_literal(b":path", f"/bytes?n={a.bytes}".encode())
                 + _hpack_literal(b":authority", a.addr.encode()))
        writer.write(_h2_frame(0x1, 0x5, 2 * i + 1, block))
    await writer.drain()
    opened = a.streams

    async def pump():
        while True:
            head = await reader.readexactly(9)
            n = int.from_bytes(head[:3], "big")
            ftype, flags = head[3], head[4]
            payload = await reader.readexactly(n)
            if ftype == 0x6 and not flags & 0x1:  # PING: answer, as a live client does
                writer.write(_h2_frame(0x6, 0x1, 0, payload))
            elif ftype == 0x4 and not flags & 0x1:  # SETTINGS: ACK
                writer.write(_h2_frame(0x4, 0x1, 0))
            elif ftype == 0x7:  # GOAWAY
                return
            await writer.drain()

    task = asyncio.ensure_future(pump())
    _noisy_status(a, {"conns": 1, "streams": opened})
    await asyncio.wait([task, asyncio.ensure_future(stop.wait())], return_when=asyncio.FIRST_COMPLETED)
    task.cancel()
    writer.close()


async def _noisy_silent(a, host, port, stop):
    """`conns` TCP connections that never send a byte."""
    import asyncio
    conns, errors = [], 0
    sem = asyncio.Semaphore(200)

    async def open_one():
        nonlocal errors
        async with sem:
            try:
                conns.append(await asyncio.wait_for(asyncio.open_connection(host, port), 10))
            except Exception:  # noqa: BLE001 - every failure is one error
                errors += 1

    await asyncio.gather(*(open_one() for _ in range(a.conns)))
    _noisy_status(a, {"conns": len(conns), "errors": errors})
    await stop.wait()
    for _, w in conns:
        w.close()


async def _noisy_slow_uploads(a, host, port, stop):
    """`conns` HTTP/1.1 POSTs to /sink announcing 100 MB and sending 1 KiB every 100 ms."""
    import asyncio
    writers, errors = [], 0
    head = (f"POST /sink HTTP/1.1\r\nhost: {a.addr}\r\ncontent-length: {100 << 20}\r\n"
            "content-type: application/octet-stream\r\n\r\n").encode()

    async def open_one():
        nonlocal errors
        try:
            _, w = await asyncio.wait_for(asyncio.open_connection(host, port), 10)
            w.write(head)
            await w.drain()
            writers.append(w)
        except Exception:  # noqa: BLE001
            errors += 1

    await asyncio.gather(*(open_one() for _ in range(a.conns)))
    _noisy_status(a, {"conns": len(writers), "errors": errors})
    chunk = b"x" * 1024
    while not stop.is_set():
        for w in list(writers):
            try:
                w.write(chunk)
            except Exception:  # noqa: BLE001 - the subject closed it: that is allowed
                writers.remove(w)
        try:
            await asyncio.wait_for(stop.wait(), 0.1)
        except asyncio.TimeoutError:
            pass
    for w in writers:
        w.close()


def _noisy_status(a, d):
    with open(a.status + ".tmp", "w") as f:
        json.dump(d, f)
    os.replace(a.status + ".tmp", a.status)


async def _noisy(a):
    import asyncio
    host, port = a.addr.rsplit(":", 1)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.call_later(a.max_seconds, stop.set)
    kind = {"h2-window0": _noisy_h2_window0, "silent": _noisy_silent,
            "slow-uploads": _noisy_slow_uploads}[a.kind]
    try:
        await kind(a, host, int(port), stop)
    except Exception as e:  # noqa: BLE001 - say why, the run goes on
        _noisy_status(a, {"error": repr(e)})


def cmd_noisy(a):
    """Runs one abusive client (until SIGTERM or --max-seconds) next to a good one; writes
    --status once the abuse is in place."""
    import asyncio
    asyncio.run(_noisy(a))


# ---------------------------------------------------------------- rule churn

def cmd_churn(a):
    """Changes the rule table every `interval` s until SIGTERM (or max_seconds). The benchmark
    request (VERSION: foobar) stays routed to the shadow in every version; one other rule comes
    and goes, so every write is a real change."""
    stop = False

    def on_term(*_):
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)
    deadline = time.monotonic() + a.max_seconds
    changes, failures, i = 0, 0, 0
    while not stop and time.monotonic() < deadline:
        i += 1
        extra = f"churn-{i}"
        try:
            if a.kind == "ktx-router":
                write_atomic(a.file, routes_yaml(["foobar"], extra if i % 2 else None))
            elif a.kind == "nginx":
                write_atomic(a.file, nginx_conf(a.prefix, a.h1, a.h2, 1, extra if i % 2 else None))
                os.kill(a.pid, signal.SIGHUP)
            elif a.kind == "haproxy":
                cmd = f"add map {a.file} {extra} shadow" if i % 2 else f"del map {a.file} churn-{i - 1}"
                with socket.socket(socket.AF_UNIX) as s:
                    s.connect(a.sock)
                    s.sendall((cmd + "\n").encode())
                    s.shutdown(socket.SHUT_WR)
                    reply = s.recv(4096).decode().strip()
                if reply:
                    raise RuntimeError(reply)
            changes += 1
        except Exception as e:  # noqa: BLE001 - counted and reported
            failures += 1
            print(f"churn: {e}", file=sys.stderr)
        time.sleep(a.interval)
    with open(a.status, "w") as f:
        json.dump({"changes": changes, "change_failures": failures}, f)


# ---------------------------------------------------------------- rows and report

def _load(path):
    if not path or not os.path.exists(path):
        return {}
    with open(path) as f:
        text = f.read().strip()
    return json.loads(text) if text else {}


def cmd_load_row(a):
    """Row of a throughput scenario: REPS h2load runs (each with its two snaps), the median run
    by CPU per request, and the paced latency run."""
    runs = []
    for snap0, snap1, txt in a.run:
        with open(txt) as f:
            load = parse_h2load(f.read())
        cpu, foreign = window(snap0, snap1, a.subject)
        load["cpu_us"] = cpu
        load["cpu_us_per_req"] = round(cpu / load["ok"], 2) if load["ok"] else None
        load["core1_foreign_pct"] = foreign
        runs.append(load)
    runs.sort(key=lambda r: r["cpu_us_per_req"] if r["cpu_us_per_req"] is not None else float("inf"))
    median = dict(runs[(len(runs) - 1) // 2])
    median["runs"] = len(runs)
    median["cpu_us_per_req_all"] = [r["cpu_us_per_req"] for r in runs]
    print(json.dumps(build_row(a.scenario, a.subject, load=median,
                               lat=latency_summary(a.latency_log))))


def cmd_row(a):
    load = _load(a.load)
    lat = _load(a.latency)
    cpu_us, foreign = (None, None)
    if a.snap0 and a.snap1:
        cpu_us, foreign = window(a.snap0, a.snap1, a.subject)
    row = build_row(a.scenario, a.subject, load=load, lat=lat, requests=a.requests,
                    cpu_us=cpu_us if cpu_us is not None else a.cpu_us, rps=a.rps,
                    errors=a.errors, rss_kb=a.rss_kb)
    if foreign is not None:
        row["core1_foreign_pct"] = foreign
    for kv in a.extra:
        k, v = kv.split("=", 1)
        try:
            row[k] = json.loads(v)
        except json.JSONDecodeError:
            row[k] = v
    print(json.dumps(row))


def build_row(scenario, subject, load=None, lat=None, requests=None, cpu_us=None, rps=None,
              errors=None, rss_kb=None):
    """One results.json row; every metric not given stays null."""
    load, lat = load or {}, lat or {}
    row = {
        "scenario": scenario, "subject": subject,
        "cpu_us_per_req": None, "rps": None, "p50_us": None, "p99_us": None,
        "errors": None, "rss_kb": rss_kb,
    }
    requests = requests if requests is not None else load.get("ok")
    cpu_us = cpu_us if cpu_us is not None else load.get("cpu_us")
    if cpu_us is not None and requests:
        row["cpu_us_per_req"] = round(cpu_us / requests, 2)
        row["cpu_us_total"] = cpu_us
    for k in ("core1_foreign_pct", "runs", "cpu_us_per_req_all"):
        if k in load:
            row[k] = load[k]
    if requests is not None:
        row["requests"] = requests
    row["rps"] = rps if rps is not None else load.get("rps")
    total_errors = load.get("errors", 0) if load else None
    if lat:
        row["p50_us"], row["p99_us"] = lat.get("p50_us"), lat.get("p99_us")
        row["latency_samples"] = lat.get("samples")
        total_errors = (total_errors or 0) + lat.get("bad", 0)
    if errors is not None:
        total_errors = (total_errors or 0) + errors
    row["errors"] = total_errors
    return row


SUBJECTS = ["direct", "ktx-router", "nginx", "haproxy"]
SCENARIOS = ["http1-keepalive", "http1-10k-rules", "h2c", "grpc-unary", "stream-100mb",
             "idle-5k", "rule-churn", "noisy-h2-window0", "noisy-silent-5k", "noisy-slow-uploads"]


def _fmt(v, nd=1):
    if v is None:
        return "—"
    if isinstance(v, float):
        return f"{v:.0f}" if abs(v) >= 1000 else f"{v:.{nd}f}"
    return str(v)


# Why the router is built on hyper + h2 + tokio rather than pingora: the measurements that
# decided it (from the router issue, same machine, same method), kept with every report.
ENGINE_CHOICE = [
    "\n## Engine choice (recorded when the router was started)\n",
    "Measured on this machine before the router was written (2 cores, one pinned to the proxy, "
    "same run, CPU µs per request of the proxy process, HTTP/1.1 keep-alive / h2c 10x10):\n",
    "| engine | HTTP/1.1 | h2c | idle connection |",
    "|---|---:|---:|---:|",
    "| hyper hello-world server (no proxying; the floor) | 7.2–8.8 | 2.9 | ~15–17 KB |",
    "| nginx 1.22 with kt-connect's config | 15.3–19.8 | 21.7–30.3 | 0.3 KB |",
    "| a naive hyper-util proxy | 18.3–20.0 | 15.1–15.4 | ~15–17 KB |",
    "| pingora 0.9.1 (`ProxyHttp`, one thread, keep-alive pool) | 23.6–31.2 | 17.7–22.6 | 30.8 KB |\n",
    "pingora cost more CPU per request than nginx and the naive hyper proxy on both protocols, "
    "and twice hyper's memory per idle connection, so ktx-router's hot path is hyper 1 (server "
    "and client connections, no hyper-util legacy client) on tokio, with its own upstream pool, "
    "an indexed rule table, and idle HTTP/1.1 connections parked outside hyper (buffers freed). "
    "The tables above, measured by `loadtests/run.sh`, are the numbers that count now.",
]


def cmd_report(a):
    rows = []
    with open(a.rows) as f:
        for line in f:
            if line.strip():
                rows.append(json.loads(line))
    order = {(s, j): (SCENARIOS.index(s) if s in SCENARIOS else 99, SUBJECTS.index(j)
                      if j in SUBJECTS else 99) for s, j in ((r["scenario"], r["subject"]) for r in rows)}
    rows.sort(key=lambda r: order[(r["scenario"], r["subject"])])
    by = {(r["scenario"], r["subject"]): r for r in rows}
    # added latency = subject - direct, same scenario
    for r in rows:
        d = by.get((r["scenario"], "direct"))
        for k in ("p50_us", "p99_us"):
            if r["subject"] != "direct" and d and r.get(k) is not None and d.get(k) is not None:
                r["added_" + k] = r[k] - d[k]
            elif r.get(k) is not None or k in r:
                r.setdefault("added_" + k, None)
    # loadtests/tunnel.sh and loadtests/cluster.sh write their own scenarios (tunnel-*,
    # mesh-first-request) and RESULTS.md sections into the same files: keep them.
    previous = _load(a.json_out) if os.path.exists(a.json_out) else []
    kept = [r for r in previous if isinstance(r, dict)
            and (str(r.get("scenario", "")).startswith("tunnel-")
                 or r.get("scenario") == "mesh-first-request")]
    with open(a.json_out, "w") as f:
        json.dump(rows + kept, f, indent=2)
        f.write("\n")

    meta = _load(a.meta)
    L = []
    L.append("# Load test results: ktx-router vs nginx vs HAProxy vs direct\n")
    L.append("Generated by `loadtests/run.sh`; do not edit by hand (re-run the command below).\n")
    L.append(f"- **Command:** `{meta.get('command', '?')}`")
    L.append(f"- **Date:** {meta.get('date', '?')}")
    L.append(f"- **Machine:** {meta.get('machine', '?')}")
    L.append(f"- **Versions:** {meta.get('versions', '?')}")
    L.append(f"- **Mode:** {meta.get('mode', '?')}")
    L.append("- **Pinning:** process under test on core 1 (`taskset -c 1`); load generator and "
             "both backends on core 0 (`taskset -c 0`); all of them at `nice -n -15` so other "
             "work on a shared machine yields to them.")
    L.append("- **CPU µs/req:** delta of utime+stime (+cutime+cstime of reaped children) from "
             "`/proc/PID/stat`, summed over the subject's processes, divided by requests answered "
             "2xx in the max-throughput run (10 ms tick resolution). For `direct` it is the "
             "backend's own CPU, shown for scale only.")
    L.append("- **Latency:** separate run paced at 1,000 req/s (h2load `--rps`, per-request "
             "`--log-file`); *added* = subject minus `direct` in the same scenario.\n")
    foreign = [r["core1_foreign_pct"] for r in rows if r.get("core1_foreign_pct") is not None]
    if foreign:
        avg = sum(foreign) / len(foreign)
        L.append(f"- **Other load on core 1 during measurements:** mean {avg:.0f}%, max "
                 f"{max(foreign):.0f}% of the core (CPU time of processes other than the subject).\n")
        if avg > 10:
            L.append("> **Noisy machine.** Other processes (e.g. builds) ran on core 1 while subjects "
                     "were measured. They run at lower priority and mostly fill the time the subject "
                     "leaves idle (the load generator's core 0 is the bottleneck), but they share "
                     "caches and delay wake-ups: CPU µs/req of one subject moved by tens of percent between runs here, rps "
                     "and p99 far more. Compare subjects within one table only, and re-run on a quiet "
                     "machine (full mode waits for quiet CPUs and keeps the median of 3 runs) before "
                     "drawing fine conclusions.\n")
    if meta.get("notes"):
        for n in meta["notes"]:
            L.append(f"> {n}\n")

    L.append("| scenario | subject | CPU µs/req | rps | p50 µs | p99 µs | added p50 µs | added p99 µs | errors | RSS KB/conn | notes |")
    L.append("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for r in rows:
        if r["scenario"].startswith("noisy-"):
            continue  # their own table below
        note = str(r.get("note", ""))
        fp = r.get("core1_foreign_pct")
        if fp is not None and fp > 5:
            note = (note + "; " if note else "") + f"other processes on core 1: {fp}%"
        if r.get("rule_changes") is not None:
            note = (note + "; " if note else "") + f"{r['rule_changes']} rule changes, {r.get('misrouted')} misrouted"
        if r.get("mib_per_s") is not None:
            note = (note + "; " if note else "") + f"{r['mib_per_s']} MiB/s"
        if r.get("idle_conns") is not None:
            note = (note + "; " if note else "") + f"{r['idle_conns']} idle conns held"
        r_note = note
        L.append("| " + " | ".join([
            r["scenario"], r["subject"], _fmt(r.get("cpu_us_per_req"), 2), _fmt(r.get("rps")),
            _fmt(r.get("p50_us")), _fmt(r.get("p99_us")), _fmt(r.get("added_p50_us")),
            _fmt(r.get("added_p99_us")), _fmt(r.get("errors")), _fmt(r.get("rss_kb"), 2),
            r_note.replace("|", "/")]) + " |")

    noisy = [r for r in rows if r["scenario"].startswith("noisy-")]
    if noisy:
        L.append("\n## Noisy neighbours (the good client's latency alone and under abuse)\n")
        L.append("| scenario | subject | quiet p99 µs | p99 µs under abuse | × quiet | errors | RSS MiB | notes |")
        L.append("|---|---|---:|---:|---:|---:|---:|---|")
        for r in noisy:
            q, p = r.get("quiet_p99_us"), r.get("p99_us")
            rss = r.get("rss_kb")
            L.append("| " + " | ".join([
                r["scenario"], r["subject"], _fmt(q), _fmt(p),
                _fmt(p / q if isinstance(p, (int, float)) and isinstance(q, (int, float)) and q else None, 2),
                _fmt(r.get("errors")), _fmt(rss / 1024 if isinstance(rss, (int, float)) else None, 1),
                str(r.get("note", "")).replace("|", "/")]) + " |")

    def cpu(s, j):
        r = by.get((s, j))
        return r.get("cpu_us_per_req") if r else None

    L.append("\n## ktx-router / nginx (CPU µs per request; below 1.0 means ktx-router is cheaper)\n")
    L.append("| scenario | ktx-router | nginx | ratio | ktx-router / haproxy |")
    L.append("|---|---:|---:|---:|---:|")
    for s in SCENARIOS:
        k, n, h = cpu(s, "ktx-router"), cpu(s, "nginx"), cpu(s, "haproxy")
        if k is None and n is None:
            continue
        L.append(f"| {s} | {_fmt(k, 2)} | {_fmt(n, 2)} | "
                 f"{_fmt(k / n if k and n else None, 2)} | {_fmt(k / h if k and h else None, 2)} |")

    L.append("\n## Targets\n")

    def verdict(ok):
        return "**not measured**" if ok is None else ("**met**" if ok else "**not met**")

    k1, n1 = cpu("http1-keepalive", "ktx-router"), cpu("http1-keepalive", "nginx")
    kh, nh = cpu("h2c", "ktx-router"), cpu("h2c", "nginx")
    k10 = cpu("http1-10k-rules", "ktx-router")
    idle = by.get(("idle-5k", "ktx-router"), {})
    churn = by.get(("rule-churn", "ktx-router"), {})
    t = []
    r1 = k1 / n1 if k1 and n1 else None
    t.append(("HTTP/1.1 CPU per request ≤ 0.9× nginx", r1 is not None and r1 <= 0.9 if r1 else None,
              f"ratio {_fmt(r1, 2)} ({_fmt(k1, 2)} vs {_fmt(n1, 2)} µs)"))
    r2 = kh / nh if kh and nh else None
    t.append(("h2c CPU per request ≤ 0.8× nginx", r2 <= 0.8 if r2 else None,
              f"ratio {_fmt(r2, 2)} ({_fmt(kh, 2)} vs {_fmt(nh, 2)} µs)"))
    rk = idle.get("rss_kb")
    t.append(("≤ 4 KB RSS per idle keep-alive connection", rk <= 4 if rk is not None else None,
              f"{_fmt(rk, 2)} KB/conn"))
    ce = churn.get("errors")
    t.append(("0 errors while rules change", ce == 0 if ce is not None else None,
              f"{_fmt(ce)} errors, {_fmt(churn.get('rule_changes'))} rule changes"))
    r3 = k10 / k1 if k10 and k1 else None
    t.append(("10k rules < 10% more CPU per request than 1 rule", r3 < 1.10 if r3 else None,
              f"ratio {_fmt(r3, 2)} ({_fmt(k10, 2)} vs {_fmt(k1, 2)} µs)"))
    for s in ("noisy-h2-window0", "noisy-silent-5k", "noisy-slow-uploads"):
        k, n = by.get((s, "ktx-router"), {}), by.get((s, "nginx"), {})
        kq, kp, np_ = k.get("quiet_p99_us"), k.get("p99_us"), n.get("p99_us")
        ok = None
        if isinstance(kq, (int, float)) and isinstance(kp, (int, float)) and k.get("errors") is not None:
            ok = kp <= 2 * kq and k["errors"] == 0 and (not isinstance(np_, (int, float)) or kp <= np_)
        t.append((f"{s}: p99 ≤ 2× quiet, 0 errors, ≤ nginx's p99", ok,
                  f"{_fmt(kp)} vs quiet {_fmt(kq)} µs, nginx {_fmt(np_)} µs, {_fmt(k.get('errors'))} errors"))
    if foreign and sum(foreign) / len(foreign) > 10:
        L.append("Verdicts below come from this one run on a busy machine (see above): a ratio "
                 "within about ±20% of its threshold is not conclusive either way.\n")
    L.append("| target | verdict | measured |")
    L.append("|---|---|---|")
    for name, ok, detail in t:
        L.append(f"| {name} | {verdict(ok)} | {detail} |")
    if meta.get("footer"):
        L.append("")
        L.extend(meta["footer"])
    L.extend(ENGINE_CHOICE)
    if os.path.exists(a.md_out):
        with open(a.md_out) as f:
            old = f.read()
        for name in ("tunnel", "cluster"):
            begin, end = old.find(f"<!-- {name}:begin"), old.find(f"<!-- {name}:end -->")
            if begin != -1 and end != -1:
                L.append("\n" + old[begin:end + len(f"<!-- {name}:end -->")])
    with open(a.md_out, "w") as f:
        f.write("\n".join(L) + "\n")


# ---------------------------------------------------------------- main

def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("cpu"); s.add_argument("pid", type=int); s.set_defaults(f=cmd_cpu)
    s = sub.add_parser("core"); s.add_argument("cpu", type=int); s.set_defaults(f=cmd_core)
    s = sub.add_parser("foreign"); s.add_argument("--before", required=True)
    s.add_argument("--after", required=True); s.add_argument("--subject-us", type=int, required=True)
    s.set_defaults(f=cmd_foreign)
    s = sub.add_parser("rss"); s.add_argument("pid", type=int); s.set_defaults(f=cmd_rss)
    s = sub.add_parser("h2load"); s.add_argument("file"); s.add_argument("--cpu-us", type=int)
    s.add_argument("--foreign"); s.set_defaults(f=cmd_h2load)
    s = sub.add_parser("median"); s.add_argument("files", nargs="+"); s.set_defaults(f=cmd_median)
    s = sub.add_parser("quiet"); s.add_argument("--max-wait", type=float, default=5)
    s.add_argument("--threshold", type=float, default=15); s.set_defaults(f=cmd_quiet)
    s = sub.add_parser("latency"); s.add_argument("file"); s.set_defaults(f=cmd_latency)
    s = sub.add_parser("routes"); s.add_argument("--rules", type=int, default=1)
    s.add_argument("--extra"); s.add_argument("--out", required=True); s.set_defaults(f=cmd_routes)
    s = sub.add_parser("nginx-conf")
    for k in ("--prefix", "--h1", "--h2", "--out"):
        s.add_argument(k, required=True)
    s.add_argument("--rules", type=int, default=1); s.add_argument("--extra")
    s.set_defaults(f=cmd_nginx_conf)
    s = sub.add_parser("haproxy-conf")
    for k in ("--sock", "--h1", "--h2", "--out"):
        s.add_argument(k, required=True)
    s.add_argument("--rules", type=int, default=1); s.add_argument("--map")
    s.set_defaults(f=cmd_haproxy_conf)
    s = sub.add_parser("idle"); s.add_argument("--addr", required=True)
    s.add_argument("--conns", type=int, default=5000); s.add_argument("--parallel", type=int, default=200)
    s.add_argument("--header", action="append", default=[]); s.add_argument("--status", required=True)
    s.add_argument("--max-wait", type=float, default=60)
    s.add_argument("--check-every", type=int, default=1); s.set_defaults(f=cmd_idle)
    s = sub.add_parser("noisy"); s.add_argument("--kind", required=True)
    s.add_argument("--addr", required=True); s.add_argument("--status", required=True)
    s.add_argument("--conns", type=int, default=5000); s.add_argument("--streams", type=int, default=256)
    s.add_argument("--bytes", type=int, default=65536); s.add_argument("--max-seconds", type=float, default=120)
    s.set_defaults(f=cmd_noisy)
    s = sub.add_parser("churn"); s.add_argument("--kind", required=True)
    s.add_argument("--file", required=True); s.add_argument("--status", required=True)
    s.add_argument("--interval", type=float, default=0.1); s.add_argument("--max-seconds", type=float, default=60)
    s.add_argument("--prefix"); s.add_argument("--h1"); s.add_argument("--h2")
    s.add_argument("--pid", type=int); s.add_argument("--sock"); s.set_defaults(f=cmd_churn)
    s = sub.add_parser("snap"); s.add_argument("pid", type=int); s.set_defaults(f=cmd_snap)
    s = sub.add_parser("load-row")
    s.add_argument("--scenario", required=True); s.add_argument("--subject", required=True)
    s.add_argument("--run", nargs=3, action="append", required=True, metavar=("SNAP0", "SNAP1", "H2LOAD_TXT"))
    s.add_argument("--latency-log", required=True); s.set_defaults(f=cmd_load_row)
    s = sub.add_parser("row")
    s.add_argument("--snap0"); s.add_argument("--snap1")
    s.add_argument("--scenario", required=True); s.add_argument("--subject", required=True)
    s.add_argument("--load"); s.add_argument("--latency"); s.add_argument("--cpu-us", type=int)
    s.add_argument("--requests", type=int); s.add_argument("--rps", type=float)
    s.add_argument("--errors", type=int); s.add_argument("--rss-kb", type=float)
    s.add_argument("--extra", action="append", default=[]); s.set_defaults(f=cmd_row)
    s = sub.add_parser("report"); s.add_argument("--rows", required=True)
    s.add_argument("--json-out", required=True); s.add_argument("--md-out", required=True)
    s.add_argument("--meta"); s.set_defaults(f=cmd_report)
    a = p.parse_args()
    a.f(a)


if __name__ == "__main__":
    main()
