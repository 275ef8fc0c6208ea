#!/usr/bin/env python3
"""The ingest benchmark's sender and probes.

  send.py tcp HOST PORT FILE        send FILE over one TCP connection; print the start time
  send.py udp HOST PORT FILE        send each line of FILE as one datagram; print the start time
  send.py wait METRICS_URL N        poll a guard until it accounted for N messages; print that time
  send.py count METRICS_URL         messages the guard accounted for
  send.py udp-report METRICS_URL PORT   received, dropped (by the guard), dropped (by the kernel)
"""
import socket
import sys
import time
import urllib.request

CHUNK = 4 << 20


def send_tcp(host, port, path):
    start = time.time()
    with socket.create_connection((host, port)) as s, open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            s.sendall(chunk)
        s.shutdown(socket.SHUT_WR)
    print(f"{start:.6f}")


def send_udp(host, port, path):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    start = time.time()
    with open(path, "rb") as f:
        for line in f:
            s.sendto(line.rstrip(b"\n"), (host, port))
    print(f"{start:.6f}")


def counters(url):
    text = urllib.request.urlopen(url, timeout=10).read().decode()
    found = {}
    for line in text.splitlines():
        if line.startswith("wbguard_syslog_messages_total{"):
            result = line.split('result="')[1].split('"')[0]
            found[result] = int(float(line.rsplit(" ", 1)[1]))
    return found


def accounted(url):
    # Every message ends as one of these; "dropped" and "oversize" are losses.
    return sum(counters(url).values())


def wait(url, n):
    while True:
        if accounted(url) >= n:
            print(f"{time.time():.6f}")
            return
        time.sleep(0.02)


def kernel_drops(port):
    with open("/proc/net/udp") as f:
        for line in f.readlines()[1:]:
            fields = line.split()
            if int(fields[1].split(":")[1], 16) == port:
                return int(fields[-1])
    return 0


def main():
    command = sys.argv[1]
    if command == "tcp":
        send_tcp(sys.argv[2], int(sys.argv[3]), sys.argv[4])
    elif command == "udp":
        send_udp(sys.argv[2], int(sys.argv[3]), sys.argv[4])
    elif command == "wait":
        wait(sys.argv[2], int(sys.argv[3]))
    elif command == "count":
        c = counters(sys.argv[2])
        print(sum(v for k, v in c.items() if k not in ("dropped", "oversize")))
    elif command == "udp-report":
        c = counters(sys.argv[2])
        received = sum(v for k, v in c.items() if k not in ("dropped", "oversize"))
        print(received, c.get("dropped", 0), kernel_drops(int(sys.argv[3])))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
