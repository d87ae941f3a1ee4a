#!/usr/bin/python3
"""SMTP load client for ccu's e-mail door (issue 6 benchmark).

Opens CONCURRENCY connections, each sending its share of COUNT messages of
SIZE bytes (a realistic text body; unique Message-ID, one envelope sender
per connection) to one of our mailboxes, reusing the connection (RSET
between messages, like a relay's delivery agent). Every message must get
250: a refusal fails the run. With --metrics, the clock stops only when
the server's `ccu_email_conversations_routed_total` reaches COUNT (every
conversation stored AND taken in by the router), not at the last 250.
Prints messages per second.

    tools/smtp_bench.py --port 2525 --count 2000 --concurrency 8 --size 51200

Uses only the Python standard library (smtplib).
"""
import argparse
import smtplib
import sys
import threading
import time
import urllib.request
import uuid


def message(size: int, sender: str, to: str) -> bytes:
    head = (
        f"From: Benchmark <{sender}>\r\nTo: {to}\r\nSubject: carico {uuid.uuid4().hex[:8]}\r\n"
        f"Message-ID: <{uuid.uuid4().hex}@bench.example>\r\n"
        "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
    ).encode()
    line = b"Buongiorno, scrivo per la TARI della mia abitazione in via Roma 12.\r\n"
    body = line * max(1, (size - len(head)) // len(line))
    return head + body


def worker(args, n: int, index: int, errors: list) -> None:
    sender = f"bench{index}-{uuid.uuid4().hex[:6]}@bench.example"
    try:
        with smtplib.SMTP(args.server, args.port, local_hostname="bench.example", timeout=120) as smtp:
            smtp.ehlo()
            for _ in range(n):
                refused = smtp.sendmail(sender, [args.to], message(args.size, sender, args.to))
                if refused:
                    errors.append(str(refused))
                    return
    except Exception as e:  # noqa: BLE001 - any failure fails the run
        errors.append(f"{type(e).__name__}: {e}")


def routed(url: str) -> int:
    with urllib.request.urlopen(url, timeout=10) as r:
        for line in r.read().decode().splitlines():
            if line.startswith("ccu_email_conversations_routed_total"):
                return int(float(line.split()[-1]))
    return 0


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--server", default="127.0.0.1")
    p.add_argument("--port", type=int, default=2525)
    p.add_argument("--to", default="urp@comune.monteverde.it")
    p.add_argument("--count", type=int, default=2000)
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--size", type=int, default=50 * 1024)
    p.add_argument("--metrics", help="the server's /metrics URL: wait until every conversation is routed")
    args = p.parse_args()
    per = [args.count // args.concurrency + (1 if i < args.count % args.concurrency else 0)
           for i in range(args.concurrency)]
    errors: list = []
    threads = [threading.Thread(target=worker, args=(args, n, i, errors)) for i, n in enumerate(per)]
    start = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        print(f"failed: {errors[:3]}", file=sys.stderr)
        return 1
    if args.metrics:
        deadline = time.monotonic() + 120
        while routed(args.metrics) < args.count:
            if time.monotonic() > deadline:
                print(f"only {routed(args.metrics)} of {args.count} routed", file=sys.stderr)
                return 1
            time.sleep(0.005)
    elapsed = time.monotonic() - start
    print(f"{args.count / elapsed:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
