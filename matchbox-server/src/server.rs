//! The async shell around [`Rooms`]: TCP accept, the lobby's lifecycle (binding, shutting
//! down, a thread of its own) and the upgrade of a join request into a client task.
//!
//! Decisions live elsewhere and are pure: who may join in [`crate::admission`], what a URL
//! says in [`crate::uri`], rates in [`crate::ratelimit`]; the WebSocket loop is
//! [`crate::client`] and the plain HTTP endpoints [`crate::http`].

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Body;
use axum::extract::ws::{Utf8Bytes, WebSocketUpgrade};
use axum::extract::{FromRequestParts, Request, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{Notify, mpsc, watch};
use tokio::time::Instant;
use tower::ServiceExt;
use tracing::{debug, info, warn};
use uuid::Uuid;

use crate::LobbyConfig;
use crate::admission::{self, ConnectionCounts, JoinFacts, JoinState, Refusal};
use crate::auth::TokenLeases;
use crate::client::run_client;
use crate::metrics::Metrics;
use crate::protocol::encode_server_frame;
use crate::ratelimit::JoinLimits;
use crate::state::{Outbox, PeerId, Rooms, ServerFrame};
use crate::web::Site;

/// Lobby frames (ids, joins, leaves) queued for one client before it counts as too slow to
/// read and is dropped.
const LOBBY_FRAMES: usize = 256;

/// Signals from one sender queued for one receiver, at most: more are dropped (and counted).
/// A receiver's queue is `LOBBY_FRAMES` plus one share per possible sender, so no sender, nor
/// all of a room's members together, can fill it and get the receiver dropped as too slow.
pub(crate) const SIGNAL_SHARE: usize = 32;

/// A frame on its way to a client: the text, and for a signal its sender's share counter of
/// the receiver's queue, given back when the receiver's task takes the frame.
pub(crate) struct Outgoing {
    pub(crate) text: Utf8Bytes,
    pub(crate) share: Option<Arc<AtomicUsize>>,
}

/// A connected client, as the lobby reaches it.
struct Slot {
    outbound: mpsc::Sender<Outgoing>,
    /// Per sender: its signals queued for this client.
    shares: HashMap<PeerId, Arc<AtomicUsize>>,
}

pub(crate) struct Inner {
    pub(crate) rooms: Rooms,
    clients: HashMap<PeerId, Slot>,
    leases: TokenLeases,
    limits: JoinLimits,
}

/// Everything the lobby's tasks share.
pub(crate) struct Shared {
    pub(crate) config: LobbyConfig,
    inner: Mutex<Inner>,
    pub(crate) metrics: Metrics,
    pub(crate) open_connections: AtomicUsize,
    per_ip: Mutex<HashMap<IpAddr, usize>>,
    all_closed: Notify,
    pub(crate) shutdown: watch::Receiver<bool>,
    pub(crate) site: Option<Site>,
    /// Random per start: `/health` says it, so that clients can tell a restarted lobby (whose
    /// rooms they must join again) from one that only blinked.
    pub(crate) boot: Uuid,
}

impl Shared {
    pub(crate) fn inner(&self) -> MutexGuard<'_, Inner> {
        // Every critical section leaves `Inner` consistent, so a panic elsewhere cannot have
        // left it half-changed.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn shutting_down(&self) -> bool {
        *self.shutdown.borrow()
    }

    /// Sends frames to their clients. A signal whose sender already has its share of the
    /// receiver's queue is dropped: the sender is the one flooding, the receiver stays. A
    /// client whose queue is full anyway (of lobby frames) is too slow: it leaves its room
    /// (whose other members are told) and its task closes the socket.
    pub(crate) fn deliver(&self, inner: &mut Inner, outbox: Outbox) {
        let mut work = outbox;
        while !work.is_empty() {
            let mut next = Vec::new();
            for (peer, frame) in work {
                let Some(slot) = inner.clients.get_mut(&peer) else {
                    continue;
                };
                let share = match &frame {
                    ServerFrame::Signal { sender, .. } => {
                        let share = slot.shares.entry(*sender).or_default();
                        if share.load(Ordering::Acquire) >= SIGNAL_SHARE {
                            self.metrics
                                .signals_over_share
                                .fetch_add(1, Ordering::Relaxed);
                            continue;
                        }
                        share.fetch_add(1, Ordering::AcqRel);
                        Some(share.clone())
                    }
                    ServerFrame::PeerLeft(left) => {
                        slot.shares.remove(left);
                        None
                    }
                    _ => None,
                };
                let text = Utf8Bytes::from(encode_server_frame(&frame));
                if let ServerFrame::Signal { data, .. } = &frame {
                    self.metrics.signals_relayed.fetch_add(1, Ordering::Relaxed);
                    self.metrics
                        .bytes_relayed
                        .fetch_add(data.len() as u64, Ordering::Relaxed);
                }
                if slot.outbound.try_send(Outgoing { text, share }).is_err() {
                    inner.clients.remove(&peer);
                    inner.leases.release(peer);
                    next.extend(inner.rooms.leave(peer));
                }
            }
            work = next;
        }
    }

    pub(crate) fn leave(&self, peer: PeerId) {
        let mut inner = self.inner();
        inner.clients.remove(&peer);
        inner.leases.release(peer);
        let out = inner.rooms.leave(peer);
        self.deliver(&mut inner, out);
    }
}

