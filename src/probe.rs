//! Tiny TCP probes that run inside a namespace: a server that greets and records who came,
//! and a client. The demo, the tests and the benchmarks use them to prove reachability and to
//! see the source address a peer arrives with (masquerade).

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::netns::{Netns, NetnsError};

/// Answers every connection with "hello from NAME" and records the peer's address.
/// Stops when dropped.
pub struct Server {
    pub addr: SocketAddr,
    peers: Arc<Mutex<Vec<IpAddr>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    pub fn start(
        ns: &Netns,
        ip: impl Into<IpAddr>,
        port: u16,
        name: &str,
    ) -> std::io::Result<Server> {
        let ip = ip.into();
        let listener = ns
            .run(move || TcpListener::bind((ip, port)))
            .map_err(std::io::Error::other)??;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let peers = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (p, s) = (peers.clone(), stop.clone());
        let greeting = greeting(name);
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((mut conn, peer)) => {
                        // An IPv4 client of a dual-stack socket shows as ::ffff:a.b.c.d.
                        let ip = match peer.ip() {
                            IpAddr::V6(v6) => {
                                v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4)
                            }
                            v4 => v4,
                        };
                        p.lock().unwrap().push(ip);
                        let _ = conn.set_nonblocking(false);
                        let _ = conn.write_all(greeting.as_bytes());
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Ok(Server {
            addr,
            peers,
            stop,
            thread: Some(thread),
        })
    }

    /// The source addresses of the connections so far.
    pub fn peers(&self) -> Vec<IpAddr> {
        self.peers.lock().unwrap().clone()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

pub fn greeting(name: &str) -> String {
    format!("hello from {name}\n")
}

/// Connects from inside `ns` and returns what the server said; None if unreachable in 2 s.
pub fn fetch(ns: &Netns, ip: impl Into<IpAddr>, port: u16) -> Result<Option<String>, NetnsError> {
    let ip = ip.into();
    ns.run(move || {
        let addr = SocketAddr::from((ip, port));
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        let mut buf = String::new();
        s.read_to_string(&mut buf).ok()?;
        Some(buf)
    })
}
