//! `peersync-lobby`: a signaling lobby for WebRTC games that speaks matchbox's protocol, so any
//! unmodified `matchbox_socket` 0.15 client (native or browser) can use it.
//!
//! It adds what a public server needs: rooms isolated from each other, `?next=N` matchmaking,
//! room capacity, a lobby browser (`GET /rooms`), health and Prometheus metrics, size, rate,
//! idle and handshake limits, connection limits in total and per address, join rate limits per
//! address and per room, signed join tokens (per room, or per player: one live connection per
//! token) with a bounded lifetime, admin tokens for `/rooms` and `/metrics`, an Origin
//! allowlist, time-limited TURN credentials for coturn (`GET /turn/<room>`, [`turn`]), and a
//! built web page served compressed with caching headers. Every refusal has an HTTP status and
//! every close a close code, each with a reason, and each counted.
//!
//! Anyone holding a room's URL is a member of that room, so the lobby does not trust members
//! either: every signal is checked before it is relayed ([`signal`]: matchbox_socket unwraps
//! what it is sent, and one garbage answer used to panic every native peer of a room), a
//! member flooding another is closed (4004) and can never fill its victim's queue (its share is
//! bounded), and a member cannot reach another room. `docs/threat-model.md` lists who can do
//! what to whom and what stops them.
//!
//! Close codes: 1001 shutting down, 1003 binary frame, 1007 not the protocol, 1008 signalling
//! oneself, 1009 message too big, 4000 idle, 4001 too many messages, 4002 too slow to read,
//! 4003 invalid signal, 4004 flooding a peer.
//!
//! The parts: [`admission`] decides joins (pure), [`signal`] checks signals (pure), [`state`]
//! holds rooms (pure), [`ratelimit`] the token buckets, [`auth`] the tokens, [`turn`] the TURN
//! credentials; the server module does the I/O around them.
//!
//! Embed it (tests, a game's "host a lobby" button) or run the `peersync-lobby` binary:
//!
//! ```no_run
//! # async fn run() -> std::io::Result<()> {
//! use peersync_lobby::{Lobby, LobbyConfig};
//!
//! let lobby = Lobby::bind(LobbyConfig { bind: "127.0.0.1:0".parse().unwrap(), ..Default::default() }).await?;
//! println!("rooms at ws://{}/<room>", lobby.local_addr());
//! lobby.shutdown().await;
//! # Ok(()) }
//! ```

pub mod admission;
pub mod auth;
mod client;
mod http;
pub mod metrics;
pub mod protocol;
pub mod ratelimit;
mod server;
pub mod signal;
pub mod state;
pub mod turn;
mod uri;
mod web;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

pub use server::{Lobby, LobbyThread};

/// Every setting of the lobby. On the command line each is a flag with an environment variable
/// fallback (see `peersync-lobby --help`).
#[derive(Debug, Clone, clap::Args)]
pub struct LobbyConfig {
    /// Address and port to listen on.
    #[arg(long, env = "PEERSYNC_LOBBY_BIND", default_value = "0.0.0.0:3536")]
    pub bind: SocketAddr,

    /// Most peers in one room.
    #[arg(long, env = "PEERSYNC_LOBBY_ROOM_CAPACITY", default_value_t = 16)]
    pub room_capacity: usize,

    /// Largest N accepted in `?next=N`.
    #[arg(long, env = "PEERSYNC_LOBBY_MAX_NEXT", default_value_t = 16)]
    pub max_next: usize,

    /// Largest WebSocket message, in bytes. Signals are SDP: a few KiB.
    #[arg(long, env = "PEERSYNC_LOBBY_MAX_MESSAGE_SIZE", default_value_t = 64 * 1024)]
    pub max_message_size: usize,

    /// Largest offer or answer SDP relayed, in bytes; a larger one closes its sender with 4003.
    /// Real ones weigh 450 bytes (native matchbox) to about 0.7 KiB (Chromium, with its
    /// candidates in it; each candidate line adds 95–130 bytes).
    #[arg(long, env = "PEERSYNC_LOBBY_MAX_SDP_SIZE", default_value_t = signal::DEFAULT_MAX_SDP_SIZE)]
    pub max_sdp_size: usize,

