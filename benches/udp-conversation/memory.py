#!/usr/bin/env python3
"""Memory per live UDP conversation: RSS growth of `percore serve conversation-echo` (one core,
CPU 0) per peer, with N peers (distinct source ports) each holding a conversation open.

    python3 benches/udp-conversation/memory.py [PERCORE_BINARY] [PEERS]

Defaults: target/release/percore, 8000 peers. The server first answers 2,000 datagrams from
one warm-up peer (its receive ring and allocator warm), then each peer sends one datagram and
waits for its answer; RSS is read from /proc before and after, 1 s after each phase. The
conversations stay open (the default idle timeout is 60 s) while RSS is read.
"""
import re
import resource
import socket
import subprocess
import sys
import time


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def main():
    binary = sys.argv[1] if len(sys.argv) > 1 else "target/release/percore"
    peers = int(sys.argv[2]) if len(sys.argv) > 2 else 8000
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    server = subprocess.Popen(
        ["taskset", "-c", "0", binary, "serve", "conversation-echo", "--listen",
         "127.0.0.1:0", "--cpus", "0", "--max-conversations", str(peers + 10)],
        stderr=subprocess.PIPE, text=True)
    try:
        addr = None
        for line in server.stderr:
            found = re.search(r"listening on (\S+)", line)
            if found:
                addr = found.group(1)
                break
        host, port = addr.rsplit(":", 1)
        target = (host, int(port))
        warm = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        warm.settimeout(2)
        for _ in range(2000):
            warm.sendto(b"x" * 16, target)
            warm.recv(100)
        time.sleep(1)
        before = rss_kib(server.pid)
        sockets = []
        for _ in range(peers):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.settimeout(2)
            s.sendto(b"hello-hello-hell", target)
            s.recv(100)
            sockets.append(s)
        time.sleep(1)
        after = rss_kib(server.pid)
        print(f"{binary}: {peers} conversations, RSS {before} -> {after} KiB, "
              f"{(after - before) * 1024 / peers:.0f} B per conversation")
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    main()
