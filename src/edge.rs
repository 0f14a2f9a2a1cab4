//! The server's connections, guarded against clients that are slow, idle or too many. A new
//! connection must send its request head within the header timeout; a kept-alive one is
//! closed when no next request starts within the idle timeout; a request body must arrive
//! within its deadline, at a minimum rate and within the size limit (a declared
//! `Content-Length` over it is answered 413 before a byte of the body is read). At most
//! `max_connections` are open at once: at the limit the server stops accepting, so new
//! connections wait in the kernel's backlog instead of the process failing with EMFILE, and a
//! health check gets its turn as soon as the timeouts drop an idle or slow client.
//!
//! Webhook bodies are buffered only under a process-wide byte budget ([`BodyBudget`]), so many
//! clients uploading at once cannot hold more memory than the budget, signed or not.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{Request, Response, StatusCode, header};
use axum::response::IntoResponse;
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::time::{Instant, Sleep};
use tower::ServiceExt;

/// GitHub's cap on a webhook payload: the default limit on a request body ([`Limits`]).
pub const MAX_BODY: usize = 25 * 1024 * 1024;

/// What a client may cost the server.
#[derive(Clone, Debug)]
pub struct Limits {
    /// From accepting a connection (or the first byte of a kept-alive one's next request) to
    /// the end of the request head.
    pub header_timeout: Duration,
    /// How long a kept-alive connection may wait for its next request.
    pub idle_timeout: Duration,
    /// From the end of the head to the end of the body.
    pub body_timeout: Duration,
    /// Bytes per second a body must average once its first second is over; 0 turns it off.
    pub body_min_rate: u64,
    /// The largest request body accepted.
    pub max_body: usize,
    /// Bytes of webhook bodies buffered at once, over all connections.
    pub body_buffer: usize,
    /// Connections open at once.
    pub max_connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(30),
            // GitHub gives up on a delivery after 10 s; a slower body is never answered in time.
            body_timeout: Duration::from_secs(20),
            body_min_rate: 16 * 1024,
            max_body: MAX_BODY,
            body_buffer: 64 * 1024 * 1024,
            max_connections: default_max_connections(),
        }
    }
}

/// Below the process's open-file limit, leaving room for the database, GitHub, registry and
/// scanner connections and log files; at most 1024.
pub fn default_max_connections() -> usize {
    let soft = open_file_limit().unwrap_or(1024);
    let reserve = (soft / 8).max(64);
    soft.saturating_sub(reserve).clamp(1, 1024)
}

fn open_file_limit() -> Option<usize> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct it is given and reads nothing else.
    let ok = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0;
    (ok && limit.rlim_cur != libc::RLIM_INFINITY).then_some(limit.rlim_cur as usize)
}

/// Serve `router` on `listener` under `limits` until `shutdown` completes; then stop accepting,
/// let requests in flight finish, close idle connections and return once all are closed.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: axum::Router,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) {
    let limits = Arc::new(limits);
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let (close, closing) = watch::channel(false);
    tokio::pin!(shutdown);
    loop {
        // A slot first: at the limit nothing is accepted, and the kernel's backlog holds the rest.
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
            _ = &mut shutdown => break,
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // EMFILE and its kind: the descriptors other parts of the process hold ran
                    // out. Wait for some to close rather than spin.
                    tracing::warn!("cannot accept a connection: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(connection(
            stream,
            slot,
            router.clone(),
            limits.clone(),
            closing.clone(),
        ));
    }
    let _ = close.send(true);
    // Every connection holds a slot until it is closed.
    let _ = slots.acquire_many(limits.max_connections as u32).await;
}

async fn connection(
    stream: tokio::net::TcpStream,
    _slot: OwnedSemaphorePermit,
    router: axum::Router,
    limits: Arc<Limits>,
    mut closing: watch::Receiver<bool>,
) {
    let phase = Arc::new(Mutex::new(Watch {
        phase: Phase::Head(Instant::now() + limits.header_timeout),
        reader: None,
    }));
    let io = TokioIo::new(GuardedIo {
        inner: stream,
        phase: phase.clone(),
        limits: limits.clone(),
        timer: Box::pin(tokio::time::sleep_until(Instant::now())),
    });
    let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
        set(&phase, Phase::Busy);
        let router = router.clone();
        let limits = limits.clone();
        let phase = phase.clone();
        async move {
            let response = if declared_length(req.headers()).is_some_and(|n| n > limits.max_body) {
                too_large(limits.max_body)
            } else {
                let started = Instant::now();
                let req = req.map(|body| {
                    Body::new(GuardedBody {
                        inner: body,
                        deadline: Box::pin(tokio::time::sleep_until(started + limits.body_timeout)),
                        rate_check: Box::pin(tokio::time::sleep_until(started)),
                        started,
                        received: 0,
                        limits: limits.clone(),
                    })
                });
                router.oneshot(req).await.unwrap_or_else(|e| match e {})
            };
            let idle_timeout = limits.idle_timeout;
            Ok::<_, Infallible>(response.map(|body| Answer {
                body,
                phase,
                idle_timeout,
            }))
        }
    });
    let conn = hyper::server::conn::http1::Builder::new().serve_connection(io, service);
    tokio::pin!(conn);
    let result = tokio::select! {
        result = conn.as_mut() => result,
        _ = async { closing.wait_for(|c| *c).await.map(|_| ()) } => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        tracing::debug!("connection closed: {e}");
    }
}