    /// Messages per second a connection may send on average (token bucket refill).
    #[arg(long, env = "PEERSYNC_LOBBY_RATE", default_value_t = 50)]
    pub rate_per_sec: u32,

    /// Messages a connection may send in a burst (token bucket size). Joining a full room of
    /// 16 trickles a few hundred ICE candidates at once.
    #[arg(long, env = "PEERSYNC_LOBBY_RATE_BURST", default_value_t = 500)]
    pub rate_burst: u32,

    /// Signals one peer may send one other peer in a burst; more closes the sender with 4004.
    /// A handshake is an offer or answer and a few dozen candidates at most.
    #[arg(long, env = "PEERSYNC_LOBBY_PAIR_SIGNAL_BURST", default_value_t = 100)]
    pub pair_signal_burst: u32,

    /// Signals per second one peer may send one other peer on average, after its burst.
    #[arg(long, env = "PEERSYNC_LOBBY_PAIR_SIGNAL_RATE", default_value_t = 10.0)]
    pub pair_signal_rate: f64,

    /// Joins from one IP address in a burst; more are refused with 429 until it refills.
    /// 0: no limit.
    #[arg(long, env = "PEERSYNC_LOBBY_JOIN_BURST_PER_IP", default_value_t = 64)]
    pub join_burst_per_ip: u32,

    /// Joins per second from one IP address on average, after its burst.
    #[arg(long, env = "PEERSYNC_LOBBY_JOIN_RATE_PER_IP", default_value_t = 16.0)]
    pub join_rate_per_ip: f64,

    /// Joins to one full-mesh room in a burst (a room of 16 filling at once is 16); more are
    /// refused with 429. 0: no limit.
    #[arg(long, env = "PEERSYNC_LOBBY_JOIN_BURST_PER_ROOM", default_value_t = 32)]
    pub join_burst_per_room: u32,

    /// Joins per second to one full-mesh room on average, after its burst.
    #[arg(long, env = "PEERSYNC_LOBBY_JOIN_RATE_PER_ROOM", default_value_t = 2.0)]
    pub join_rate_per_room: f64,

    /// Seconds without any frame from a client (KeepAlive included) before it is closed.
    /// matchbox clients send a KeepAlive every 10 s.
    #[arg(long, env = "PEERSYNC_LOBBY_IDLE_TIMEOUT", default_value_t = 30)]
    pub idle_timeout_secs: u64,

    /// Seconds a new TCP connection has to complete its HTTP request or WebSocket upgrade.
    #[arg(long, env = "PEERSYNC_LOBBY_HANDSHAKE_TIMEOUT", default_value_t = 10)]
    pub handshake_timeout_secs: u64,

    /// Most open connections in total.
    #[arg(long, env = "PEERSYNC_LOBBY_MAX_CONNECTIONS", default_value_t = 20_000)]
    pub max_connections: usize,

