//! An S3 server in the test process: `s3s` + `s3s-fs` over real HTTP on 127.0.0.1, in a temp
//! directory, on its own thread. Optionally misbehaves in one chosen way (for negative tests).
//! Shared by the integration tests and `examples/quickstart.rs`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use bytes::Bytes;
use futures::StreamExt as _;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use s3s::dto::*;
use s3s::{S3, S3Request, S3Response, S3Result};
use s3s_fs::FileSystem;

/// Credentials the embedded server accepts.
pub const ACCESS_KEY: &str = "cryptobucket-test";
/// Secret of [`ACCESS_KEY`].
pub const SECRET_KEY: &str = "cryptobucket-test-secret";

/// How the server misbehaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// A correct server.
    None,
    /// Ignores `Range` and answers 200 with the whole object.
    IgnoreRange,
    /// Answers ranged GETs with a range one byte later than asked.
    ShiftRange,
    /// Announces the full Content-Length but sends only half the body, then closes.
    TruncateBody,
    /// Answers HEAD without a Content-Length header.
    HeadWithoutLength,
    /// Answers ranged GETs with 206 but without a Content-Range header.
    RangeWithoutContentRange,
    /// Answers every ListParts as truncated, with the same next-part marker each time.
    ListPartsRepeatsMarker,
}

/// A test's callback, called with a count.
pub type Hook = Arc<dyn Fn(u64) + Send + Sync>;

/// What the server has received and sent, for tests that bound the bytes a transfer moves.
#[derive(Default)]
pub struct Stats {
    /// Bytes of UploadPart bodies received (by Content-Length), including failed parts.
    pub part_bytes_in: AtomicU64,
    /// UploadPart requests received.
    pub parts_in: AtomicU64,
    /// Bytes of GetObject bodies sent (counted as the body streams out, so a client killed
    /// mid-body has moved only what it received).
    pub bytes_out: Arc<AtomicU64>,
    /// GetObject requests received.
    pub gets_in: AtomicU64,
    /// HeadObject requests received.
    pub heads_in: AtomicU64,
    /// UploadPart requests still answered normally; later ones get 503 SlowDown.
    pub part_budget: AtomicI64,
    /// GetObject requests still answered normally; later ones get 503 SlowDown.
    pub get_budget: AtomicI64,
    /// GetObject body bytes still sent: the body that crosses it is cut there (the connection
    /// breaks, as a network failure would), and later GetObjects get 503 SlowDown.
    pub get_byte_budget: Arc<AtomicI64>,
    /// The next this many UploadParts answer 503 SlowDown (then normal service resumes).
    pub failing_parts: AtomicI64,
    /// The next this many CreateMultipartUploads answer 503 SlowDown.
    pub failing_creates: AtomicI64,
    /// Called (on a blocking thread) after each UploadPartCopy is answered, with the number of
    /// part copies so far: tests change objects at exact points of a copy.
    pub after_part_copy: std::sync::Mutex<Option<Hook>>,
    part_copies: AtomicU64,
    /// Each CompleteMultipartUpload waits this many milliseconds before it is carried out, as
    /// a store assembling a large object takes its time.
    pub complete_delay_ms: AtomicU64,
    /// CompleteMultipartUploads being answered right now.
    completing: AtomicI64,
    /// UploadParts received while a CompleteMultipartUpload was being answered (a transfer
    /// overlapping one file's completion with the next file's parts).
    pub parts_during_complete: AtomicU64,
    /// GetObjects whose range starts at this byte (`u64::MAX`: none) send their body at
    /// `slow_get_rate`, as one slow connection among fast ones does.
    pub slow_gets_at: AtomicU64,
    /// Bytes per second of those slow GetObjects (1 MiB/s unless changed).
    pub slow_get_rate: AtomicU64,
    /// Body bytes those slow GetObjects have sent.
    pub slow_bytes_out: Arc<AtomicU64>,
    /// The slow GetObjects also send nothing while any other GetObject body is streaming (a
    /// connection starved by the others): what they carry then depends on what the client
    /// asks of the other connections, not on how fast the machine runs.
    pub slow_gets_starve: std::sync::atomic::AtomicBool,
    /// GetObject bodies being sent right now.
    streaming: Arc<AtomicI64>,
}

