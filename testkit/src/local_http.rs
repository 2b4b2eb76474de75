//! What the local stand-ins for cloud services share: an HTTP/1 server on 127.0.0.1 in a thread
//! of its own (stopped on drop) and query-string helpers written independently of the client
//! code they check.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;

use http_body_util::Full;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;

/// A response of the local servers.
pub type Resp = hyper::Response<Full<bytes::Bytes>>;

/// A running local server; stopped on drop.
pub struct LocalServer {
    /// `http://127.0.0.1:PORT`
    pub endpoint: String,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl LocalServer {
    /// Serves every request with `handle` until dropped.
    pub fn start<F, Fut>(handle: F) -> Self
    where
        F: Fn(hyper::Request<hyper::body::Incoming>) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = Resp> + Send + 'static,
    {
        let (addr_tx, addr_rx) = std::sync::mpsc::channel::<SocketAddr>();
        let (stop_tx, mut stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                addr_tx.send(listener.local_addr().unwrap()).unwrap();
                loop {
                    tokio::select! {
                        accepted = listener.accept() => {
                            let Ok((socket, _)) = accepted else { continue };
                            let handle = handle.clone();
                            let svc = hyper::service::service_fn(move |req| {
                                let fut = handle(req);
                                async move { Ok::<_, std::convert::Infallible>(fut.await) }
                            });
                            tokio::spawn(async move {
                                let _ = ConnBuilder::new(TokioExecutor::new())
                                    .serve_connection(TokioIo::new(socket), svc)
                                    .await;
                            });
                        }
                        _ = &mut stop_rx => break,
                    }
                }
            });
        });
        let addr = addr_rx.recv().unwrap();
        Self {
            endpoint: format!("http://{addr}"),
            shutdown: Some(stop_tx),
            thread: Some(thread),
        }
    }
}

impl Drop for LocalServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A JSON answer.
pub fn json_answer(status: u16, body: serde_json::Value) -> Resp {
    hyper::Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(bytes::Bytes::from(body.to_string())))
        .unwrap()
}

/// Form/query decoding (`+` is a space, `%XX` bytes).
pub fn decode_component(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let v = u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap_or(b'?');
                out.push(v);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `k=v&...` pairs, decoded, into `into`.
pub fn parse_pairs(s: &str, into: &mut BTreeMap<String, String>) {
    for pair in s.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        into.insert(decode_component(k), decode_component(v));
    }
}

/// This testkit's own percent-encoder for signature checks: unreserved characters as is, the
/// rest `%XX` (written independently of the client's).
pub fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}
