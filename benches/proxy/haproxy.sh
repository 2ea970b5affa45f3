#!/usr/bin/env bash
# haproxy 2.6 (Debian) as the proxy benchmark runs it: one thread, TCP mode, listening on
# 127.0.0.1:PORT and relaying each connection to UPSTREAM; in the foreground, as this
# script's own process (exec), so that it can be pinned, sampled and stopped by its pid.
#
#   bash benches/proxy/haproxy.sh PORT UPSTREAM
set -euo pipefail
port=$1
upstream=$2
# The configuration comes on standard input: no file is left behind.
exec haproxy -db -f /dev/stdin <<CFG
global
    nbthread 1
    maxconn 8000
defaults
    mode tcp
    timeout connect 5s
    timeout client 60s
    timeout server 60s
frontend proxy
    bind 127.0.0.1:$port
    default_backend upstream
backend upstream
    server echo $upstream
CFG