fn declared_length(headers: &axum::http::HeaderMap) -> Option<usize> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

fn too_large(max: usize) -> Response<Body> {
    (
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("the request body is over the limit of {max} bytes"),
    )
        .into_response()
}

/// What a connection waits for, and until when.
#[derive(Clone, Copy)]
enum Phase {
    /// The head of a request.
    Head(Instant),
    /// A request is being handled; its body reads are timed by [`GuardedBody`].
    Busy,
    /// Kept alive between requests: the first byte of the next.
    Idle(Instant),
}

/// A connection's phase, and the read that waits without a deadline while it is busy.
struct Watch {
    phase: Phase,
    reader: Option<std::task::Waker>,
}

fn set(watch: &Mutex<Watch>, to: Phase) {
    let mut watch = watch.lock().unwrap_or_else(|e| e.into_inner());
    watch.phase = to;
    // Hyper may have polled for the next request while the answer was still being written;
    // that read must now start its deadline, so it is polled again.
    if !matches!(to, Phase::Busy)
        && let Some(reader) = watch.reader.take()
    {
        reader.wake();
    }
}

/// The socket, failing a read with `TimedOut` when the head or the next request is overdue.
struct GuardedIo {
    inner: tokio::net::TcpStream,
    phase: Arc<Mutex<Watch>>,
    limits: Arc<Limits>,
    timer: Pin<Box<Sleep>>,
}

impl AsyncRead for GuardedIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Pending => {}
            Poll::Ready(Ok(())) => {
                let mut watch = this.phase.lock().unwrap_or_else(|e| e.into_inner());
                if buf.filled().len() > before && matches!(watch.phase, Phase::Idle(_)) {
                    // The next request has begun: its head gets the header timeout.
                    watch.phase = Phase::Head(Instant::now() + this.limits.header_timeout);
                }
                return Poll::Ready(Ok(()));
            }
            other => return other,
        }
        let deadline = {
            let mut watch = this.phase.lock().unwrap_or_else(|e| e.into_inner());
            match watch.phase {
                Phase::Head(d) | Phase::Idle(d) => d,
                Phase::Busy => {
                    watch.reader = Some(cx.waker().clone());
                    return Poll::Pending;
                }
            }
        };
        if this.timer.deadline() != deadline {
            this.timer.as_mut().reset(deadline);
        }
        ready!(this.timer.as_mut().poll(cx));
        Poll::Ready(Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "the client sent no request in time",
        )))
    }
}

impl AsyncWrite for GuardedIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// A response body; once hyper has written it (and dropped it), the connection is idle.
struct Answer {
    body: Body,
    phase: Arc<Mutex<Watch>>,
    idle_timeout: Duration,
}

impl Drop for Answer {
    fn drop(&mut self) {
        // Hyper drops the body as soon as it has written it, before it reads again.
        set(&self.phase, Phase::Idle(Instant::now() + self.idle_timeout));
    }
}

impl HttpBody for Answer {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// Why a request body was not read to its end.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("the request body is over the limit of {0} bytes")]
    TooLarge(usize),
    #[error("the request body did not arrive within {0:?}")]
    TooSlow(Duration),
    #[error("the request body arrived at under {0} bytes a second")]
    BelowRate(u64),
    #[error("the server holds as many request bodies as it buffers at once; try again")]
    Busy,
    #[error("cannot read the request body: {0}")]
    Read(String),
}

impl BodyError {
    pub fn status(&self) -> StatusCode {
        match self {
            BodyError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            BodyError::TooSlow(_) | BodyError::BelowRate(_) => StatusCode::REQUEST_TIMEOUT,
            BodyError::Busy => StatusCode::SERVICE_UNAVAILABLE,
            BodyError::Read(_) => StatusCode::BAD_REQUEST,
        }
    }

