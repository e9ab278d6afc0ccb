//! A TCP relay between a client and a herald server whose connections a test can cut, to make
//! the network drop a connection without stopping the server.
// A test binary exports nothing: `pub` says what the relay offers to the tests that use it.
#![allow(dead_code, unreachable_pub)]

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;

/// A relay on a loopback port. It keeps a copy of what the server sent, so a test can see
/// frames the client does not show.
pub struct Relay {
    addr: SocketAddr,
    open: Arc<Mutex<Vec<TcpStream>>>,
    from_server: Arc<Mutex<Vec<u8>>>,
}

impl Relay {
    pub fn start(upstream: SocketAddr) -> Relay {
        Relay::on(
            TcpListener::bind("127.0.0.1:0").expect("bind the relay"),
            upstream,
        )
    }

    /// A relay accepting on `listener`.
    pub fn on(listener: TcpListener, upstream: SocketAddr) -> Relay {
        let addr = listener.local_addr().expect("relay address");
        let open: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let from_server: Arc<Mutex<Vec<u8>>> = Arc::default();
        let registry = Arc::clone(&open);
        let copy = Arc::clone(&from_server);
        thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { break };
                let Ok(server) = TcpStream::connect(upstream) else {
                    continue;
                };
                if let (Ok(mut from), Ok(mut to)) = (client.try_clone(), server.try_clone()) {
                    thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(Shutdown::Write);
                    });
                }
                if let (Ok(mut from), Ok(mut to)) = (server.try_clone(), client.try_clone()) {
                    let copy = Arc::clone(&copy);
                    thread::spawn(move || {
                        let mut buffer = [0u8; 16 * 1024];
                        while let Ok(n @ 1..) = from.read(&mut buffer) {
                            if to.write_all(&buffer[..n]).is_err() {
                                break;
                            }
                            if let Ok(mut copy) = copy.lock() {
                                copy.extend_from_slice(&buffer[..n]);
                            }
                        }
                        let _ = to.shutdown(Shutdown::Write);
                    });
                }
                if let Ok(mut open) = registry.lock() {
                    open.push(client);
                    open.push(server);
                }
            }
        });
        Relay {
            addr,
            open,
            from_server,
        }
    }

    /// `http://` and its address.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The address it accepts on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Everything the server has sent through this relay, as text.
    pub fn sent_by_server(&self) -> String {
        match self.from_server.lock() {
            Ok(sent) => String::from_utf8_lossy(&sent).into_owned(),
            Err(_) => String::new(),
        }
    }

    /// The Seqs of the bookmarks the server has sent through this relay, in order.
    pub fn bookmarks(&self) -> Vec<u64> {
        const MARK: &str = r#""Action":"bookmark","Key":""#;
        let sent = self.sent_by_server();
        sent.match_indices(MARK)
            .filter_map(|(at, _)| {
                let rest = &sent[at + MARK.len()..];
                let digits = rest.split('"').next()?;
                digits.parse().ok()
            })
            .collect()
    }

    /// Breaks every connection relayed so far.
    pub fn cut(&self) {
        if let Ok(mut open) = self.open.lock() {
            for stream in open.drain(..) {
                let _ = stream.shutdown(Shutdown::Both);
            }
        }
    }
}
