//! One client's WebSocket after the upgrade: frames from the lobby out, frames from the client
//! in, every limit checked, and exactly one reason why it ended.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures_util::{SinkExt, StreamExt};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{debug, info};

use crate::metrics::Close;
use crate::protocol::{ClientFrame, parse_client_frame};
use crate::ratelimit::TokenBucket;
use crate::server::{ConnectionGuard, Outgoing, Shared, stopped};
use crate::signal::{SentDescription, check_signal};
use crate::state::{PeerId, SignalError};

/// Longest a write to a client may take: a client that stops reading is dropped after it.
pub(crate) const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// Close codes (RFC 6455 and the 4000–4999 private range).
pub(crate) mod code {
    pub const GOING_AWAY: u16 = 1001;
    pub const UNSUPPORTED_DATA: u16 = 1003;
    pub const INVALID_PAYLOAD: u16 = 1007;
    pub const POLICY_VIOLATION: u16 = 1008;
    pub const MESSAGE_TOO_BIG: u16 = 1009;
    pub const IDLE_TIMEOUT: u16 = 4000;
    pub const RATE_LIMITED: u16 = 4001;
    pub const TOO_SLOW: u16 = 4002;
    pub const INVALID_SIGNAL: u16 = 4003;
    pub const FLOODING_PEER: u16 = 4004;
}

/// Why a connection ends: the counter to bump, the close code to send (0: none, the
/// connection is already gone) and the reason the client reads.
type Ending = (Close, u16, String);

fn too_slow() -> Ending {
    (
        Close::TooSlow,
        code::TOO_SLOW,
        "too slow to read signals".into(),
    )
}

/// Whether a receive error is the client's message being over the size limit: tungstenite says
/// so with a capacity error, which axum hands on as the error's source.
fn is_oversized(error: &axum::Error) -> bool {
    matches!(
        std::error::Error::source(error).and_then(|e| e.downcast_ref::<tungstenite::Error>()),
        Some(tungstenite::Error::Capacity(_))
    )
}

/// Keeps a client in its room until dropped, so even a panic in its task (a bug, or a parser
/// fed something it chokes on) cannot leave a ghost peer that its room keeps offering to.
struct Membership {
    shared: Arc<Shared>,
    peer: PeerId,
}

impl Drop for Membership {
    fn drop(&mut self) {
        self.shared.leave(self.peer);
    }
}

/// What a client has sent one other peer: its share of signals, and its last description
/// (which its candidates must match).
struct Pair {
    bucket: TokenBucket,
    sent: Option<SentDescription>,
}

/// The client's side of its conversations, kept in its own task (no lock needed).
struct Sender {
    peer: PeerId,
    pairs: HashMap<PeerId, Pair>,
}

/// Serves one client until it leaves, breaks a limit, or the lobby shuts down; then takes it
/// out of its room and tells it why with a close frame.
pub(crate) async fn run_client(
    shared: Arc<Shared>,
    socket: WebSocket,
    peer: PeerId,
    mut outbound: mpsc::Receiver<Outgoing>,
    _guard: Option<Arc<ConnectionGuard>>,
) {
    let membership = Membership {
        shared: shared.clone(),
        peer,
    };
    let (mut sink, mut stream) = socket.split();
    let mut shutdown = shared.shutdown.clone();
    let idle = shared.config.idle_timeout();
    let mut last_seen = Instant::now();
    let mut bucket = TokenBucket::full(
        shared.config.rate_burst,
        f64::from(shared.config.rate_per_sec),
        last_seen,
    );
    let mut sender = Sender {
        peer,
        pairs: HashMap::new(),
    };
    let ending: Ending = loop {
        tokio::select! {
            biased;
            _ = stopped(&mut shutdown) => {
                break (Close::Shutdown, code::GOING_AWAY, "the lobby is shutting down".into());
            }
            frame = outbound.recv() => {
                let Some(Outgoing { text, share }) = frame else {
                    break too_slow();
                };
                if let Some(share) = share {
                    share.fetch_sub(1, Ordering::AcqRel);
                }
                match tokio::time::timeout(WRITE_TIMEOUT, sink.send(Message::Text(text))).await {
                    Ok(Ok(())) => {}
                    Ok(Err(_)) => break (Close::ConnectionLost, 0, String::new()),
                    Err(_) => break too_slow(),
                }
            }
            _ = tokio::time::sleep_until(last_seen + idle) => {
                break (Close::IdleTimeout, code::IDLE_TIMEOUT,
                    format!("nothing received for {} s", idle.as_secs()));
            }
            message = stream.next() => {
                let message = match message {
                    None => break (Close::ConnectionLost, 0, String::new()),
                    Some(Err(error)) if is_oversized(&error) => {
                        break (Close::MessageTooBig, code::MESSAGE_TOO_BIG,
                            format!("messages are limited to {} bytes", shared.config.max_message_size));
                    }
                    Some(Err(_)) => break (Close::ConnectionLost, 0, String::new()),
                    Some(Ok(message)) => message,
                };
                let now = Instant::now();
                last_seen = now;
                let text = match message {
                    Message::Close(_) => break (Close::ClientClosed, 0, String::new()),
                    Message::Ping(_) | Message::Pong(_) => continue,
                    Message::Binary(_) => {
                        break (Close::BinaryFrame, code::UNSUPPORTED_DATA,
                            "binary frames are not part of the protocol".into());
                    }
                    Message::Text(text) => text,
                };
                if !bucket.take(now) {
                    break (Close::RateLimited, code::RATE_LIMITED,
                        format!("more than {} messages per second", shared.config.rate_per_sec));
                }
                if let Some(ending) = sender.handle_text(&shared, text.as_str(), now) {
                    break ending;
                }
            }
        }
    };
    drop(membership);
    let (reason, close_code, text) = ending;
    shared.metrics.closed(reason);
    match reason {
        // A member sending garbage or flooding is worth an operator's attention, once.
        Close::InvalidSignal | Close::FloodingPeer => info!("peer {peer} closed: {text}"),
        _ => debug!("peer {peer} closed: {}", reason.label()),
    }
    if close_code != 0 {
        let frame = CloseFrame {
            code: close_code,
            reason: Utf8Bytes::from(text),
        };
        let _ = tokio::time::timeout(WRITE_TIMEOUT, sink.send(Message::Close(Some(frame)))).await;
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), sink.close()).await;
}

