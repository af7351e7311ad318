//! The async shell around [`Rooms`]: TCP accept, HTTP, WebSockets, limits.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Body;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{FromRequestParts, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::{SinkExt, StreamExt};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{Notify, mpsc, watch};
use tokio::time::Instant;
use tower::ServiceExt;
use tower_http::services::ServeDir;
use tracing::{debug, info, warn};
use uuid::Uuid;

use crate::LobbyConfig;
use crate::auth::{TokenError, verify_token};
use crate::metrics::{Close, Metrics, Refusal};
use crate::protocol::{ClientFrame, encode_server_frame, parse_client_frame};
use crate::state::{JoinError, Outbox, PeerId, RoomRequest, Rooms, SignalError};

/// Frames queued for one client before it counts as too slow to read and is dropped.
const OUTBOUND_CAPACITY: usize = 256;
/// Longest a write to a client may take.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest room name, in bytes.
const MAX_ROOM_NAME: usize = 128;

/// Close codes (RFC 6455 and the 4000–4999 private range).
mod code {
    pub const GOING_AWAY: u16 = 1001;
    pub const UNSUPPORTED_DATA: u16 = 1003;
    pub const INVALID_PAYLOAD: u16 = 1007;
    pub const POLICY_VIOLATION: u16 = 1008;
    pub const MESSAGE_TOO_BIG: u16 = 1009;
    pub const IDLE_TIMEOUT: u16 = 4000;
    pub const RATE_LIMITED: u16 = 4001;
    pub const TOO_SLOW: u16 = 4002;
}

struct Inner {
    rooms: Rooms,
    clients: HashMap<PeerId, mpsc::Sender<Utf8Bytes>>,
}

struct Shared {
    config: LobbyConfig,
    inner: Mutex<Inner>,
    metrics: Metrics,
    open_connections: AtomicUsize,
    per_ip: Mutex<HashMap<IpAddr, usize>>,
    all_closed: Notify,
    shutdown: watch::Receiver<bool>,
    static_files: Option<ServeDir>,
}

impl Shared {
    fn inner(&self) -> MutexGuard<'_, Inner> {
        // Every critical section leaves `Inner` consistent, so a panic elsewhere cannot have
        // left it half-changed.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn shutting_down(&self) -> bool {
        *self.shutdown.borrow()
    }

    /// Sends frames to their clients. A client whose queue is full is too slow: it leaves its
    /// room (whose other members are told) and its task closes the socket.
    fn deliver(&self, inner: &mut Inner, outbox: Outbox) {
        let mut work = outbox;
        while !work.is_empty() {
            let mut next = Vec::new();
            for (peer, frame) in work {
                let Some(sender) = inner.clients.get(&peer) else {
                    continue;
                };
                let text = Utf8Bytes::from(encode_server_frame(&frame));
                if let crate::state::ServerFrame::Signal { data, .. } = &frame {
                    self.metrics.signals_relayed.fetch_add(1, Ordering::Relaxed);
                    self.metrics
                        .bytes_relayed
                        .fetch_add(data.len() as u64, Ordering::Relaxed);
                }
                if sender.try_send(text).is_err() {
                    inner.clients.remove(&peer);
                    next.extend(inner.rooms.leave(peer));
                }
            }
            work = next;
        }
    }

    fn leave(&self, peer: PeerId) {
        let mut inner = self.inner();
        inner.clients.remove(&peer);
        let out = inner.rooms.leave(peer);
        self.deliver(&mut inner, out);
    }
}

/// Counts one open connection until dropped.
struct ConnectionGuard {
    shared: Arc<Shared>,
    ip: IpAddr,
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        {
            let mut per_ip = self.shared.per_ip.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(count) = per_ip.get_mut(&self.ip) {
                *count -= 1;
                if *count == 0 {
                    per_ip.remove(&self.ip);
                }
            }
        }
        if self.shared.open_connections.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.shared.all_closed.notify_waiters();
        }
    }
}

