# Sourced by the load benchmarks: starts nginx 1.22 with one worker pinned to CPU 0 on a free
# loopback port, everything under "$OUT/nginx", serving `return 200 "hello\n"` with keep-alive.
# Sets NGINX (the master's pid), url, and an EXIT trap that resumes (if frozen) and stops it.
mkdir -p "$OUT/nginx/logs" && chmod 755 "$OUT" "$OUT/nginx"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat >"$OUT/nginx/nginx.conf" <<CONF
worker_processes 1;
worker_cpu_affinity 01;
pid $OUT/nginx/nginx.pid;
error_log $OUT/nginx/error.log;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 100000000;
  client_body_temp_path $OUT/nginx/body; proxy_temp_path $OUT/nginx/proxy;
  fastcgi_temp_path $OUT/nginx/fastcgi; uwsgi_temp_path $OUT/nginx/uwsgi; scgi_temp_path $OUT/nginx/scgi;
  server { listen 127.0.0.1:$port; location / { return 200 "hello\n"; } }
}
CONF
taskset -c 0 nginx -p "$OUT/nginx" -e "$OUT/nginx/error.log" -c "$OUT/nginx/nginx.conf" -g 'daemon off;' &
NGINX=$!
trap 'kill -CONT $NGINX $(pgrep -P $NGINX) 2>/dev/null; kill $NGINX 2>/dev/null; wait $NGINX 2>/dev/null || true' EXIT
for _ in $(seq 50); do curl -sf "http://127.0.0.1:$port/" >/dev/null 2>&1 && break; sleep 0.1; done
url="http://127.0.0.1:$port/"