impl Sender {
    /// Acts on one text frame; `Some` ends the connection.
    fn handle_text(&mut self, shared: &Shared, text: &str, now: Instant) -> Option<Ending> {
        match parse_client_frame(text) {
            Ok(ClientFrame::KeepAlive) => None,
            Ok(ClientFrame::Signal { receiver, data }) => {
                if let Some(ending) = self.check(shared, receiver, &data, now) {
                    return Some(ending);
                }
                relay(shared, self.peer, receiver, data)
            }
            Err(reason) => Some((
                Close::InvalidFrame,
                code::INVALID_PAYLOAD,
                clip(reason, 120),
            )),
        }
    }

    /// A signal's checks before it is relayed: its sender's share of signals to that peer, then
    /// its content (see [`crate::signal`]).
    fn check(
        &mut self,
        shared: &Shared,
        receiver: PeerId,
        data: &str,
        now: Instant,
    ) -> Option<Ending> {
        let config = &shared.config;
        if self.pairs.len() >= 2 * config.room_capacity + 8 && !self.pairs.contains_key(&receiver) {
            // Forget peers that left (each one a new id): the map follows the room.
            let inner = shared.inner();
            self.pairs
                .retain(|other, _| inner.rooms.same_group(self.peer, *other));
        }
        let pair = self.pairs.entry(receiver).or_insert_with(|| Pair {
            bucket: TokenBucket::full(config.pair_signal_burst, config.pair_signal_rate, now),
            sent: None,
        });
        if config.pair_signal_burst != 0 && !pair.bucket.take(now) {
            return Some((
                Close::FloodingPeer,
                code::FLOODING_PEER,
                format!(
                    "more than {} signals to peer {receiver} at once",
                    config.pair_signal_burst
                ),
            ));
        }
        match check_signal(data, config.max_sdp_size, &mut pair.sent) {
            Ok(()) => None,
            Err(invalid) => Some((
                Close::InvalidSignal,
                code::INVALID_SIGNAL,
                clip(format!("invalid signal: {invalid}"), 120),
            )),
        }
    }
}

/// Relays a checked signal within the sender's room; `Some` ends the sender's connection.
fn relay(shared: &Shared, peer: PeerId, receiver: PeerId, data: Arc<str>) -> Option<Ending> {
    let mut inner = shared.inner();
    match inner.rooms.signal(peer, receiver, data) {
        Ok(frame) => {
            shared.deliver(&mut inner, vec![frame]);
            None
        }
        Err(SignalError::UnknownReceiver) => {
            // Usually a peer that just left: not the sender's fault.
            shared
                .metrics
                .signals_unknown_receiver
                .fetch_add(1, Ordering::Relaxed);
            None
        }
        Err(SignalError::ToSelf) => Some((
            Close::InvalidFrame,
            code::POLICY_VIOLATION,
            "a peer cannot signal itself".into(),
        )),
        // Not joined: dropped as too slow a moment ago.
        Err(_) => Some(too_slow()),
    }
}

/// Cuts `text` to at most `max` bytes on a character boundary: a close reason is limited to
/// 123 bytes, and error messages quote the client's own (possibly multi-byte) text.
pub(crate) fn clip(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clipping_keeps_whole_characters() {
        assert_eq!(clip("abc".into(), 120), "abc");
        assert_eq!(clip("ééé".into(), 3), "é");
        assert_eq!(clip("x".repeat(200), 120).len(), 120);
    }
}
