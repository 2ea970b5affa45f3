//! Real servers for the pool's tests, and the connection type the tests pool.
//!
//! - [`EchoServer`]: percore-net's [`TcpService`] echoing bytes, on its own runtime on another
//!   thread (like `percore serve echo`), stopped by a graceful shutdown.
//! - [`DyingServer`]: a line echo server on the test's own core that can drop every
//!   connection or close its listener mid-test.
//!
//! Pooled connections are `BufStream<TcpStream>`s; [`round_trip`] sends one line and expects
//! it back.

#![allow(dead_code, unreachable_pub)]

use std::cell::RefCell;
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;

use percore_engine::{JoinHandle, Runtime, RuntimeHandle};
use percore_net::service::TcpService;
use percore_net::tcp::{TcpListener, TcpStream};
use percore_net::BufStream;

/// The pooled connection type.
pub type Conn = BufStream<TcpStream>;

/// Longest line the tests read.
pub const MAX_LINE: usize = 1024;

pub fn loopback() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

/// Connects to `addr`: the tests' factory.
pub async fn connect(addr: SocketAddr) -> io::Result<Conn> {
    Ok(BufStream::new(TcpStream::connect(addr).await?))
}

/// Sends `line` (ending in `\n`) and reads it back; EOF is an error.
pub async fn round_trip(conn: &mut Conn, line: &[u8]) -> io::Result<()> {
    conn.write(line).await?;
    conn.flush().await?;
    match conn.read_line(MAX_LINE).await? {
        Some(echo) if echo == line => Ok(()),
        Some(echo) => Err(io::Error::other(format!(
            "expected {line:?} back, got {echo:?}"
        ))),
        None => Err(io::ErrorKind::UnexpectedEof.into()),
    }
}

/// percore's echo service on a runtime on another thread.
pub struct EchoServer {
    pub addr: SocketAddr,
    handle: RuntimeHandle,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl EchoServer {
    pub fn start() -> EchoServer {
        let (tx, rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let runtime = Runtime::builder().pin(false).build().unwrap();
            let handle = runtime.handle();
            runtime.block_on(async move {
                let listener = TcpListener::bind(loopback()).unwrap();
                tx.send((listener.local_addr(), handle)).unwrap();
                TcpService::new()
                    .serve(listener, |mut conn, _peer| async move {
                        while let Some(bytes) = conn.read_some(64 * 1024).await? {
                            conn.write(&bytes).await?;
                            conn.flush().await?;
                        }
                        Ok(())
                    })
                    .await
                    .unwrap();
            });
        });
        let (addr, handle) = rx.recv().expect("echo server started");
        EchoServer {
            addr,
            handle,
            thread: Some(thread),
        }
    }

    /// Stops accepting, waits for the open connections to end, joins the thread. Async: the
    /// calling core must keep running, or the closes of its own sockets never complete and
    /// the server waits for them forever.
    pub async fn stop(mut self) {
        self.handle.shutdown();
        while self.thread.as_ref().is_some_and(|t| !t.is_finished()) {
            percore_engine::time::sleep(std::time::Duration::from_millis(1)).await;
        }
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if let Some(thread) = self.thread.take() {
            self.handle.shutdown();
            thread.join().expect("echo server thread");
        }
    }
}

/// Dropped off the core that used it (after `block_on` returned), so nothing it waits for
/// depends on the blocked thread.
impl Drop for EchoServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// A line echo server on the current core that can die mid-test.
pub struct DyingServer {
    pub addr: SocketAddr,
    acceptor: Option<JoinHandle<()>>,
    conns: Rc<RefCell<Vec<JoinHandle<()>>>>,
}

impl DyingServer {
    pub fn start() -> DyingServer {
        let mut listener = TcpListener::bind(loopback()).unwrap();
        let addr = listener.local_addr();
        let conns: Rc<RefCell<Vec<JoinHandle<()>>>> = Rc::default();
        let held = conns.clone();
        let acceptor = percore_engine::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                held.borrow_mut().push(percore_engine::spawn(async move {
                    let mut conn = BufStream::new(conn);
                    while let Ok(Some(line)) = conn.read_line(MAX_LINE).await {
                        if conn.write(&line).await.is_err() || conn.flush().await.is_err() {
                            return;
                        }
                    }
                }));
            }
        });
        DyingServer {
            addr,
            acceptor: Some(acceptor),
            conns,
        }
    }

    /// Connections accepted and not killed.
    pub fn connections(&self) -> usize {
        self.conns.borrow().len()
    }

    /// Drops every connection (their sockets close); keeps listening.
    pub fn kill_connections(&self) {
        let conns = std::mem::take(&mut *self.conns.borrow_mut());
        drop(conns);
    }

    /// Drops every connection and the listener: new connections are refused.
    pub async fn die(&mut self) {
        self.kill_connections();
        drop(self.acceptor.take());
        // The listening socket closes once its accept op is cancelled: wait for refusals.
        while std::net::TcpStream::connect(self.addr).is_ok() {
            percore_engine::yield_now().await;
        }
    }
}

/// Waits (bounded) until this process has at most `expected` fds open: closes can complete
/// a loop turn after the drop that asked for them.
pub async fn settle_fds(expected: usize) -> usize {
    let mut open = percore_engine::open_fd_count().unwrap();
    for _ in 0..1000 {
        if open <= expected {
            break;
        }
        percore_engine::time::sleep(std::time::Duration::from_millis(1)).await;
        open = percore_engine::open_fd_count().unwrap();
    }
    open
}