impl Stats {
    fn new() -> Self {
        Self {
            part_budget: AtomicI64::new(i64::MAX),
            get_budget: AtomicI64::new(i64::MAX),
            get_byte_budget: Arc::new(AtomicI64::new(i64::MAX)),
            slow_gets_at: AtomicU64::new(u64::MAX),
            slow_get_rate: AtomicU64::new(1 << 20),
            ..Self::default()
        }
    }

    /// From now on, send only `bytes` more bytes of GetObject bodies (`i64::MAX`: no limit),
    /// like a link that goes down in the middle of a download.
    pub fn limit_get_bytes(&self, bytes: i64) {
        self.get_byte_budget.store(bytes, Ordering::SeqCst);
    }

    /// From now on, answer only `parts` more UploadParts and `gets` more GetObjects normally
    /// (`i64::MAX`: no limit), like a store that starts throttling or going away mid-transfer.
    pub fn limit(&self, parts: i64, gets: i64) {
        self.part_budget.store(parts, Ordering::SeqCst);
        self.get_budget.store(gets, Ordering::SeqCst);
    }
}

/// Counts a GetObject body as streaming while it lives.
struct Streaming(Arc<AtomicI64>);

impl Streaming {
    fn new(count: Arc<AtomicI64>) -> Self {
        count.fetch_add(1, Ordering::SeqCst);
        Self(count)
    }
}

impl Drop for Streaming {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

fn spend(budget: &AtomicI64) -> S3Result<()> {
    if budget.fetch_sub(1, Ordering::SeqCst) <= 0 {
        budget.store(0, Ordering::SeqCst);
        Err(s3s::s3_error!(SlowDown, "test budget exhausted"))
    } else {
        Ok(())
    }
}

struct FaultyFs {
    fs: FileSystem,
    root: std::path::PathBuf,
    fault: Fault,
    stats: Arc<Stats>,
}

impl FaultyFs {
    /// s3s-fs 0.14.1 lists parts of an upload that does not exist as an empty list and answers
    /// AccessDenied to parts sent to one; S3 answers NoSuchUpload (404). Behave as S3 does.
    fn require_upload(&self, upload_id: &str) -> S3Result<()> {
        if self
            .root
            .join(format!(".upload-{upload_id}.json"))
            .is_file()
        {
            Ok(())
        } else {
            Err(s3s::s3_error!(NoSuchUpload))
        }
    }

