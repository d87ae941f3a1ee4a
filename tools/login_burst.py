#!/usr/bin/env python3
# Memory under a flood of logins: 400 concurrent logins of unknown users from
# 400 addresses (X-Forwarded-For). Run from the repository root after
# `cargo build --release`: python3 tools/login_burst.py [path/to/ccu]
import subprocess, time, urllib.request, os, shutil, socket, json, concurrent.futures
import sys
BIN=sys.argv[1] if len(sys.argv) > 1 else "target/release/ccu"
d="/tmp/ccu-bench-burst"; shutil.rmtree(d, ignore_errors=True); os.makedirs(d)
s=socket.socket(); s.bind(("127.0.0.1",0)); port=s.getsockname()[1]; s.close()
s=socket.socket(); s.bind(("127.0.0.1",0)); sport=s.getsockname()[1]; s.close()
env=dict(os.environ, CCU_HTTP_ADDR=f"127.0.0.1:{port}", CCU_SMTP_ADDR=f"127.0.0.1:{sport}", CCU_SIP_ADDR="127.0.0.1:0", CCU_DATA_DIR=d, CCU_DATABASE_URL=f"sqlite://{d}/ccu.db", RUST_LOG="warn", CCU_HTTP__TRUST_FORWARDED_FOR="true")
p=subprocess.Popen([BIN,"--config","config/default.toml"],env=env,stdout=subprocess.DEVNULL,stderr=subprocess.DEVNULL)
while True:
    try:
        if urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz",timeout=1).status==200: break
    except Exception: time.sleep(0.01)
rss=lambda: int([l for l in open(f"/proc/{p.pid}/status") if l.startswith("VmRSS")][0].split()[1])/1024
print(f"idle after start: {rss():.1f} MiB")
def login(i):
    req=urllib.request.Request(f"http://127.0.0.1:{port}/api/v1/auth/login", data=json.dumps({"username":f"nobody{i}","password":"x"*20}).encode(), headers={"content-type":"application/json","x-forwarded-for":f"10.1.{i//200}.{i%200+1}"})
    try: return urllib.request.urlopen(req, timeout=30).status
    except urllib.error.HTTPError as e: return e.code
peak=0
with concurrent.futures.ThreadPoolExecutor(200) as ex:
    futs=[ex.submit(login,i) for i in range(400)]
    while not all(f.done() for f in futs):
        peak=max(peak,rss()); time.sleep(0.05)
    codes=[f.result() for f in futs]
from collections import Counter
print("status codes:", Counter(codes))
print(f"peak RSS during 400 concurrent logins: {peak:.1f} MiB")
time.sleep(2)
print(f"idle after the burst: {rss():.1f} MiB")
p.terminate(); p.wait()
