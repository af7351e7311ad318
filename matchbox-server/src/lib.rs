//! `peersync-lobby`: a signaling lobby for WebRTC games that speaks matchbox's protocol, so any
//! unmodified `matchbox_socket` 0.15 client (native or browser) can use it.
//!
//! It adds what a public server needs: rooms isolated from each other, `?next=N` matchmaking,
//! room capacity, a lobby browser (`GET /rooms`), health and Prometheus metrics, size, rate,
//! idle and handshake limits, connection limits in total and per address, signed join tokens
//! and an Origin allowlist. Every refusal has an HTTP status and every close a close code, each
//! with a reason, and each counted.
//!
//! The parts: [`admission`] decides joins (pure), [`state`] holds rooms (pure), [`ratelimit`]
//! the token buckets, [`auth`] the tokens; the server module does the I/O around them.
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
pub mod state;
mod uri;

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

    /// Messages per second a connection may send on average (token bucket refill).
    #[arg(long, env = "PEERSYNC_LOBBY_RATE", default_value_t = 50)]
    pub rate_per_sec: u32,

    /// Messages a connection may send in a burst (token bucket size). Joining a full room of
    /// 16 trickles a few hundred ICE candidates at once.
    #[arg(long, env = "PEERSYNC_LOBBY_RATE_BURST", default_value_t = 500)]
    pub rate_burst: u32,

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

    /// Shared secret for signed join tokens; when set, every join needs `?token=` (see the
    /// `auth` module for the format).
    #[arg(long, env = "PEERSYNC_LOBBY_SECRET", hide_env_values = true)]
    pub secret: Option<String>,

    /// Origins allowed to connect (e.g. `https://game.example.com`); repeat the flag or
    /// separate with commas. Empty: any origin, and clients that send none (native).
    #[arg(
        long = "allow-origin",
        env = "PEERSYNC_LOBBY_ALLOW_ORIGINS",
        value_delimiter = ','
    )]
    pub allowed_origins: Vec<String>,

    /// Directory of a built web page (the wasm demo) served on the same port.
    #[arg(long, env = "PEERSYNC_LOBBY_STATIC_DIR")]
    pub static_dir: Option<PathBuf>,

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
            rate_per_sec: 50,
            rate_burst: 500,
            idle_timeout_secs: 30,
            handshake_timeout_secs: 10,
            max_connections: 20_000,
            max_connections_per_ip: 64,
            backlog: 4096,
            secret: None,
            allowed_origins: Vec::new(),
            static_dir: None,
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
