//! The `peersync-lobby` binary: a matchbox-compatible signaling lobby.

use clap::Parser;

/// jemalloc, with its background thread, gives memory that connections freed back to the system
/// (after its 10 s decay): glibc's malloc kept all of it after 10 000 connections left (about
/// 88 MiB); see BENCHMARKS.md.
#[cfg(all(unix, not(target_env = "musl")))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use peersync_lobby::{Lobby, LobbyConfig};

/// A signaling lobby for WebRTC games: any matchbox_socket 0.15 client joins rooms at
/// ws://HOST:PORT/<room>[?next=N][&token=…]. Every option also reads an environment variable.
#[derive(Debug, Parser)]
#[command(name = "peersync-lobby", version)]
struct Cli {
    #[command(flatten)]
    config: LobbyConfig,

    /// Log format.
    #[arg(long, env = "PEERSYNC_LOBBY_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,

    /// Prints a token for ROOM valid for --token-ttl seconds (needs --secret) and exits.
    /// `--mint-token /admin` mints an admin token for `/rooms` and `/metrics`.
    #[arg(long, value_name = "ROOM")]
    mint_token: Option<String>,

    /// Lifetime of a token printed by --mint-token, in seconds.
    #[arg(long, default_value_t = 3600)]
    token_ttl: u64,

    /// With --mint-token: a player token bound to NONCE (1–64 of A–Z a–z 0–9 - _), which one
    /// live connection at a time may use.
    #[arg(long, value_name = "NONCE", requires = "mint_token")]
    token_nonce: Option<String>,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_env("PEERSYNC_LOBBY_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match cli.log_format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }

    if let Some(room) = &cli.mint_token {
        let Some(secret) = &cli.config.secret else {
            eprintln!("--mint-token needs --secret (or PEERSYNC_LOBBY_SECRET)");
            return std::process::ExitCode::FAILURE;
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let expiry = now + cli.token_ttl;
        let token = match &cli.token_nonce {
            None => peersync_lobby::auth::mint_token(secret.as_bytes(), room, expiry),
            Some(nonce) => {
                match peersync_lobby::auth::mint_player_token(
                    secret.as_bytes(),
                    room,
                    expiry,
                    nonce,
                ) {
                    Some(token) => token,
                    None => {
                        eprintln!("--token-nonce must be 1 to 64 of A-Z a-z 0-9 - _");
                        return std::process::ExitCode::FAILURE;
                    }
                }
            }
        };
        println!("{token}");
        return std::process::ExitCode::SUCCESS;
    }

    // Each connection is a file descriptor: take the hard limit, not the (often 1024) soft one.
    #[cfg(unix)]
    if let Ok((soft, hard)) = rlimit::Resource::NOFILE.get()
        && soft < hard
        && rlimit::Resource::NOFILE.set(hard, hard).is_err()
    {
        tracing::warn!("cannot raise the open file limit from {soft} to {hard}");
    }

    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("cannot start the runtime: {error}");
            return std::process::ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let lobby = match Lobby::bind(cli.config).await {
            Ok(lobby) => lobby,
            Err(error) => {
                tracing::error!("cannot listen: {error}");
                return std::process::ExitCode::FAILURE;
            }
        };
        let stop = lobby.shutdown_handle();
        tokio::spawn(async move {
            wait_for_signal().await;
            tracing::info!("shutting down");
            stop.shutdown();
        });
        lobby.closed().await;
        std::process::ExitCode::SUCCESS
    })
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut term) = signal(SignalKind::terminate()) else {
            let _ = tokio::signal::ctrl_c().await;
            return;
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}
