//! matchbox's signaling protocol (matchbox_protocol 0.15) as JSON text frames.
//!
//! Server → client: `{"IdAssigned":"<uuid>"}`, `{"NewPeer":"<uuid>"}`, `{"PeerLeft":"<uuid>"}`,
//! `{"Signal":{"sender":"<uuid>","data":<signal>}}`.
//! Client → server: `{"Signal":{"receiver":"<uuid>","data":<signal>}}` and `"KeepAlive"`.
//! A signal is `{"Offer":"<sdp>"}`, `{"Answer":"<sdp>"}` or `{"IceCandidate":"<json>"}`: the
//! server checks that shape (a client must never receive a signal it cannot parse) and relays
//! the bytes as they came.

use std::sync::Arc;

use serde::Deserialize;
use serde_json::value::RawValue;
use uuid::Uuid;

use crate::state::ServerFrame;

/// A frame from a client.
#[derive(Debug, PartialEq, Eq)]
pub enum ClientFrame {
    /// Relay `data` to `receiver`.
    Signal {
        /// The peer it is for.
        receiver: Uuid,
        /// The signal's JSON text, checked for shape.
        data: Arc<str>,
    },
    /// Nothing but proof of life.
    KeepAlive,
}

#[derive(Deserialize)]
enum Wire<'a> {
    Signal {
        receiver: Uuid,
        #[serde(borrow)]
        data: &'a RawValue,
    },
    KeepAlive,
}

#[derive(Deserialize)]
#[allow(dead_code)] // Only the shape is checked.
enum SignalShape {
    Offer(String),
    Answer(String),
    IceCandidate(String),
}

/// Parses a client's text frame; the error is the reason to close its connection.
pub fn parse_client_frame(text: &str) -> Result<ClientFrame, String> {
    let wire: Wire<'_> = serde_json::from_str(text).map_err(|e| format!("invalid frame: {e}"))?;
    match wire {
        Wire::KeepAlive => Ok(ClientFrame::KeepAlive),
        Wire::Signal { receiver, data } => {
            serde_json::from_str::<SignalShape>(data.get())
                .map_err(|e| format!("invalid signal: {e}"))?;
            Ok(ClientFrame::Signal {
                receiver,
                data: Arc::from(data.get()),
            })
        }
    }
}

/// Writes a server frame as matchbox clients expect it.
pub fn encode_server_frame(frame: &ServerFrame) -> String {
    match frame {
        ServerFrame::IdAssigned(id) => format!(r#"{{"IdAssigned":"{id}"}}"#),
        ServerFrame::NewPeer(id) => format!(r#"{{"NewPeer":"{id}"}}"#),
        ServerFrame::PeerLeft(id) => format!(r#"{{"PeerLeft":"{id}"}}"#),
        ServerFrame::Signal { sender, data } => {
            format!(r#"{{"Signal":{{"sender":"{sender}","data":{data}}}}}"#)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "67e55044-10b1-426f-9247-bb680e5fe0c8";

    #[test]
    fn server_frames_match_matchbox_protocol() {
        type Event = matchbox_protocol::PeerEvent<serde_json::Value>;
        let id = Uuid::parse_str(ID).unwrap();
        for frame in [
            ServerFrame::IdAssigned(id),
            ServerFrame::NewPeer(id),
            ServerFrame::PeerLeft(id),
            ServerFrame::Signal {
                sender: id,
                data: Arc::from(r#"{"Offer":"v=0"}"#),
            },
        ] {
            let text = encode_server_frame(&frame);
            let parsed: Event = serde_json::from_str(&text).expect("matchbox parses it");
            let expected = match frame {
                ServerFrame::IdAssigned(_) => Event::IdAssigned(matchbox_protocol::PeerId(id)),
                ServerFrame::NewPeer(_) => Event::NewPeer(matchbox_protocol::PeerId(id)),
                ServerFrame::PeerLeft(_) => Event::PeerLeft(matchbox_protocol::PeerId(id)),
                ServerFrame::Signal { .. } => Event::Signal {
                    sender: matchbox_protocol::PeerId(id),
                    data: serde_json::json!({"Offer": "v=0"}),
                },
            };
            assert_eq!(parsed, expected);
        }
    }

    #[test]
    fn client_frames_parse() {
        assert_eq!(
            parse_client_frame(r#""KeepAlive""#),
            Ok(ClientFrame::KeepAlive)
        );
        let text =
            format!(r#"{{"Signal":{{"receiver":"{ID}","data":{{"IceCandidate":"{{}}"}}}}}}"#);
        assert_eq!(
            parse_client_frame(&text),
            Ok(ClientFrame::Signal {
                receiver: Uuid::parse_str(ID).unwrap(),
                data: Arc::from(r#"{"IceCandidate":"{}"}"#),
            })
        );
    }

    #[test]
    fn malformed_frames_are_errors() {
        for text in [
            "",
            "{",
            r#"{"Hello":1}"#,
            r#"{"Signal":{"receiver":"not-a-uuid","data":{"Offer":"x"}}}"#,
            &format!(r#"{{"Signal":{{"receiver":"{ID}","data":{{"Bogus":"x"}}}}}}"#),
            &format!(r#"{{"Signal":{{"receiver":"{ID}","data":42}}}}"#),
        ] {
            assert!(
                parse_client_frame(text).is_err(),
                "{text:?} should be refused"
            );
        }
    }
}