/// Counts one open connection until dropped.
pub(crate) struct ConnectionGuard {
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
    /// Held while the connection is open; `None` if it was over a connection limit.
    guard: Option<Arc<ConnectionGuard>>,
    /// The counts it was accepted with, which explain a refusal.
    counts: ConnectionCounts,
    /// Its IP address.
    address: IpAddr,
}

/// Counts a new connection in, unless it is over a connection limit: then it is not counted
/// and will be refused if it asks to join.
fn count_connection(shared: &Arc<Shared>, ip: IpAddr) -> ConnectionMeta {
    let mut per_ip = shared.per_ip.lock().unwrap_or_else(|e| e.into_inner());
    let counts = ConnectionCounts {
        total: shared.open_connections.load(Ordering::Acquire),
        from_address: per_ip.get(&ip).copied().unwrap_or(0),
    };
    if admission::check_connections(&shared.config, counts).is_err() {
        return ConnectionMeta {
            guard: None,
            counts,
            address: ip,
        };
    }
    *per_ip.entry(ip).or_default() += 1;
    shared.open_connections.fetch_add(1, Ordering::AcqRel);
    ConnectionMeta {
        guard: Some(Arc::new(ConnectionGuard {
            shared: shared.clone(),
            ip,
        })),
        counts,
        address: ip,
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
        let site = config.static_dir.as_deref().map(Site::new);
        let shared = Arc::new(Shared {
            boot: Uuid::new_v4(),
            inner: Mutex::new(Inner {
                rooms: Rooms::new(config.room_capacity),
                clients: HashMap::new(),
                leases: TokenLeases::default(),
                limits: JoinLimits::new(&config),
            }),
            config,
            metrics: Metrics::default(),
            open_connections: AtomicUsize::new(0),
            per_ip: Mutex::new(HashMap::new()),
            all_closed: Notify::new(),
            shutdown,
            site,
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
pub(crate) async fn stopped(shutdown: &mut watch::Receiver<bool>) {
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
    let meta = count_connection(&shared, remote.ip());
    let refused = meta.guard.is_none();
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

pub(crate) fn refuse(shared: &Shared, refusal: Refusal) -> Response {
    shared.metrics.refused(refusal.reason);
    debug!("refused ({}): {}", refusal.reason.label(), refusal.message);
    (refusal.status, refusal.message).into_response()
}

pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
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
        return crate::http::endpoint(&shared, Request::from_parts(parts, body)).await;
    };

    let facts = JoinFacts {
        path: parts.uri.path(),
        query: parts.uri.query().unwrap_or(""),
        origin: parts
            .headers
            .get(header::ORIGIN)
            .and_then(|v| v.to_str().ok()),
        address: meta.address,
        connections: meta.counts,
        shutting_down: shared.shutting_down(),
        now_unix: unix_now(),
        now: Instant::now(),
    };
    let peer = Uuid::new_v4();
    let capacity = LOBBY_FRAMES + shared.config.room_capacity.max(1) * SIGNAL_SHARE;
    let (tx, rx) = mpsc::channel(capacity);
    let request = {
        let mut guard = shared.inner();
        let inner = &mut *guard;
        let state = JoinState {
            rooms: &inner.rooms,
            leases: &inner.leases,
            limits: &mut inner.limits,
        };
        let admitted = match admission::admit(&shared.config, &facts, state) {
            Ok(admitted) => admitted,
            Err(refusal) => {
                drop(guard);
                return refuse(&shared, refusal);
            }
        };
        // Joining before the upgrade completes lets a full room be refused with a status, and
        // queues the frames (the id first) until the socket is up. Admission and the join
        // share one lock, so the room cannot fill (nor a nonce be taken) in between.
        let request = admitted.request;
        let out = inner
            .rooms
            .join(peer, request.clone())
            .expect("admitted under the same lock, with a fresh id");
        if let Some(nonce) = admitted.nonce {
            inner.leases.take(request.name.clone(), nonce, peer);
        }
        inner.clients.insert(
            peer,
            Slot {
                outbound: tx,
                shares: HashMap::new(),
            },
        );
        shared.deliver(inner, out);
        request
    };
    debug!("peer {peer} joins {request:?}");
    shared
        .metrics
        .connections_total
        .fetch_add(1, Ordering::Relaxed);
    let on_fail = shared.clone();
    let guard = meta.guard.clone();
    let max_message_size = shared.config.max_message_size;
    upgrade
        .read_buffer_size(4 * 1024)
        .write_buffer_size(0)
        .max_write_buffer_size(1 << 20)
        .max_message_size(max_message_size)
        .max_frame_size(max_message_size)
        .on_failed_upgrade(move |error| {
            debug!("upgrade of {peer} failed: {error}");
            on_fail.leave(peer);
        })
        .on_upgrade(move |socket| run_client(shared, socket, peer, rx, guard))
}
