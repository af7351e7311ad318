//! A room member that speaks the lobby's protocol by hand over a plain WebSocket, with no
//! WebRTC behind it: it sees the members' offers (their handshakes with it have started) and can
//! answer with anything.

use std::net::TcpStream;
use std::time::Duration;

use tungstenite::WebSocket;
use tungstenite::stream::MaybeTlsStream;

pub struct RawMember {
    socket: WebSocket<MaybeTlsStream<TcpStream>>,
}

impl RawMember {
    /// Joins the room at `url`; each read waits at most `patience`, so that a missing offer
    /// fails its caller's deadline instead of blocking forever.
    pub fn join(url: &str, patience: Duration) -> Result<Self, tungstenite::Error> {
        let (mut socket, _) = tungstenite::connect(url)?;
        if let MaybeTlsStream::Plain(stream) = socket.get_mut() {
            stream
                .set_read_timeout(Some(patience))
                .expect("a read timeout");
        }
        Ok(Self { socket })
    }

    /// Reads one frame: the sender of the offer it carries, `None` when the read timed out or
    /// the frame was something else. Fails with `what` when the lobby closes the socket.
    pub fn next_offer(&mut self, what: &str) -> Option<String> {
        let frame = match self.socket.read() {
            Ok(frame) => frame,
            Err(tungstenite::Error::Io(error))
                if matches!(
                    error.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return None;
            }
            Err(error) => panic!("{what}: {error}"),
        };
        let text = frame.into_text().ok()?;
        let json = serde_json::from_str::<serde_json::Value>(text.as_str()).ok()?;
        let signal = &json["Signal"];
        signal["data"].get("Offer")?;
        Some(
            signal["sender"]
                .as_str()
                .expect("a signal names its sender")
                .to_owned(),
        )
    }

    /// Sends `data` (a signal's JSON) to the member `receiver`.
    pub fn signal(&mut self, receiver: &str, data: &str) {
        let text = format!(r#"{{"Signal":{{"receiver":"{receiver}","data":{data}}}}}"#);
        self.socket
            .send(tungstenite::Message::text(text))
            .expect("the raw member can send");
    }

    /// Leaves the room.
    pub fn leave(mut self) {
        let _ = self.socket.close(None);
        let _ = self.socket.flush();
    }
}