/// What the accept loop learned of a connection, handed to its requests.
#[derive(Clone)]
struct ConnectionMeta {
    guard: Option<Arc<ConnectionGuard>>,
    refusal: Option<Refusal>,
}

fn admit(shared: &Arc<Shared>, ip: IpAddr) -> ConnectionMeta {
    let config = &shared.config;
    let mut per_ip = shared.per_ip.lock().unwrap_or_else(|e| e.into_inner());
    let from_ip = per_ip.get(&ip).copied().unwrap_or(0);
    let refusal = if shared.open_connections.load(Ordering::Acquire) >= config.max_connections {
        Some(Refusal::TooManyConnections)
    } else if config.max_connections_per_ip != 0 && from_ip >= config.max_connections_per_ip {
        Some(Refusal::TooManyFromAddress)
    } else {
        None
    };
    if refusal.is_some() {
        return ConnectionMeta {
            guard: None,
            refusal,
        };
    }
    *per_ip.entry(ip).or_default() += 1;
    shared.open_connections.fetch_add(1, Ordering::AcqRel);
    ConnectionMeta {
        guard: Some(Arc::new(ConnectionGuard {
            shared: shared.clone(),
            ip,
        })),
        refusal: None,
    }
}

/// A running lobby on the current Tokio runtime.
pub struct Lobby {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Arc<watch::Sender<bool>>,
    accept_loop: tokio::task::JoinHandle<()>,
}

impl Lobby {
    /// Binds `config.bind` (port 0 picks a free port) and starts serving.
    pub async fn bind(config: LobbyConfig) -> io::Result<Lobby> {
        let socket = match config.bind {
            SocketAddr::V4(_) => TcpSocket::new_v4()?,
            SocketAddr::V6(_) => TcpSocket::new_v6()?,
        };
        socket.set_reuseaddr(true)?;
        socket.bind(config.bind)?;
        let listener = socket.listen(config.backlog)?;
        let addr = listener.local_addr()?;
        let (stop, shutdown) = watch::channel(false);
        let static_files = config
            .static_dir
            .as_ref()
            .map(|dir| ServeDir::new(dir).append_index_html_on_directories(true));
        let shared = Arc::new(Shared {
            inner: Mutex::new(Inner {
                rooms: Rooms::new(config.room_capacity),
                clients: HashMap::new(),
            }),
            config,
            metrics: Metrics::default(),
            open_connections: AtomicUsize::new(0),
            per_ip: Mutex::new(HashMap::new()),
            all_closed: Notify::new(),
            shutdown,
            static_files,
        });
        let router = Router::new().fallback(handle).with_state(shared.clone());
        let accept_loop = tokio::spawn(accept_loop(listener, shared.clone(), router));
        info!("lobby listening on {addr}");
        Ok(Lobby {
            addr,
            shared,
            stop: Arc::new(stop),
            accept_loop,
        })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its counters.
    pub fn metrics(&self) -> &Metrics {
        &self.shared.metrics
    }

    /// A handle that stops the lobby from anywhere, e.g. a signal handler.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle(self.stop.clone())
    }

    /// Stops accepting, closes every WebSocket with 1001 (going away) and waits for them to
    /// close, at most the configured grace period.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        self.closed().await;
    }

    /// Waits until the lobby has been shut down (see [`Lobby::shutdown_handle`]) and its
    /// clients are gone.
    pub async fn closed(self) {
        let _ = self.accept_loop.await;
        let grace = Duration::from_secs(self.shared.config.shutdown_grace_secs);
        let deadline = Instant::now() + grace;
        loop {
            let notified = self.shared.all_closed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.shared.open_connections.load(Ordering::Acquire) == 0 {
                break;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                warn!(
                    "{} connection(s) still open after the grace period",
                    self.shared.open_connections.load(Ordering::Acquire)
                );
                break;
            }
        }
        info!("lobby stopped");
    }
}

/// Stops a [`Lobby`].
#[derive(Clone)]
pub struct ShutdownHandle(Arc<watch::Sender<bool>>);

