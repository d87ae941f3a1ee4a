#!/usr/bin/env python3
# Start-up time and idle memory of the release binary: run from the repository root
# after `cargo build --release`: python3 tools/start_bench.py [path/to/ccu]
import subprocess, time, urllib.request, statistics, os, json, shutil, socket
import sys
BIN=sys.argv[1] if len(sys.argv) > 1 else "target/release/ccu"
times=[]
for i in range(6):
    d=f"/tmp/ccu-bench-run{i}"; shutil.rmtree(d, ignore_errors=True); os.makedirs(d)
    s=socket.socket(); s.bind(("127.0.0.1",0)); port=s.getsockname()[1]; s.close()
    s=socket.socket(); s.bind(("127.0.0.1",0)); sport=s.getsockname()[1]; s.close()
    env=dict(os.environ, CCU_HTTP_ADDR=f"127.0.0.1:{port}", CCU_SMTP_ADDR=f"127.0.0.1:{sport}", CCU_SIP_ADDR="127.0.0.1:0", CCU_DATA_DIR=d, CCU_DATABASE_URL=f"sqlite://{d}/ccu.db", RUST_LOG="warn")
    t0=time.monotonic()
    p=subprocess.Popen([BIN,"--config","config/default.toml"],env=env,stdout=subprocess.DEVNULL,stderr=subprocess.DEVNULL)
    while True:
        try:
            if urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz",timeout=1).status==200: break
        except Exception: time.sleep(0.002)
    dt=time.monotonic()-t0
    if i>0: times.append(dt)  # first run warms the page cache
    time.sleep(1)
    rss=int([l for l in open(f"/proc/{p.pid}/status") if l.startswith("VmRSS")][0].split()[1])
    p.terminate(); p.wait()
    print(f"run {i}: ready in {dt*1000:.0f} ms (fresh database), idle RSS {rss/1024:.1f} MiB")
print("median start->readyz ms:", round(statistics.median(times)*1000))
