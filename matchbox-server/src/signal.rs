//! Signals are checked before they are relayed, because the clients trust them: matchbox_socket
//! 0.15 unwraps the result of parsing and applying a remote description on native
//! (`RTCSessionDescription::offer(..).unwrap()`, `set_remote_description(..).unwrap()`), and the
//! browser socket `expect`s on a description or candidate the browser refuses. Relayed verbatim,
//! one member's `{"Answer":"not an sdp at all"}` panicked every native peer's socket in the room.
//!
//! What is relayed here is what webrtc-rs (the stack matchbox uses on native) accepts: SDP is
//! parsed with `rtc-sdp` and candidates with `rtc-ice`, pinned to the versions in Cargo.lock, and
//! every check `set_remote_description` and `create_answer` make that could fail on an SDP that
//! parses is made here too (ICE credentials, fingerprint, `mid`s, data-channel-only sections),
//! with the stricter syntax browsers enforce on top. `tests/lobby/signal_oracle.rs` holds the
//! lobby to that promise against the real webrtc-rs core.
//!
//! A candidate must belong to a description its sender sent the same receiver before (matchbox
//! sends candidates only after its offer or answer): its `sdpMid` or `sdpMLineIndex` must name one
//! of that description's sections and its `usernameFragment`, if any, must be that description's,
//! since a browser refuses, and the browser socket panics on, any other.

mod candidate;
mod sdp;

use std::fmt;

use serde::Deserialize;

/// Default bound on one offer or answer. Measured: a native matchbox offer is 450 bytes (its
/// candidates trickle separately); a Chromium offer, which carries its candidates, 654 bytes
/// with two host candidates, each further candidate line adding 95–130 bytes. 16 KiB leaves
/// room for over a hundred candidates.
pub const DEFAULT_MAX_SDP_SIZE: usize = 16 * 1024;

/// Bound on one candidate signal's JSON: a candidate line is a few hundred bytes at most.
pub const MAX_CANDIDATE_SIZE: usize = 2 * 1024;

/// Why a signal was not relayed: the reason its sender's connection is closed with.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum InvalidSignal {
    /// The description or candidate is over its size bound.
    TooLarge {
        /// `Offer`, `Answer` or `IceCandidate`.
        kind: &'static str,
        /// Its size in bytes.
        size: usize,
        /// The bound.
        max: usize,
    },
    /// The offer or answer is not a session description a WebRTC data-channel peer can apply.
    Sdp {
        /// `Offer` or `Answer`.
        kind: &'static str,
        /// What is wrong with it.
        problem: String,
    },
    /// The candidate is malformed, or does not belong to a description its sender sent.
    Candidate {
        /// What is wrong with it.
        problem: String,
    },
}

impl fmt::Display for InvalidSignal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InvalidSignal::TooLarge { kind, size, max } => {
                write!(f, "{kind} of {size} bytes is over the {max} byte limit")
            }
            InvalidSignal::Sdp { kind, problem } => {
                write!(f, "{kind} is not usable SDP: {problem}")
            }
            InvalidSignal::Candidate { problem } => write!(f, "bad IceCandidate: {problem}"),
        }
    }
}

impl std::error::Error for InvalidSignal {}

/// A signal as matchbox's `PeerSignal` carries it.
#[derive(Debug, Deserialize)]
enum PeerSignal {
    Offer(String),
    Answer(String),
    IceCandidate(String),
}

/// What a sender's last description to one receiver said that its candidates must match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SentDescription {
    /// The `mid` of each media section, in order.
    pub mids: Vec<String>,
    /// Its ICE username fragment.
    pub ufrag: String,
}

/// Checks one signal from a sender to one receiver. `sent` is the last description the sender
/// sent that receiver (updated here when this signal is a valid offer or answer), so candidates
/// can be checked against it.
pub fn check_signal(
    data: &str,
    max_sdp_size: usize,
    sent: &mut Option<SentDescription>,
) -> Result<(), InvalidSignal> {
    let signal: PeerSignal = serde_json::from_str(data).map_err(|e| InvalidSignal::Sdp {
        kind: "signal",
        problem: e.to_string(),
    })?;
    match signal {
        PeerSignal::Offer(text) => {
            *sent = Some(checked_sdp("Offer", sdp::Role::Offer, &text, max_sdp_size)?);
        }
        PeerSignal::Answer(text) => {
            *sent = Some(checked_sdp(
                "Answer",
                sdp::Role::Answer,
                &text,
                max_sdp_size,
            )?);
        }
        PeerSignal::IceCandidate(json) => {
            if json.len() > MAX_CANDIDATE_SIZE {
                return Err(InvalidSignal::TooLarge {
                    kind: "IceCandidate",
                    size: json.len(),
                    max: MAX_CANDIDATE_SIZE,
                });
            }
            contained(|| candidate::check(&json, sent.as_ref()))
                .map_err(|problem| InvalidSignal::Candidate { problem })?;
        }
    }
    Ok(())
}

fn checked_sdp(
    kind: &'static str,
    role: sdp::Role,
    text: &str,
    max: usize,
) -> Result<SentDescription, InvalidSignal> {
    if text.len() > max {
        return Err(InvalidSignal::TooLarge {
            kind,
            size: text.len(),
            max,
        });
    }
    contained(|| sdp::check(role, text)).map_err(|problem| InvalidSignal::Sdp { kind, problem })
}

/// Runs a check whose parsers are third-party code fed hostile input: a panic in them must
/// cost the sender its signal, not the lobby a task.
fn contained<T>(check: impl FnOnce() -> Result<T, String>) -> Result<T, String> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(check))
        .unwrap_or_else(|_| Err("the parser panicked".to_owned()))
}

#[cfg(test)]
mod tests;