impl ShutdownHandle {
    /// Starts the shutdown; see [`Lobby::shutdown`].
    pub fn shutdown(&self) {
        let _ = self.0.send(true);
    }
}

/// A lobby on a thread of its own with its own runtime, for programs without Tokio (a Bevy
/// game hosting its own lobby, tests). Dropping it shuts the lobby down.
pub struct LobbyThread {
    addr: SocketAddr,
    stop: Option<ShutdownHandle>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl LobbyThread {
    /// Binds and starts serving; returns once the port is bound.
    pub fn spawn(config: LobbyConfig) -> io::Result<LobbyThread> {
        let (tx, rx) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("peersync-lobby".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(1)
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(error) => {
                        let _ = tx.send(Err(error));
                        return;
                    }
                };
                runtime.block_on(async move {
                    match Lobby::bind(config).await {
                        Ok(lobby) => {
                            let _ = tx.send(Ok((lobby.local_addr(), lobby.shutdown_handle())));
                            lobby.closed().await;
                        }
                        Err(error) => {
                            let _ = tx.send(Err(error));
                        }
                    }
                });
            })?;
        let (addr, stop) = rx
            .recv()
            .map_err(|_| io::Error::other("the lobby thread ended before binding"))??;
        Ok(LobbyThread {
            addr,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Shuts the lobby down and waits for its thread.
    pub fn shutdown(mut self) {
        self.stop_and_join();
    }

    fn stop_and_join(&mut self) {
        if let Some(stop) = self.stop.take() {
            stop.shutdown();
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for LobbyThread {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

/// Resolves once the lobby is shutting down.
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    // The guard `wait_for` returns must not live across an await point of the caller.
    let _ = shutdown.wait_for(|stop| *stop).await.map(|_| ());
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>, router: Router) {
    let mut shutdown = shared.shutdown.clone();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stopped(&mut shutdown) => break,
        };
        let (stream, remote) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of file descriptors and the like: back off instead of spinning.
                warn!("accept failed: {error}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(serve_connection(
            shared.clone(),
            router.clone(),
            stream,
            remote,
        ));
    }
}

async fn serve_connection(
    shared: Arc<Shared>,
    router: Router,
    stream: TcpStream,
    remote: SocketAddr,
) {
    let meta = admit(&shared, remote.ip());
    let refused = meta.refusal.is_some();
    let service = router.map_request(move |mut request: Request<hyper::body::Incoming>| {
        request.extensions_mut().insert(meta.clone());
        request.map(Body::new)
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .keep_alive(!refused)
        .max_buf_size(16 * 1024);
    let connection = builder
        .serve_connection(TokioIo::new(stream), TowerToHyperService::new(service))
        .with_upgrades();
    // Covers reading the request and the upgrade: after an upgrade the connection future ends
    // and the WebSocket lives on in its own task.
    match tokio::time::timeout(shared.config.handshake_timeout(), connection).await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => debug!("connection from {remote}: {error}"),
        Err(_) => debug!("connection from {remote} timed out before upgrading"),
    }
}

fn refuse(shared: &Shared, reason: Refusal, status: StatusCode, message: String) -> Response {
    shared.metrics.refused(reason);
    debug!("refused ({}): {message}", reason.label());
    (status, message).into_response()
}

async fn handle(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let (mut parts, body) = request.into_parts();
    let meta = parts
        .extensions
        .get::<ConnectionMeta>()
        .cloned()
        .expect("every request comes through serve_connection");
    let upgrade = WebSocketUpgrade::from_request_parts(&mut parts, &()).await;
    let Ok(upgrade) = upgrade else {
        return http_endpoint(&shared, Request::from_parts(parts, body)).await;
    };

    match meta.refusal {
        Some(Refusal::TooManyConnections) => {
            return refuse(
                &shared,
                Refusal::TooManyConnections,
                StatusCode::SERVICE_UNAVAILABLE,
                "the lobby is at its connection limit".into(),
            );
        }
        Some(reason) => {
            return refuse(
                &shared,
                reason,
                StatusCode::TOO_MANY_REQUESTS,
                "too many connections from your address".into(),
            );
        }
        None => {}
    }
    if shared.shutting_down() {
        return refuse(
            &shared,
            Refusal::ShuttingDown,
            StatusCode::SERVICE_UNAVAILABLE,
            "the lobby is shutting down".into(),
        );
    }
    let config = &shared.config;
    if !config.allowed_origins.is_empty() {
        let origin = parts
            .headers
            .get(header::ORIGIN)
            .and_then(|v| v.to_str().ok());
        if !origin.is_some_and(|o| config.allowed_origins.iter().any(|a| a == o)) {
            return refuse(
                &shared,
                Refusal::OriginNotAllowed,
                StatusCode::FORBIDDEN,
                format!("origin {} is not allowed", origin.unwrap_or("(none)")),
            );
        }
    }
    let name = match room_name(parts.uri.path()) {
        Ok(name) => name,
        Err(reason) => return refuse(&shared, Refusal::BadRoom, StatusCode::BAD_REQUEST, reason),
    };
    let query = parse_query(parts.uri.query().unwrap_or(""));
    let next = match query.get("next") {
        None => None,
        Some(value) => match value.parse::<usize>() {
            Ok(n) if (2..=config.max_next).contains(&n) => Some(n),
            _ => {
                return refuse(
                    &shared,
                    Refusal::BadNext,
                    StatusCode::BAD_REQUEST,
                    format!(
                        "next must be a whole number from 2 to {}, not {value:?}",
                        config.max_next
                    ),
                );
            }
        },
    };
    if let Some(secret) = &config.secret {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let checked = match query.get("token") {
            None => Err(TokenError::Missing),
            Some(token) => verify_token(secret.as_bytes(), &name, token, now),
        };
        if let Err(error) = checked {
            let reason = match error {
                TokenError::Missing => Refusal::MissingToken,
                TokenError::Expired => Refusal::ExpiredToken,
                TokenError::Malformed | TokenError::BadSignature => Refusal::BadToken,
            };
            return refuse(&shared, reason, StatusCode::UNAUTHORIZED, error.to_string());
        }
    }

    let request = RoomRequest { name, next };
    let peer = Uuid::new_v4();
    let (tx, rx) = mpsc::channel(OUTBOUND_CAPACITY);
    {
        let mut inner = shared.inner();
        // Joining before the upgrade completes lets a full room be refused with a status, and
        // queues the frames (the id first) until the socket is up.
        match inner.rooms.join(peer, request.clone()) {
            Ok(out) => {
                inner.clients.insert(peer, tx);
                shared.deliver(&mut inner, out);
            }
            Err(JoinError::RoomFull { capacity }) => {
                drop(inner);
                return refuse(
                    &shared,
                    Refusal::RoomFull,
                    StatusCode::CONFLICT,
                    format!("room {:?} is full ({capacity} peers)", request.name),
                );
            }
            Err(JoinError::AlreadyJoined) => unreachable!("fresh ids are never in a room"),
        }
    }
    debug!("peer {peer} joins {request:?}");
    shared
        .metrics
        .connections_total
        .fetch_add(1, Ordering::Relaxed);
    let on_fail = shared.clone();
    let guard = meta.guard.clone();
    upgrade
        .read_buffer_size(4 * 1024)
        .write_buffer_size(0)
        .max_write_buffer_size(1 << 20)
        .max_message_size(config.max_message_size)
        .max_frame_size(config.max_message_size)
        .on_failed_upgrade(move |error| {
            debug!("upgrade of {peer} failed: {error}");
            on_fail.leave(peer);
        })
        .on_upgrade(move |socket| run_client(shared, socket, peer, rx, guard))
}

async fn http_endpoint(shared: &Arc<Shared>, request: Request) -> Response {
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return (StatusCode::METHOD_NOT_ALLOWED, "only GET").into_response();
    }
    match request.uri().path() {
        "/health" => (StatusCode::OK, "ok\n").into_response(),
        "/rooms" => {
            let query = parse_query(request.uri().query().unwrap_or(""));
            let prefix = query.get("prefix").map_or("", String::as_str);
            let rooms = shared.inner().rooms.list(prefix);
            let body = serde_json::to_string(&rooms).expect("room info serializes");
            let mut response = (StatusCode::OK, body).into_response();
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            // A lobby browser may be a page on another origin.
            response.headers_mut().insert(
                header::ACCESS_CONTROL_ALLOW_ORIGIN,
                HeaderValue::from_static("*"),
            );
            response
        }
        "/metrics" => {
            let (peers, rooms) = {
                let inner = shared.inner();
                (inner.rooms.peer_count(), inner.rooms.group_count())
            };
            let text = shared.metrics.render(
                shared.open_connections.load(Ordering::Relaxed),
                peers,
                rooms,
            );
            let mut response = (StatusCode::OK, text).into_response();
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4"),
            );
            response
        }
        _ => match &shared.static_files {
            Some(files) => match files.clone().oneshot(request).await {
                Ok(response) => response.map(Body::new),
                Err(infallible) => match infallible {},
            },
            None => (StatusCode::NOT_FOUND, "not found\n").into_response(),
        },
    }
}

/// The room a path names: the path without its leading `/`, percent-decoded.
fn room_name(path: &str) -> Result<String, String> {
    let raw = path.strip_prefix('/').unwrap_or(path);
    let name =
        percent_decode(raw, false).ok_or_else(|| "room name is not valid UTF-8".to_owned())?;
    if name.len() > MAX_ROOM_NAME {
        return Err(format!("room name longer than {MAX_ROOM_NAME} bytes"));
    }
    if name.contains('/') || name.chars().any(char::is_control) {
        return Err("room name may not contain '/' or control characters".to_owned());
    }
    Ok(name)
}

/// Decodes `%XX` escapes (and `+` as a space in query strings); `None` if malformed or not
/// UTF-8.
fn percent_decode(text: &str, plus_is_space: bool) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes.get(i + 1..i + 3)?;
                let hex = std::str::from_utf8(hex).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            byte => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

fn parse_query(query: &str) -> HashMap<String, String> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .filter_map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            Some((percent_decode(key, true)?, percent_decode(value, true)?))
        })
        .collect()
}

