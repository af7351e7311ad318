//! Starts a lobby in this process when none answers at the address the examples use.

use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use peersync_lobby::{LobbyConfig, LobbyThread};

/// Where the examples look for a lobby.
pub const LOBBY_ADDR: &str = "127.0.0.1:3536";

/// [`LOBBY_ADDR`], or `PEERSYNC_LOCAL_LOBBY` when set (tests give each run its own port).
pub fn lobby_addr() -> String {
    std::env::var("PEERSYNC_LOCAL_LOBBY").unwrap_or_else(|_| LOBBY_ADDR.to_owned())
}

/// Keeps a lobby answering at `addr` for as long as this process runs: every two seconds, if
/// none answers (the program that ran it was closed), starts one here. Every player does the
/// same, the first to bind wins, and the players' sockets notice the lobby is back and rejoin:
/// the session survives the loss of whichever window started the lobby.
pub fn keep_lobby(addr: String) {
    // The first check before the program goes on, so that its socket finds a lobby.
    let first = ensure_lobby(&addr);
    let spawned = std::thread::Builder::new()
        .name("local-lobby-keeper".to_owned())
        .spawn(move || {
            let mut ours = first;
            loop {
                // A watchdog's pace, not a synchronisation.
                std::thread::sleep(Duration::from_secs(2));
                if ours.is_none() {
                    ours = ensure_lobby_quietly(&addr);
                }
            }
        });
    if let Err(error) = spawned {
        println!("cannot watch the local lobby: {error}");
    }
}

/// [`ensure_lobby`] without the line when one already answers.
fn ensure_lobby_quietly(addr: &str) -> Option<LobbyThread> {
    let parsed: SocketAddr = addr.parse().ok()?;
    if TcpStream::connect_timeout(&parsed, Duration::from_millis(300)).is_ok() {
        return None;
    }
    ensure_lobby(addr)
}

/// Makes sure a lobby answers at `addr`: if one does, returns `None`; otherwise starts one in
/// this process (dropped, it stops). Two programs racing to start one both end up using the
/// one that bound first.
pub fn ensure_lobby(addr: &str) -> Option<LobbyThread> {
    let addr: SocketAddr = addr.parse().expect("a socket address like 127.0.0.1:3536");
    if TcpStream::connect_timeout(&addr, Duration::from_millis(300)).is_ok() {
        println!("using the lobby at {addr}");
        return None;
    }
    match LobbyThread::spawn(LobbyConfig {
        bind: addr,
        ..LobbyConfig::default()
    }) {
        Ok(lobby) => {
            println!("started a lobby at {addr}; other players join through this process");
            Some(lobby)
        }
        Err(error) => {
            println!("using the lobby at {addr} ({error} when starting one here)");
            None
        }
    }
}
