//! A raw WebSocket client speaking the protocol by hand, and a raw HTTP GET, for the lobby's
//! tests: they assert the exact bytes a matchbox client would see.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt, StreamExt};
use peersync_lobby::{Lobby, LobbyConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, connect_async};

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// How long a test waits for anything.
pub const WAIT: Duration = Duration::from_secs(5);

/// Seconds since the Unix epoch, for token expiries.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

pub async fn lobby(configure: impl FnOnce(&mut LobbyConfig)) -> Lobby {
    let mut config = LobbyConfig::local();
    configure(&mut config);
    Lobby::bind(config).await.expect("binds a loopback port")
}

pub fn url(lobby: &Lobby, path: &str) -> String {
    format!("ws://{}{path}", lobby.local_addr())
}

pub async fn connect(lobby: &Lobby, path: &str) -> Ws {
    let (ws, _) = connect_async(url(lobby, path))
        .await
        .expect("the lobby accepts the join");
    ws
}

/// Connects and reads the id the lobby assigns.
pub async fn join(lobby: &Lobby, path: &str) -> (Ws, String) {
    let mut ws = connect(lobby, path).await;
    let first = next_text(&mut ws).await;
    let value: serde_json::Value = serde_json::from_str(&first).unwrap();
    let id = value["IdAssigned"]
        .as_str()
        .unwrap_or_else(|| panic!("first frame is IdAssigned, got {first}"))
        .to_owned();
    (ws, id)
}

/// The next text frame, failing after [`WAIT`].
pub async fn next_text(ws: &mut Ws) -> String {
    loop {
        match tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("a frame arrives in time")
        {
            Some(Ok(Message::Text(text))) => return text.to_string(),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            other => panic!("expected a text frame, got {other:?}"),
        }
    }
}

/// Waits for the server to close, returning its close frame.
pub async fn closed(ws: &mut Ws) -> Option<CloseFrame> {
    loop {
        match tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("the lobby closes in time")
        {
            Some(Ok(Message::Close(frame))) => return frame,
            Some(Ok(_)) => continue,
            Some(Err(_)) | None => return None,
        }
    }
}

/// Waits for the server to close with `code` and a reason mentioning `reason_part`.
pub async fn expect_close(ws: &mut Ws, code: u16, reason_part: &str) {
    let frame = closed(ws).await.expect("a close frame with a reason");
    assert_eq!(
        u16::from(frame.code),
        code,
        "close code for {reason_part:?}: {frame:?}"
    );
    assert!(
        frame.reason.contains(reason_part),
        "reason {:?} should mention {reason_part:?}",
        frame.reason
    );
}

/// Nothing arrives for a while (used where the point is that a frame must not come).
pub async fn silent(ws: &mut Ws, for_: Duration) -> bool {
    tokio::time::timeout(for_, ws.next()).await.is_err()
}

pub async fn send(ws: &mut Ws, text: &str) {
    ws.send(Message::Text(text.into())).await.unwrap();
}

pub fn signal_to(receiver: &str, data: &str) -> String {
    format!(r#"{{"Signal":{{"receiver":"{receiver}","data":{data}}}}}"#)
}

/// A real minimal data-channel SDP in webrtc-rs's shape, which the lobby relays; `marker` is its
/// session name, so a test can recognise its copy.
pub fn sdp(setup: &str, marker: &str) -> String {
    let fingerprint: Vec<String> = (0..32).map(|i| format!("{i:02X}")).collect();
    format!(
        "v=0\r\no=- 4215469786452367785 1 IN IP4 0.0.0.0\r\ns={marker}\r\nt=0 0\r\n\
         a=fingerprint:sha-256 {}\r\na=group:BUNDLE 0\r\n\
         m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\nc=IN IP4 0.0.0.0\r\n\
         a=setup:{setup}\r\na=mid:0\r\na=sendrecv\r\na=sctp-port:5000\r\n\
         a=ice-ufrag:AbCdEfGhIjKlMnOp\r\na=ice-pwd:AbCdEfGhIjKlMnOpQrStUvWxYz012345\r\n",
        fingerprint.join(":")
    )
}

/// `{"Offer":<sdp>}`: a signal's data.
pub fn offer(marker: &str) -> String {
    serde_json::json!({ "Offer": sdp("actpass", marker) }).to_string()
}

/// `{"Answer":<sdp>}`: a signal's data.
pub fn answer(marker: &str) -> String {
    serde_json::json!({ "Answer": sdp("active", marker) }).to_string()
}

/// `{"IceCandidate":"<init json>"}` for a host candidate on `port`, as native matchbox sends
/// it; valid once its sender has sent the receiver an offer or answer.
pub fn candidate(port: u16) -> String {
    let init = serde_json::json!({
        "candidate": format!("candidate:1 1 udp 2130706431 192.0.2.10 {port} typ host"),
        "sdpMid": "",
        "sdpMLineIndex": 0,
    });
    serde_json::json!({ "IceCandidate": init.to_string() }).to_string()
}

/// A refused join: its HTTP status and body.
pub async fn refused(lobby: &Lobby, path: &str) -> (u16, String) {
    refused_url(&url(lobby, path)).await
}

pub async fn refused_url(url: &str) -> (u16, String) {
    match connect_async(url).await {
        Ok(_) => panic!("{url} should be refused"),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            let body = response
                .body()
                .clone()
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .unwrap_or_default();
            (response.status().as_u16(), body)
        }
        Err(other) => panic!("expected an HTTP refusal, got {other}"),
    }
}

/// A plain HTTP GET: status and body.
pub async fn get(lobby: &Lobby, path: &str) -> (u16, String) {
    get_with(lobby, path, "").await
}

/// A plain HTTP GET with extra header lines (each ending in `\r\n`): status and body.
pub async fn get_with(lobby: &Lobby, path: &str, headers: &str) -> (u16, String) {
    let response = get_raw(lobby, path, headers).await;
    let status = response[9..12].parse().unwrap();
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// A plain HTTP GET: the whole response, status line and headers included.
pub async fn get_raw(lobby: &Lobby, path: &str, headers: &str) -> String {
    let mut stream = TcpStream::connect(lobby.local_addr()).await.unwrap();
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: lobby\r\nConnection: close\r\n{headers}\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut response))
        .await
        .unwrap()
        .unwrap();
    String::from_utf8_lossy(&response).into_owned()
}

/// An HTTP response, its body as bytes (a compressed file is not text).
pub struct HttpResponse {
    pub status: u16,
    /// Header names in lower case, values as sent, in order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// The value of header `name` (lower case), if it was sent once or more (the first).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A plain HTTP request (`GET`, `HEAD`, ...) with extra header lines (each ending in `\r\n`),
/// answered with `Connection: close`; the body is whatever follows the headers.
pub async fn request(lobby: &Lobby, method: &str, path: &str, headers: &str) -> HttpResponse {
    let mut stream = TcpStream::connect(lobby.local_addr()).await.unwrap();
    let request =
        format!("{method} {path} HTTP/1.1\r\nHost: lobby\r\nConnection: close\r\n{headers}\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut response))
        .await
        .expect("the lobby answers and closes in time")
        .unwrap();
    let end = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response with headers");
    let head = String::from_utf8(response[..end].to_vec()).expect("ASCII headers");
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap()[9..12].parse().unwrap();
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.to_ascii_lowercase(), value.trim().to_owned()))
        .collect();
    HttpResponse {
        status,
        headers,
        body: response[end + 4..].to_vec(),
    }
}