struct TokenBucket {
    tokens: f64,
    capacity: f64,
    rate: f64,
    last: Instant,
}

impl TokenBucket {
    fn take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.capacity);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

async fn run_client(
    shared: Arc<Shared>,
    socket: WebSocket,
    peer: PeerId,
    mut outbound: mpsc::Receiver<Utf8Bytes>,
    _guard: Option<Arc<ConnectionGuard>>,
) {
    let (mut sink, mut stream) = socket.split();
    let mut shutdown = shared.shutdown.clone();
    let idle = shared.config.idle_timeout();
    let mut last_seen = Instant::now();
    let mut bucket = TokenBucket {
        tokens: f64::from(shared.config.rate_burst),
        capacity: f64::from(shared.config.rate_burst),
        rate: f64::from(shared.config.rate_per_sec),
        last: last_seen,
    };
    let ending: Option<(Close, u16, String)> = loop {
        tokio::select! {
            biased;
            _ = stopped(&mut shutdown) => {
                break Some((Close::Shutdown, code::GOING_AWAY, "the lobby is shutting down".into()));
            }
            frame = outbound.recv() => {
                let Some(text) = frame else {
                    break Some((Close::TooSlow, code::TOO_SLOW, "too slow to read signals".into()));
                };
                match tokio::time::timeout(WRITE_TIMEOUT, sink.send(Message::Text(text))).await {
                    Ok(Ok(())) => {}
                    Ok(Err(_)) => break Some((Close::ConnectionLost, 0, String::new())),
                    Err(_) => break Some((Close::TooSlow, code::TOO_SLOW, "too slow to read signals".into())),
                }
            }
            _ = tokio::time::sleep_until(last_seen + idle) => {
                break Some((Close::IdleTimeout, code::IDLE_TIMEOUT,
                    format!("nothing received for {} s", idle.as_secs())));
            }
            message = stream.next() => {
                let message = match message {
                    None => break Some((Close::ConnectionLost, 0, String::new())),
                    Some(Err(error)) => {
                        let text = error.to_string();
                        if text.contains("Message too long") || text.contains("Space limit exceeded") {
                            break Some((Close::MessageTooBig, code::MESSAGE_TOO_BIG,
                                format!("messages are limited to {} bytes", shared.config.max_message_size)));
                        }
                        break Some((Close::ConnectionLost, 0, String::new()));
                    }
                    Some(Ok(message)) => message,
                };
                let now = Instant::now();
                last_seen = now;
                match message {
                    Message::Close(_) => break Some((Close::ClientClosed, 0, String::new())),
                    Message::Ping(_) | Message::Pong(_) => continue,
                    Message::Binary(_) => {
                        break Some((Close::BinaryFrame, code::UNSUPPORTED_DATA,
                            "binary frames are not part of the protocol".into()));
                    }
                    Message::Text(text) => {
                        if !bucket.take(now) {
                            break Some((Close::RateLimited, code::RATE_LIMITED,
                                format!("more than {} messages per second", shared.config.rate_per_sec)));
                        }
                        match parse_client_frame(text.as_str()) {
                            Ok(ClientFrame::KeepAlive) => {}
                            Ok(ClientFrame::Signal { receiver, data }) => {
                                let mut inner = shared.inner();
                                match inner.rooms.signal(peer, receiver, data) {
                                    Ok(frame) => shared.deliver(&mut inner, vec![frame]),
                                    Err(SignalError::UnknownReceiver) => {
                                        // Usually a peer that just left: not the sender's fault.
                                        shared.metrics.signals_unknown_receiver.fetch_add(1, Ordering::Relaxed);
                                    }
                                    Err(SignalError::ToSelf) => {
                                        break Some((Close::InvalidFrame, code::POLICY_VIOLATION,
                                            "a peer cannot signal itself".into()));
                                    }
                                    Err(SignalError::NotJoined) => {
                                        // Dropped as too slow a moment ago.
                                        break Some((Close::TooSlow, code::TOO_SLOW, "too slow to read signals".into()));
                                    }
                                }
                            }
                            Err(reason) => {
                                let mut reason = reason;
                                reason.truncate(120);
                                break Some((Close::InvalidFrame, code::INVALID_PAYLOAD, reason));
                            }
                        }
                    }
                }
            }
        }
    };
    shared.leave(peer);
    if let Some((reason, close_code, text)) = ending {
        shared.metrics.closed(reason);
        debug!("peer {peer} closed: {}", reason.label());
        if close_code != 0 {
            let frame = CloseFrame {
                code: close_code,
                reason: Utf8Bytes::from(text),
            };
            let _ =
                tokio::time::timeout(WRITE_TIMEOUT, sink.send(Message::Close(Some(frame)))).await;
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), sink.close()).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_names() {
        assert_eq!(room_name("/"), Ok(String::new()));
        assert_eq!(room_name("/my%20room"), Ok("my room".to_owned()));
        assert_eq!(room_name("/a+b"), Ok("a+b".to_owned()));
        assert!(room_name("/a/b").is_err());
        assert!(room_name("/a%2Fb").is_err());
        assert!(room_name("/%zz").is_err());
        assert!(room_name("/%e9").is_err(), "not UTF-8");
        assert!(room_name("/%").is_err());
        assert!(room_name(&format!("/{}", "x".repeat(200))).is_err());
    }

    #[test]
    fn queries() {
        let query = parse_query("next=2&token=a%2Bb&&flag");
        assert_eq!(query.get("next").map(String::as_str), Some("2"));
        assert_eq!(query.get("token").map(String::as_str), Some("a+b"));
        assert_eq!(query.get("flag").map(String::as_str), Some(""));
    }
}
