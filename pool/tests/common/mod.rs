//! Real servers for the pool's tests, and the connection type the tests pool.
//!
//! - [`EchoServer`]: percore-net's [`TcpService`] echoing bytes, on its own runtime on another
//!   thread (like `percore serve echo`), stopped by a graceful shutdown.
//! - [`DyingServer`]: a line echo server on the test's own core that can drop every
//!   connection or close its listener mid-test, and counts the connections its peers closed.
//!
//! Pooled connections are `BufStream<TcpStream>`s; [`round_trip`] sends one line and expects
//! it back.

#![allow(dead_code, unreachable_pub)]

use std::cell::{Cell, RefCell};
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use percore_engine::sync::channel::{unbounded, Receiver};
use percore_engine::time::timeout;
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
    /// One message per connection whose client closed its end.
    hang_ups: Receiver<()>,
    hung_up: Cell<usize>,
}

impl DyingServer {
    pub fn start() -> DyingServer {
        let mut listener = TcpListener::bind(loopback()).unwrap();
        let addr = listener.local_addr();
        let conns: Rc<RefCell<Vec<JoinHandle<()>>>> = Rc::default();
        let held = conns.clone();
        let (counter, hang_ups) = unbounded();
        let acceptor = percore_engine::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                let counter = counter.clone();
                held.borrow_mut().push(percore_engine::spawn(async move {
                    let mut conn = BufStream::new(conn);
                    loop {
                        match conn.read_line(MAX_LINE).await {
                            Ok(Some(line)) => {
                                if conn.write(&line).await.is_err() || conn.flush().await.is_err() {
                                    return;
                                }
                            }
                            // EOF: the client closed its socket.
                            Ok(None) => break drop(counter.send(())),
                            Err(_) => return,
                        }
                    }
                }));
            }
        });
        DyingServer {
            addr,
            acceptor: Some(acceptor),
            conns,
            hang_ups,
            hung_up: Cell::new(0),
        }
    }

    /// Connections whose client closed its end (the server read EOF), seen so far.
    pub fn hung_up(&self) -> usize {
        while self.hang_ups.try_recv().is_ok() {
            self.hung_up.set(self.hung_up.get() + 1);
        }
        self.hung_up.get()
    }

    /// Waits until `n` clients in all have closed their end (at most 5 s for each one
    /// missing); returns how many have.
    pub async fn wait_hung_up(&self, n: usize) -> usize {
        while self.hung_up() < n {
            match timeout(Duration::from_secs(5), self.hang_ups.recv()).await {
                Ok(Some(())) => self.hung_up.set(self.hung_up.get() + 1),
                Ok(None) | Err(_) => break,
            }
        }
        self.hung_up()
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
