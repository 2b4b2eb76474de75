//! A loopback TCP proxy that injects faults on the wire between the SDK and the S3 server:
//! connection resets in the middle of a body (either direction), clean closes that truncate a
//! response, stalls, and canned HTTP error answers (503 SlowDown, 500) sent without forwarding.
//! Each new connection takes the next queued fault (none: plain forwarding), so a test decides
//! exactly what goes wrong and how often.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

/// What goes wrong on one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireFault {
    /// Reset (RST) the connection after this many response bytes reached the client.
    ResetResponseAfter(u64),
    /// Close the connection cleanly (FIN) after this many response bytes: a truncated body.
    CloseResponseAfter(u64),
    /// Reset the connection after this many request bytes reached the server (an upload cut
    /// in the middle of its body).
    ResetRequestAfter(u64),
    /// Stop forwarding the response for `millis` after `after` bytes, then carry on.
    Stall { after: u64, millis: u64 },
    /// Answer the first request with this HTTP status (S3 XML error body, `SlowDown` for 503,
    /// `InternalError` otherwise) without forwarding it, then close.
    Status(u16),
}

/// A running proxy; stopped on drop.
pub struct FaultProxy {
    /// `http://127.0.0.1:PORT`, to use as the S3 endpoint.
    pub endpoint: String,
    faults: Arc<Mutex<VecDeque<WireFault>>>,
    injected: Arc<AtomicU64>,
    connections: Arc<AtomicU64>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FaultProxy {
    /// Proxies to `upstream` (`http://127.0.0.1:PORT`).
    pub fn start(upstream: &str) -> Self {
        let upstream: SocketAddr = upstream
            .trim_start_matches("http://")
            .parse()
            .expect("upstream address");
        let faults = Arc::new(Mutex::new(VecDeque::new()));
        let injected = Arc::new(AtomicU64::new(0));
        let connections = Arc::new(AtomicU64::new(0));
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (stop_tx, mut stop_rx) = tokio::sync::oneshot::channel::<()>();
        let (f, inj, conns) = (faults.clone(), injected.clone(), connections.clone());
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
                addr_tx.send(listener.local_addr().unwrap()).unwrap();
                loop {
                    tokio::select! {
                        accepted = listener.accept() => {
                            let Ok((client, _)) = accepted else { continue };
                            conns.fetch_add(1, Ordering::SeqCst);
                            let fault = f.lock().unwrap().pop_front();
                            if fault.is_some() {
                                inj.fetch_add(1, Ordering::SeqCst);
                            }
                            tokio::spawn(serve(client, upstream, fault));
                        }
                        _ = &mut stop_rx => break,
                    }
                }
            });
        });
        let addr: SocketAddr = addr_rx.recv().unwrap();
        Self {
            endpoint: format!("http://{addr}"),
            faults,
            injected,
            connections,
            shutdown: Some(stop_tx),
            thread: Some(thread),
        }
    }

    /// Connections accepted so far (faults apply per connection: a pooled connection is not a
    /// new one).
    pub fn connections(&self) -> u64 {
        self.connections.load(Ordering::SeqCst)
    }

    /// Queues faults for the next connections, in order.
    pub fn push(&self, faults: impl IntoIterator<Item = WireFault>) {
        self.faults.lock().unwrap().extend(faults);
    }

    /// Faults applied so far.
    pub fn injected(&self) -> u64 {
        self.injected.load(Ordering::SeqCst)
    }

    /// Faults still queued.
    pub fn pending(&self) -> usize {
        self.faults.lock().unwrap().len()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn serve(client: TcpStream, upstream: SocketAddr, fault: Option<WireFault>) {
    if let Some(WireFault::Status(code)) = fault {
        return answer_status(client, code).await;
    }
    if matches!(
        fault,
        Some(WireFault::ResetResponseAfter(_) | WireFault::ResetRequestAfter(_))
    ) {
        // Dropping the socket with a zero linger sends RST instead of FIN.
        #[allow(deprecated)]
        let _ = client.set_linger(Some(Duration::ZERO));
    }
    let Ok(server) = TcpStream::connect(upstream).await else {
        return;
    };
    let (mut cr, mut cw) = client.into_split();
    let (mut sr, mut sw) = server.into_split();
    let request_limit = match fault {
        Some(WireFault::ResetRequestAfter(n)) => Some(n),
        _ => None,
    };
    let up = async move {
        let mut buf = vec![0u8; 64 * 1024];
        let mut sent = 0u64;
        loop {
            let n = match cr.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if let Some(limit) = request_limit
                && sent + n as u64 >= limit
            {
                let keep = (limit - sent) as usize;
                let _ = sw.write_all(&buf[..keep]).await;
                return true; // cut here
            }
            sent += n as u64;
            if sw.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
        let _ = sw.shutdown().await;
        false
    };
    let down = async move {
        let mut buf = vec![0u8; 64 * 1024];
        let mut sent = 0u64;
        let mut stalled = false;
        loop {
            let n = match sr.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let threshold = match fault {
                Some(WireFault::ResetResponseAfter(k) | WireFault::CloseResponseAfter(k)) => {
                    Some(k)
                }
                Some(WireFault::Stall { after, .. }) if !stalled => Some(after),
                _ => None,
            };
            if let Some(limit) = threshold
                && sent + n as u64 >= limit
            {
                let keep = (limit - sent) as usize;
                let _ = cw.write_all(&buf[..keep]).await;
                sent = limit;
                if let Some(WireFault::Stall { millis, .. }) = fault {
                    stalled = true;
                    tokio::time::sleep(Duration::from_millis(millis)).await;
                    if cw.write_all(&buf[keep..n]).await.is_err() {
                        break;
                    }
                    sent += (n - keep) as u64;
                    continue;
                }
                return true; // cut here
            }
            sent += n as u64;
            if cw.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
        let _ = cw.shutdown().await;
        false
    };
    // Whichever direction cuts first ends the whole connection (both halves are dropped).
    tokio::select! {
        cut = up => { if !cut { /* request side done; keep answering */ } }
        _ = down => {}
    }
}

async fn answer_status(mut client: TcpStream, code: u16) {
    // Read the request head (the body, if any, is left unread: the connection is closed).
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 64 * 1024 {
        match client.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let (reason, s3_code) = if code == 503 {
        ("Slow Down", "SlowDown")
    } else {
        ("Internal Server Error", "InternalError")
    };
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>{s3_code}</Code>\
         <Message>injected by the test proxy</Message></Error>"
    );
    let resp = format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: application/xml\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = client.write_all(resp.as_bytes()).await;
    let _ = client.shutdown().await;
}
