//! Counters for `GET /metrics`, in Prometheus' text format.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

macro_rules! reasons {
    ($(#[$meta:meta])* $name:ident { $($variant:ident => $label:literal,)* }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum $name { $(#[doc = $label] $variant,)* }
        impl $name {
            /// Every reason, in order.
            pub const ALL: &'static [$name] = &[$($name::$variant,)*];
            /// How many reasons there are.
            pub const COUNT: usize = Self::ALL.len();
            /// The label value.
            pub fn label(self) -> &'static str {
                match self { $($name::$variant => $label,)* }
            }
        }
    };
}

reasons! {
    /// Why a connection was refused before it became a WebSocket (each has an HTTP status).
    Refusal {
        TooManyConnections => "too_many_connections",
        TooManyFromAddress => "too_many_from_address",
        BadRoom => "bad_room",
        BadNext => "bad_next",
        MissingToken => "missing_token",
        BadToken => "bad_token",
        ExpiredToken => "expired_token",
        OriginNotAllowed => "origin_not_allowed",
        RoomFull => "room_full",
        ShuttingDown => "shutting_down",
        JoinRateAddress => "join_rate_address",
        JoinRateRoom => "join_rate_room",
        TokenLifetime => "token_lifetime",
        TokenNonceRequired => "token_nonce_required",
        TokenInUse => "token_in_use",
        AdminUnauthorized => "admin_unauthorized",
        AdminForbidden => "admin_forbidden",
        TurnUnauthorized => "turn_unauthorized",
        TurnForbidden => "turn_forbidden",
        BadTurnUser => "bad_turn_user",
    }
}

reasons! {
    /// Why a WebSocket ended (each has a close code).
    Close {
        ClientClosed => "client_closed",
        ConnectionLost => "connection_lost",
        IdleTimeout => "idle_timeout",
        RateLimited => "rate_limited",
        MessageTooBig => "message_too_big",
        InvalidFrame => "invalid_frame",
        BinaryFrame => "binary_frame",
        TooSlow => "too_slow",
        Shutdown => "shutdown",
        InvalidSignal => "invalid_signal",
        FloodingPeer => "flooding_peer",
    }
}

/// Every counter of the lobby.
#[derive(Debug, Default)]
pub struct Metrics {
    /// WebSocket connections accepted.
    pub connections_total: AtomicU64,
    /// Signals relayed to a peer.
    pub signals_relayed: AtomicU64,
    /// Bytes of signals relayed.
    pub bytes_relayed: AtomicU64,
    /// Signals for a peer not in the sender's room.
    pub signals_unknown_receiver: AtomicU64,
    /// Signals dropped because their sender already filled its share of the receiver's queue.
    pub signals_over_share: AtomicU64,
    refusals: [AtomicU64; Refusal::COUNT],
    closes: [AtomicU64; Close::COUNT],
}

impl Metrics {
    /// Counts a refusal.
    pub fn refused(&self, reason: Refusal) {
        self.refusals[reason as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a close.
    pub fn closed(&self, reason: Close) {
        self.closes[reason as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Refusals so far for `reason`.
    pub fn refusals(&self, reason: Refusal) -> u64 {
        self.refusals[reason as usize].load(Ordering::Relaxed)
    }

    /// Closes so far for `reason`.
    pub fn closes(&self, reason: Close) -> u64 {
        self.closes[reason as usize].load(Ordering::Relaxed)
    }

    /// Renders the counters and the gauges given.
    pub fn render(&self, connections: usize, peers: usize, rooms: usize) -> String {
        let mut out = String::new();
        let gauge = |out: &mut String, name: &str, help: &str, value: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
            );
        };
        let counter = |out: &mut String, name: &str, help: &str, value: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
            );
        };
        gauge(
            &mut out,
            "peersync_lobby_connections",
            "Open connections (HTTP and WebSocket).",
            connections as u64,
        );
        gauge(
            &mut out,
            "peersync_lobby_peers",
            "Peers in rooms.",
            peers as u64,
        );
        gauge(
            &mut out,
            "peersync_lobby_rooms",
            "Rooms and matched groups with anyone in them.",
            rooms as u64,
        );
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        counter(
            &mut out,
            "peersync_lobby_websockets_total",
            "WebSocket connections accepted.",
            load(&self.connections_total),
        );
        counter(
            &mut out,
            "peersync_lobby_signals_relayed_total",
            "Signals relayed between peers.",
            load(&self.signals_relayed),
        );
        counter(
            &mut out,
            "peersync_lobby_bytes_relayed_total",
            "Bytes of signals relayed.",
            load(&self.bytes_relayed),
        );
        counter(
            &mut out,
            "peersync_lobby_signals_unknown_receiver_total",
            "Signals dropped: the receiver is not in the sender's room.",
            load(&self.signals_unknown_receiver),
        );
        counter(
            &mut out,
            "peersync_lobby_signals_over_share_total",
            "Signals dropped: the sender already filled its share of the receiver's queue.",
            load(&self.signals_over_share),
        );
        let _ = writeln!(
            out,
            "# HELP peersync_lobby_refusals_total Connections refused, by reason."
        );
        let _ = writeln!(out, "# TYPE peersync_lobby_refusals_total counter");
        for reason in Refusal::ALL {
            let _ = writeln!(
                out,
                "peersync_lobby_refusals_total{{reason=\"{}\"}} {}",
                reason.label(),
                self.refusals(*reason)
            );
        }
        let _ = writeln!(
            out,
            "# HELP peersync_lobby_closes_total WebSockets closed, by reason."
        );
        let _ = writeln!(out, "# TYPE peersync_lobby_closes_total counter");
        for reason in Close::ALL {
            let _ = writeln!(
                out,
                "peersync_lobby_closes_total{{reason=\"{}\"}} {}",
                reason.label(),
                self.closes(*reason)
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_reason() {
        let metrics = Metrics::default();
        metrics.refused(Refusal::RoomFull);
        metrics.closed(Close::Shutdown);
        let text = metrics.render(1, 2, 3);
        assert!(text.contains("peersync_lobby_refusals_total{reason=\"room_full\"} 1"));
        assert!(text.contains("peersync_lobby_closes_total{reason=\"shutdown\"} 1"));
        assert!(text.contains("peersync_lobby_peers 2"));
        assert_eq!(Refusal::ALL.len(), 20);
        assert_eq!(Close::ALL.len(), 11);
        assert!(text.contains(r#"peersync_lobby_closes_total{reason="invalid_signal"} 0"#));
    }
}
