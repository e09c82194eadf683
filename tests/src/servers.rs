//! Small real servers that run on a thread inside a namespace and stop when dropped. They
//! use the kernel's sockets like any server; the clients are real tools (curl, ping) or
//! plain sockets.

use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpListener, TcpStream, UdpSocket},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::Duration,
};

use crate::Netns;

/// How often a server thread looks at its stop flag.
const POLL: Duration = Duration::from_millis(20);

/// A server thread plus the peers it has seen.
pub struct Server {
    stop: Arc<AtomicBool>,
    peers: Arc<Mutex<Vec<SocketAddr>>>,
    thread: Option<JoinHandle<anyhow::Result<()>>>,
}

impl Server {
    /// Source addresses of the clients served so far.
    pub fn peers(&self) -> Vec<SocketAddr> {
        self.peers.lock().expect("peers lock").clone()
    }

    /// An HTTP server on every IPv4 address, answering every request with `body`.
    pub fn http(ns: &Netns, port: u16, body: &'static str) -> anyhow::Result<Self> {
        Self::http_at(ns, SocketAddr::from(([0, 0, 0, 0], port)), body)
    }

    /// An HTTP server bound to exactly `at` (an address it only receives on if packets
    /// reach it addressed so), answering every request with `body`.
    pub fn http_at(ns: &Netns, at: SocketAddr, body: &'static str) -> anyhow::Result<Self> {
        Self::tcp(ns, at, move |mut stream, _peer| {
            stream.set_read_timeout(Some(Duration::from_secs(5)))?;
            let mut request = [0u8; 1024];
            let _ = stream.read(&mut request)?;
            write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            )
        })
    }

    /// A UDP server that echoes every datagram back to its sender.
    pub fn udp_echo(ns: &Netns, port: u16) -> anyhow::Result<Self> {
        Self::spawn(
            ns,
            move || UdpSocket::bind(("0.0.0.0", port)),
            move |socket, stop, peers| {
                socket.set_read_timeout(Some(POLL))?;
                let mut buf = vec![0u8; 65_536];
                while !stop.load(Ordering::Relaxed) {
                    match socket.recv_from(&mut buf) {
                        Ok((n, peer)) => {
                            peers.lock().expect("peers lock").push(peer);
                            socket.send_to(&buf[..n], peer)?;
                        }
                        Err(e)
                            if matches!(
                                e.kind(),
                                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                            ) => {}
                        Err(e) => return Err(e.into()),
                    }
                }
                Ok(())
            },
        )
    }

    /// A TCP server that answers each connection with the source address it saw.
    pub fn tcp_whoami(ns: &Netns, port: u16) -> anyhow::Result<Self> {
        Self::tcp_whoami_at(ns, SocketAddr::from(([0, 0, 0, 0], port)))
    }

    /// The same, bound to `at` (e.g. an IPv6 address).
    pub fn tcp_whoami_at(ns: &Netns, at: SocketAddr) -> anyhow::Result<Self> {
        Self::tcp(ns, at, |mut stream, peer| stream.write_all(peer.ip().to_string().as_bytes()))
    }

    /// Accepts TCP connections on `at` and hands each to `handle`, one at a time.
    fn tcp(
        ns: &Netns,
        at: SocketAddr,
        handle: impl Fn(TcpStream, SocketAddr) -> std::io::Result<()> + Send + 'static,
    ) -> anyhow::Result<Self> {
        Self::spawn(
            ns,
            move || TcpListener::bind(at),
            move |listener, stop, peers| {
                listener.set_nonblocking(true)?;
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((stream, peer)) => {
                            peers.lock().expect("peers lock").push(peer);
                            stream.set_nonblocking(false)?;
                            handle(stream, peer)?;
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                            std::thread::sleep(POLL)
                        }
                        Err(e) => return Err(e.into()),
                    }
                }
                Ok(())
            },
        )
    }

    /// Binds on a thread inside `ns`, returns once the socket is bound (so a client can
    /// connect at once), and serves there until dropped.
    fn spawn<S: Send + 'static>(
        ns: &Netns,
        bind: impl FnOnce() -> std::io::Result<S> + Send + 'static,
        serve: impl FnOnce(S, Arc<AtomicBool>, Arc<Mutex<Vec<SocketAddr>>>) -> anyhow::Result<()>
        + Send
        + 'static,
    ) -> anyhow::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let peers = Arc::new(Mutex::new(Vec::new()));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (s, p) = (stop.clone(), peers.clone());
        let thread = ns.spawn(move || match bind() {
            Ok(socket) => {
                let _ = ready_tx.send(Ok(()));
                serve(socket, s, p)
            }
            Err(e) => {
                let _ = ready_tx.send(Err(e.to_string()));
                Ok(())
            }
        });
        ready_rx
            .recv_timeout(Duration::from_secs(5))
            .map_err(|_| anyhow::anyhow!("server thread did not start in {}", ns.name()))?
            .map_err(|e| anyhow::anyhow!("server in {} could not bind: {e}", ns.name()))?;
        let thread = Some(std::thread::spawn(move || thread.join().expect("server thread")?));
        Ok(Self { stop, peers, thread })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take()
            && let Ok(Err(e)) = thread.join()
        {
            eprintln!("server stopped with an error: {e:#}");
        }
    }
}
