//! Starts a lobby in this process when none answers at the address the examples use.

use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use peersync_lobby::{LobbyConfig, LobbyThread};

/// Where the examples look for a lobby.
pub const LOBBY_ADDR: &str = "127.0.0.1:3536";

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