    async fn faulty_get(
        &self,
        mut req: S3Request<GetObjectInput>,
    ) -> S3Result<S3Response<GetObjectOutput>> {
        match self.fault {
            Fault::IgnoreRange => req.input.range = None,
            Fault::ShiftRange => {
                if let Some(Range::Int { first, last }) = req.input.range {
                    req.input.range = Some(Range::Int {
                        first: first + 1,
                        last: last.map(|l| l + 1),
                    });
                }
            }
            _ => {}
        }
        // s3s-fs 0.14.1 answers a suffix range longer than the object with InternalError
        // (it seeks before the start); S3 returns the whole object. Serve it as S3 does.
        if let Some(Range::Suffix { length }) = req.input.range {
            let path = self.root.join(&req.input.bucket).join(&req.input.key);
            if let Ok(meta) = std::fs::metadata(path)
                && length > meta.len()
                && meta.len() > 0
            {
                req.input.range = Some(Range::Int {
                    first: 0,
                    last: None,
                });
            }
        }
        if self.stats.get_byte_budget.load(Ordering::SeqCst) <= 0 {
            return Err(s3s::s3_error!(SlowDown, "test byte budget exhausted"));
        }
        let slow = matches!(req.input.range, Some(Range::Int { first, .. })
            if first == self.stats.slow_gets_at.load(Ordering::SeqCst));
        let mut resp = self.fs.get_object(req).await?;
        if let Some(body) = resp.output.body.take() {
            // Counted until the body is sent or dropped.
            let guard = Streaming::new(self.stats.streaming.clone());
            let tracked = body.map(move |chunk| {
                let _ = &guard;
                chunk.map_err(|e| std::io::Error::other(e.to_string()))
            });
            resp.output.body = Some(StreamingBlob::wrap(tracked));
        }
        if slow && let Some(body) = resp.output.body.take() {
            let sent = self.stats.slow_bytes_out.clone();
            let starve = self.stats.slow_gets_starve.load(Ordering::SeqCst);
            let streaming = self.stats.streaming.clone();
            let rate = self.stats.slow_get_rate.load(Ordering::SeqCst).max(1) as f64;
            // When the next chunk may leave: each one moves it on by its length at `rate`
            // (a deadline rather than a pause per chunk, which the timer would round up).
            let clock = Arc::new(std::sync::Mutex::new(tokio::time::Instant::now()));
            let throttled = body.then(move |chunk| {
                let (sent, streaming, clock) = (sent.clone(), streaming.clone(), clock.clone());
                async move {
                    let c: Bytes = chunk.map_err(|e| std::io::Error::other(e.to_string()))?;
                    while starve && streaming.load(Ordering::SeqCst) > 1 {
                        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                    }
                    let due = {
                        let mut next = clock.lock().unwrap();
                        let due = (*next).max(tokio::time::Instant::now());
                        *next = due + std::time::Duration::from_secs_f64(c.len() as f64 / rate);
                        due
                    };
                    tokio::time::sleep_until(due).await;
                    sent.fetch_add(c.len() as u64, Ordering::SeqCst);
                    Ok::<_, std::io::Error>(c)
                }
            });
            resp.output.body = Some(StreamingBlob::wrap(throttled));
        }
        if self.stats.get_byte_budget.load(Ordering::SeqCst) != i64::MAX
            && let Some(body) = resp.output.body.take()
        {
            let budget = self.stats.get_byte_budget.clone();
            let limited = body.flat_map(move |chunk| {
                let items: Vec<Result<Bytes, std::io::Error>> = match chunk {
                    Err(e) => vec![Err(std::io::Error::other(e.to_string()))],
                    Ok(c) => {
                        let len = c.len() as i64;
                        let left = budget.fetch_sub(len, Ordering::SeqCst);
                        if left >= len {
                            vec![Ok(c)]
                        } else {
                            let keep = left.max(0) as usize;
                            vec![
                                Ok(c.slice(..keep)),
                                Err(std::io::Error::other("test byte budget exhausted")),
                            ]
                        }
                    }
                };
                futures::stream::iter(items)
            });
            resp.output.body = Some(StreamingBlob::wrap(limited));
        }
        if self.fault == Fault::RangeWithoutContentRange {
            resp.output.content_range = None;
        }
        if self.fault == Fault::TruncateBody
            && let Some(body) = resp.output.body.take()
        {
            let keep = resp.output.content_length.unwrap_or(0) as usize / 2;
            let mut sent = 0usize;
            let limited = body.map(move |chunk| {
                chunk
                    .map(|c: Bytes| {
                        let take = c.len().min(keep.saturating_sub(sent));
                        sent += take;
                        c.slice(..take)
                    })
                    .map_err(|e| std::io::Error::other(e.to_string()))
            });
            resp.output.body = Some(StreamingBlob::wrap(limited));
        }
        if let Some(body) = resp.output.body.take() {
            let out = self.stats.bytes_out.clone();
            let counted = body.map(move |chunk| {
                chunk
                    .inspect(|c: &Bytes| {
                        out.fetch_add(c.len() as u64, Ordering::Relaxed);
                    })
                    .map_err(|e| std::io::Error::other(e.to_string()))
            });
            resp.output.body = Some(StreamingBlob::wrap(counted));
        }
        Ok(resp)
    }
}

// async_trait must see the methods themselves, so the macro writes the whole impl.
macro_rules! faulty_impl {
    ($($name:ident: $input:ty => $output:ty;)*) => {
        #[async_trait::async_trait]
        impl S3 for FaultyFs {
            $(async fn $name(&self, req: S3Request<$input>) -> S3Result<S3Response<$output>> {
                self.fs.$name(req).await
            })*

            async fn get_object(&self, req: S3Request<GetObjectInput>) -> S3Result<S3Response<GetObjectOutput>> {
                self.stats.gets_in.fetch_add(1, Ordering::Relaxed);
                spend(&self.stats.get_budget)?;
                self.faulty_get(req).await
            }

            async fn create_multipart_upload(&self, req: S3Request<CreateMultipartUploadInput>) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
                if self.stats.failing_creates.fetch_sub(1, Ordering::SeqCst) > 0 {
                    return Err(s3s::s3_error!(SlowDown, "test: this upload cannot start"));
                }
                self.stats.failing_creates.fetch_max(0, Ordering::SeqCst);
                self.fs.create_multipart_upload(req).await
            }

            async fn upload_part(&self, req: S3Request<UploadPartInput>) -> S3Result<S3Response<UploadPartOutput>> {
                self.require_upload(&req.input.upload_id)?;
                spend(&self.stats.part_budget)?;
                if self.stats.failing_parts.fetch_sub(1, Ordering::SeqCst) > 0 {
                    return Err(s3s::s3_error!(SlowDown, "test: this part fails once"));
                }
                self.stats.failing_parts.fetch_max(0, Ordering::SeqCst);
                self.stats.parts_in.fetch_add(1, Ordering::Relaxed);
                if self.stats.completing.load(Ordering::SeqCst) > 0 {
                    self.stats.parts_during_complete.fetch_add(1, Ordering::SeqCst);
                }
                self.stats.part_bytes_in.fetch_add(req.input.content_length.unwrap_or(0) as u64, Ordering::Relaxed);
                self.fs.upload_part(req).await
            }

            async fn list_parts(&self, req: S3Request<ListPartsInput>) -> S3Result<S3Response<ListPartsOutput>> {
                self.require_upload(&req.input.upload_id)?;
                let mut resp = self.fs.list_parts(req).await?;
                if self.fault == Fault::ListPartsRepeatsMarker {
                    resp.output.is_truncated = Some(true);
                    resp.output.next_part_number_marker = Some(1);
                }
                Ok(resp)
            }

            async fn upload_part_copy(&self, req: S3Request<UploadPartCopyInput>) -> S3Result<S3Response<UploadPartCopyOutput>> {
                let resp = self.fs.upload_part_copy(req).await?;
                let n = self.stats.part_copies.fetch_add(1, Ordering::SeqCst) + 1;
                let hook = self.stats.after_part_copy.lock().unwrap().clone();
                if let Some(h) = hook {
                    let _ = tokio::task::spawn_blocking(move || h(n)).await;
                }
                Ok(resp)
            }

            async fn head_object(&self, req: S3Request<HeadObjectInput>) -> S3Result<S3Response<HeadObjectOutput>> {
                self.stats.heads_in.fetch_add(1, Ordering::Relaxed);
                let mut resp = self.fs.head_object(req).await?;
                if self.fault == Fault::HeadWithoutLength {
                    resp.output.content_length = None;
                }
                Ok(resp)
            }

            async fn complete_multipart_upload(&self, req: S3Request<CompleteMultipartUploadInput>) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
                self.require_upload(&req.input.upload_id)?;
                self.stats.completing.fetch_add(1, Ordering::SeqCst);
                let delay = self.stats.complete_delay_ms.load(Ordering::SeqCst);
                tokio::time::sleep(std::time::Duration::from_millis(delay)).await;
                let resp = self.fs.complete_multipart_upload(req).await;
                self.stats.completing.fetch_sub(1, Ordering::SeqCst);
                resp
            }

            async fn abort_multipart_upload(&self, req: S3Request<AbortMultipartUploadInput>) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
                self.require_upload(&req.input.upload_id)?;
                self.fs.abort_multipart_upload(req).await
            }
        }
    };
}