    /// Most open connections from one IP address.
    #[arg(
        long,
        env = "PEERSYNC_LOBBY_MAX_CONNECTIONS_PER_IP",
        default_value_t = 64
    )]
    pub max_connections_per_ip: usize,

    /// TCP accept backlog (the kernel caps it at net.core.somaxconn).
    #[arg(long, env = "PEERSYNC_LOBBY_BACKLOG", default_value_t = 4096)]
    pub backlog: u32,

    /// Shared secret for signed tokens; when set, every join needs `?token=` and `/rooms` and
    /// `/metrics` need an admin token (see the `auth` module for the formats).
    #[arg(long, env = "PEERSYNC_LOBBY_SECRET", hide_env_values = true)]
    pub secret: Option<String>,

    /// Join tokens expiring further than this many seconds from now are refused (401): a leaked
    /// long-lived token is a password that never changes. 0: any lifetime. Admin tokens are
    /// exempt, so a metrics scraper can hold one.
    #[arg(
        long = "max-token-lifetime",
        env = "PEERSYNC_LOBBY_MAX_TOKEN_LIFETIME",
        default_value_t = 86_400
    )]
    pub max_token_lifetime_secs: u64,

    /// Accept only player tokens (`<expiry>.<nonce>.<sig>`, one live connection per nonce), not
    /// room tokens (`<expiry>.<sig>`).
    #[arg(long, env = "PEERSYNC_LOBBY_REQUIRE_TOKEN_NONCE")]
    pub require_token_nonce: bool,

    /// Origins allowed to connect (e.g. `https://game.example.com`); repeat the flag or
    /// separate with commas. Empty: any origin, and clients that send none (native).
    #[arg(
        long = "allow-origin",
        env = "PEERSYNC_LOBBY_ALLOW_ORIGINS",
        value_delimiter = ','
    )]
    pub allowed_origins: Vec<String>,

    /// Directory of a built web page (the wasm demo) served on the same port. A file's `.br` or
    /// `.gz` sibling is sent instead when the client accepts it; every file is sent with
    /// `Cache-Control: no-cache` (revalidated by ETag on each load).
    #[arg(long, env = "PEERSYNC_LOBBY_STATIC_DIR")]
    pub static_dir: Option<PathBuf>,

    /// coturn's `static-auth-secret` (coturn runs with `use-auth-secret`): with it,
    /// `GET /turn/<room>` hands out time-limited TURN credentials (docs/turn.md). Needs
    /// --turn-uri.
    #[arg(
        long,
        env = "PEERSYNC_LOBBY_TURN_SECRET",
        hide_env_values = true,
        requires = "turn_uris"
    )]
    pub turn_secret: Option<String>,

    /// ICE server URIs handed out with TURN credentials, e.g.
    /// `turn:turn.example.com:3478?transport=udp` (also `stun:` and `turns:`); repeat the flag
    /// or separate with commas.
    #[arg(
        long = "turn-uri",
        env = "PEERSYNC_LOBBY_TURN_URIS",
        value_delimiter = ',',
        value_parser = turn::parse_ice_uri
    )]
    pub turn_uris: Vec<String>,

    /// Lifetime of TURN credentials, in seconds (60 to 604800). A player uses its credential
    /// for every relay it allocates while in its room, so it should outlive a session.
    #[arg(
        long = "turn-ttl",
        env = "PEERSYNC_LOBBY_TURN_TTL",
        default_value_t = turn::DEFAULT_TTL_SECS,
        value_parser = clap::value_parser!(u64).range(turn::MIN_TTL_SECS..=turn::MAX_TTL_SECS)
    )]
    pub turn_ttl_secs: u64,

    /// Seconds given to clients to close after a shutdown signal.
    #[arg(long, env = "PEERSYNC_LOBBY_SHUTDOWN_GRACE", default_value_t = 5)]
    pub shutdown_grace_secs: u64,
}

impl Default for LobbyConfig {
    fn default() -> Self {
        Self {
            bind: SocketAddr::from(([0, 0, 0, 0], 3536)),
            room_capacity: 16,
            max_next: 16,
            max_message_size: 64 * 1024,
            max_sdp_size: signal::DEFAULT_MAX_SDP_SIZE,
            rate_per_sec: 50,
            rate_burst: 500,
            pair_signal_burst: 100,
            pair_signal_rate: 10.0,
            join_burst_per_ip: 64,
            join_rate_per_ip: 16.0,
            join_burst_per_room: 32,
            join_rate_per_room: 2.0,
            idle_timeout_secs: 30,
            handshake_timeout_secs: 10,
            max_connections: 20_000,
            max_connections_per_ip: 64,
            backlog: 4096,
            secret: None,
            max_token_lifetime_secs: 86_400,
            require_token_nonce: false,
            allowed_origins: Vec::new(),
            static_dir: None,
            turn_secret: None,
            turn_uris: Vec::new(),
            turn_ttl_secs: turn::DEFAULT_TTL_SECS,
            shutdown_grace_secs: 5,
        }
    }
}

impl LobbyConfig {
    /// A lobby on 127.0.0.1 with a port the system picks, as tests and embedded lobbies want.
    pub fn local() -> Self {
        Self {
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            ..Self::default()
        }
    }

    pub(crate) fn idle_timeout(&self) -> Duration {
        Duration::from_secs(self.idle_timeout_secs)
    }

    pub(crate) fn handshake_timeout(&self) -> Duration {
        Duration::from_secs(self.handshake_timeout_secs)
    }
}