    /// The reason an error from reading an [`axum::body::Body`] carries, when it is ours.
    fn of(e: axum::Error) -> BodyError {
        use std::error::Error;
        let mut source: Option<&(dyn Error + 'static)> = Some(&e);
        while let Some(s) = source {
            if let Some(ours) = s.downcast_ref::<BodyError>() {
                return match ours {
                    BodyError::TooLarge(n) => BodyError::TooLarge(*n),
                    BodyError::TooSlow(d) => BodyError::TooSlow(*d),
                    BodyError::BelowRate(r) => BodyError::BelowRate(*r),
                    BodyError::Busy => BodyError::Busy,
                    BodyError::Read(m) => BodyError::Read(m.clone()),
                };
            }
            source = s.source();
        }
        BodyError::Read(e.to_string())
    }
}

/// A request body that fails once it is over the size limit, overdue, or slower than the
/// minimum rate, whoever reads it.
struct GuardedBody {
    inner: hyper::body::Incoming,
    deadline: Pin<Box<Sleep>>,
    /// When the average rate falls under the minimum, if no more bytes come.
    rate_check: Pin<Box<Sleep>>,
    started: Instant,
    received: u64,
    limits: Arc<Limits>,
}

/// The body's first second is not held to the minimum rate: a small body comes in one packet,
/// a big one needs a moment to reach its speed.
const RATE_GRACE: Duration = Duration::from_secs(1);

impl GuardedBody {
    /// The moment the bytes received so far stop meeting the minimum rate.
    fn rate_deadline(&self) -> Option<Instant> {
        let rate = self.limits.body_min_rate;
        (rate > 0).then(|| {
            self.started + RATE_GRACE + Duration::from_secs_f64(self.received as f64 / rate as f64)
        })
    }
}

impl HttpBody for GuardedBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.received += data.len() as u64;
                    if this.received > this.limits.max_body as u64 {
                        return Poll::Ready(Some(Err(BodyError::TooLarge(this.limits.max_body))));
                    }
                }
                return Poll::Ready(Some(Ok(frame)));
            }
            Poll::Ready(Some(Err(e))) => {
                return Poll::Ready(Some(Err(BodyError::Read(e.to_string()))));
            }
            Poll::Ready(None) => return Poll::Ready(None),
            Poll::Pending => {}
        }
        if this.deadline.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Some(Err(BodyError::TooSlow(this.limits.body_timeout))));
        }
        if let Some(at) = this.rate_deadline() {
            if this.rate_check.deadline() != at {
                this.rate_check.as_mut().reset(at);
            }
            if this.rate_check.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Some(Err(BodyError::BelowRate(this.limits.body_min_rate))));
            }
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The bytes of request bodies the server holds at once, over all connections.
pub struct BodyBudget {
    bytes: Arc<Semaphore>,
    size: usize,
    /// The most ever held at once (for tests and benchmarks).
    peak: std::sync::atomic::AtomicUsize,
}

impl BodyBudget {
    pub fn new(size: usize) -> Self {
        BodyBudget {
            bytes: Arc::new(Semaphore::new(size.min(Semaphore::MAX_PERMITS))),
            size,
            peak: Default::default(),
        }
    }

    /// The most bytes held at once so far.
    pub fn peak(&self) -> usize {
        self.peak.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn note(&self) {
        let held = self.size - self.bytes.available_permits();
        self.peak
            .fetch_max(held, std::sync::atomic::Ordering::Relaxed);
    }
}

/// A body read into memory, and its share of the budget, given back when it is dropped.
pub struct Buffered {
    pub bytes: Bytes,
    _held: Option<OwnedSemaphorePermit>,
}

/// Read `body` whole, holding budget for every byte of buffer it takes; fail at once, rather
/// than wait, when the budget is spent.
pub async fn buffer(body: Body, budget: &BodyBudget) -> Result<Buffered, BodyError> {
    let mut body = body;
    let declared = body
        .size_hint()
        .exact()
        .and_then(|n| usize::try_from(n).ok());
    let mut buf: Vec<u8> = Vec::new();
    let mut held: Option<OwnedSemaphorePermit> = None;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(BodyError::of)?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        let want = buf.len() + data.len();
        if want > buf.capacity() {
            // Doubling, but never past the declared length: a 24 MB body takes 24 MB, not 32.
            let target = (buf.capacity() * 2).max(want).max(16 * 1024);
            let target = declared.map_or(target, |d| target.min(d)).max(want);
            buf.reserve_exact(target - buf.len());
        }
        let have = held.as_ref().map_or(0, |p| p.num_permits());
        if buf.capacity() > have {
            let more = u32::try_from(buf.capacity() - have).map_err(|_| BodyError::Busy)?;
            let permit = budget
                .bytes
                .clone()
                .try_acquire_many_owned(more)
                .map_err(|_| BodyError::Busy)?;
            match &mut held {
                Some(h) => h.merge(permit),
                None => held = Some(permit),
            }
            budget.note();
        }
        buf.extend_from_slice(&data);
    }
    Ok(Buffered {
        bytes: Bytes::from(buf),
        _held: held,
    })
}