faulty_impl! {
    create_bucket: CreateBucketInput => CreateBucketOutput;
    head_bucket: HeadBucketInput => HeadBucketOutput;
    list_buckets: ListBucketsInput => ListBucketsOutput;
    put_object: PutObjectInput => PutObjectOutput;
    delete_object: DeleteObjectInput => DeleteObjectOutput;
    copy_object: CopyObjectInput => CopyObjectOutput;
    list_objects_v2: ListObjectsV2Input => ListObjectsV2Output;
    list_objects: ListObjectsInput => ListObjectsOutput;
}

/// A running server; stopped and its data removed on drop.
pub struct TestServer {
    /// `http://127.0.0.1:PORT`
    pub endpoint: String,
    /// Where the objects are stored.
    pub root: std::path::PathBuf,
    /// Traffic counters.
    pub stats: Arc<Stats>,
    _dir: Option<tempfile::TempDir>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TestServer {
    /// A correct server in a fresh temp dir.
    pub fn start() -> Self {
        Self::start_with(Fault::None)
    }

    /// A server with the given fault.
    pub fn start_with(fault: Fault) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let root = dir.path().to_path_buf();
        let mut s = Self::start_in(root, fault);
        s._dir = Some(dir);
        s
    }

    /// A server storing data under `root` (kept after drop).
    pub fn start_in(root: std::path::PathBuf, fault: Fault) -> Self {
        let (addr_tx, addr_rx) = std::sync::mpsc::channel::<SocketAddr>();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let fs_root = root.clone();
        let stats = Arc::new(Stats::new());
        let server_stats = stats.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("server runtime");
            rt.block_on(async move {
                let fs = FileSystem::new(&fs_root).expect("s3s-fs root");
                let mut b = s3s::service::S3ServiceBuilder::new(FaultyFs { fs, root: fs_root.clone(), fault, stats: server_stats });
                b.set_auth(s3s::auth::SimpleAuth::from_single(ACCESS_KEY, SECRET_KEY));
                let service = b.build();
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
                addr_tx.send(listener.local_addr().unwrap()).unwrap();
                let http = ConnBuilder::new(TokioExecutor::new());
                let mut stop_rx = stop_rx;
                loop {
                    tokio::select! {
                        accepted = listener.accept() => {
                            let Ok((socket, _)) = accepted else { continue };
                            // As real stores do: no Nagle delay on small responses (else a small
                            // body after the headers waits for the client's delayed ACK, 40 ms).
                            let _ = socket.set_nodelay(true);
                            let conn = http.serve_connection(TokioIo::new(socket), service.clone()).into_owned();
                            tokio::spawn(async move { let _ = conn.await; });
                        }
                        _ = &mut stop_rx => break,
                    }
                }
            });
        });
        let addr = addr_rx.recv().expect("server failed to start");
        Self {
            endpoint: format!("http://{addr}"),
            root,
            stats,
            _dir: None,
            shutdown: Some(stop_tx),
            thread: Some(thread),
        }
    }

    /// An S3 client for this server (path style, checksum trailer off as for Garage).
    pub async fn client(&self) -> aws_sdk_s3::Client {
        self.client_via(&self.endpoint).await
    }

    /// A client for this server reached through `endpoint` (a proxy in front of it).
    pub async fn client_via(&self, endpoint: &str) -> aws_sdk_s3::Client {
        cryptobucket::ClientOptions::new()
            .endpoint_url(endpoint)
            .region("us-east-1")
            .force_path_style(true)
            .static_credentials(ACCESS_KEY, SECRET_KEY)
            .build()
            .await
    }

    /// The stored bytes of part `n` of an unfinished multipart upload (s3s-fs keeps each part
    /// in a file named after the upload id), for tests that check a part without assembling it.
    pub fn stored_part(&self, upload_id: &str, n: u32) -> Vec<u8> {
        std::fs::read(self.root.join(format!(".upload_id-{upload_id}.part-{n}")))
            .expect("stored part")
    }

    /// Multipart uploads started and neither completed nor aborted (s3s-fs lacks
    /// ListMultipartUploads; it keeps each open upload as `.upload-*.json` in its root).
    pub fn open_uploads(&self) -> usize {
        std::fs::read_dir(&self.root)
            .expect("server root")
            .filter(|e| {
                let name = e.as_ref().expect("dir entry").file_name();
                let name = name.to_string_lossy();
                name.starts_with(".upload-") && name.ends_with(".json")
            })
            .count()
    }

    /// Creates a bucket.
    pub async fn create_bucket(&self, name: &str) {
        self.client()
            .await
            .create_bucket()
            .bucket(name)
            .send()
            .await
            .expect("create bucket");
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
