//! nginx (one worker) on a free loopback port, for the tests that need a real HTTP server
//! (`percore load`'s, the proxy's), and the way to stop it.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Starts nginx (one worker) serving `/` (200, "hello") and `/missing` (404) on a free
/// loopback port, everything in `dir`; returns once it answers. Stop it with [`terminate`].
pub(crate) fn spawn(dir: &Path) -> (Child, SocketAddr) {
    std::fs::create_dir_all(dir.join("logs")).unwrap();
    // Workers run as nobody: they must be able to read the prefix.
    let _ = Command::new("chmod").arg("755").arg(dir).status();
    for _attempt in 0..5 {
        // nginx cannot report a port it picked, so find a free one; a clash makes nginx exit
        // at once and the next attempt takes another.
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let d = dir.display();
        let conf = format!(
            "worker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\n\
             events {{ worker_connections 1024; }}\n\
             http {{\n  access_log off;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n\
               fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
               keepalive_requests 1000000;\n\
               server {{\n    listen 127.0.0.1:{port};\n    location / {{ return 200 \"hello\\n\"; }}\n\
                 location /missing {{ return 404; }}\n  }}\n}}\n"
        );
        std::fs::write(dir.join("nginx.conf"), conf).unwrap();
        let mut child = Command::new("nginx")
            .arg("-p")
            .arg(dir)
            .arg("-e")
            .arg(dir.join("error.log"))
            .arg("-c")
            .arg(dir.join("nginx.conf"))
            .args(["-g", "daemon off;"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nginx (nginx-light) is installed by .ci/test-all");
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                break;
            }
            if let Ok(mut conn) = TcpStream::connect(addr) {
                let _ = conn.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
                let mut got = String::new();
                let _ = conn.read_to_string(&mut got);
                if got.starts_with("HTTP/1.1 200") {
                    return (child, addr);
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
    panic!(
        "nginx did not start: {}",
        std::fs::read_to_string(dir.join("error.log")).unwrap_or_default()
    );
}

/// Stops a child that may be a master process (nginx): SIGCONT (it may be stopped), SIGTERM so
/// that it takes its workers down with it, SIGKILL if it has not exited within a second; then
/// reaps it.
pub(crate) fn terminate(child: &mut Child) {
    for signal in [libc::SIGCONT, libc::SIGTERM] {
        // SAFETY: kill(2) on our own child's pid, which stays ours until it is waited for.
        let _ = unsafe { libc::kill(child.id() as libc::pid_t, signal) };
    }
    let deadline = Instant::now() + Duration::from_secs(1);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = child.kill();
    let _ = child.wait();
}
