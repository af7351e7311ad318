//! What one peer has been sent of the mutations: values owed until acknowledged, messages in
//! flight, the values it acknowledged (baselines for differences), its budget.

use std::time::Duration;

use bevy::platform::collections::HashMap;
use bevy::prelude::Entity;

use super::super::PeerReplicationStats;
use super::super::ownership::Ownership;
use super::baselines::{Carried, SentBaselines};
use super::budget::{TokenBucket, Waiting};
use super::mutations::ValueKey;
use crate::session::Delivery;

/// A value the peer may not have: sent and not acknowledged yet, or held back by the budget.
#[derive(Debug, Clone, Copy)]
pub(super) struct Owed {
    /// The tick it last changed: any message of this tick or later carried it as it is.
    pub(super) tick: u32,
    /// When it last went out (first sent, or resent); `None` when it is due at once: it has not
    /// gone out since it changed (the budget held it back), or the message that carried it was
    /// lost.
    pub(super) sent_at: Option<Duration>,
    /// What it accumulated while the budget held it back.
    pub(super) waiting: Option<Waiting>,
}

/// A mutation message in flight: the tick it carried and which values.
#[derive(Debug, Default)]
pub(super) struct InFlight {
    pub(super) tick: u32,
    pub(super) values: Vec<ValueKey>,
    /// The values it carried that may become baselines when it is acknowledged.
    pub(super) carried: Carried,
}

/// What one peer has been sent.
#[derive(Debug, Default)]
pub(super) struct PeerStream {
    /// Still to be sent every entity (it just connected).
    pub(super) needs_snapshot: bool,
    /// The tick of the snapshot it was sent: mutations need at least that.
    pub(super) snapshot_tick: u32,
    /// The newest value of each entity's component, from when it changes until the peer
    /// acknowledges it.
    pub(super) owed: HashMap<ValueKey, Owed>,
    /// Mutation messages not yet acknowledged or lost, by delivery token.
    pub(super) in_flight: HashMap<u64, InFlight>,
    /// Values the peer acknowledged, which later ones may be sent as differences from.
    pub(super) baselines: SentBaselines,
    /// Ticks left in which a message with no values goes out when nothing changed: it tells
    /// an interpolating receiver that the values it has are still current, so it holds them
    /// instead of extrapolating past where they stopped. A few, since any of them may be lost.
    pub(super) quiet_markers: u8,
    /// The bytes replication may send this peer now.
    pub(super) budget: TokenBucket,
    /// What the budget held back so far.
    pub(super) stats: PeerReplicationStats,
}

/// How many value-less mutation messages follow the last one with values.
pub(super) const QUIET_MARKERS: u8 = 3;

impl PeerStream {
    /// A peer that just connected: it gets a snapshot first.
    pub(super) fn new_peer() -> Self {
        Self {
            needs_snapshot: true,
            ..Default::default()
        }
    }

    /// The peer was sent a snapshot at `tick`: what was in flight or waiting before no longer
    /// matters. Its budget (charged with the snapshot) and figures carry on.
    pub(super) fn snapshot_sent(&mut self, tick: u32) {
        *self = Self {
            snapshot_tick: tick,
            budget: self.budget,
            stats: PeerReplicationStats {
                waiting: 0,
                ..self.stats
            },
            ..Default::default()
        };
    }

    /// An acknowledged value needs no resend; a lost one is due at once. Any message that went
    /// out since the value last changed carried it as it is, so the ack of an earlier resend
    /// counts as much as the latest one's (otherwise a value that stopped changing would be
    /// resent forever whenever acks take longer than the resend interval).
    pub(super) fn delivered(&mut self, token: u64, delivery: Delivery) {
        let Some(in_flight) = self.in_flight.remove(&token) else {
            return;
        };
        if delivery == Delivery::Delivered {
            self.baselines
                .acknowledged(in_flight.tick, &in_flight.carried);
        }
        for key in in_flight.values {
            if let Some(owed) = self.owed.get_mut(&key)
                && owed.tick <= in_flight.tick
            {
                match delivery {
                    Delivery::Delivered => {
                        self.owed.remove(&key);
                    }
                    Delivery::Lost => owed.sent_at = None,
                }
            }
        }
    }

    /// The peer is no longer shown these entities: their values (sent or waiting for budget)
    /// are owed no more.
    pub(super) fn forget_entities(&mut self, entities: &[Entity]) {
        self.owed
            .retain(|(entity, _), _| !entities.contains(entity));
        self.baselines
            .retain(|(entity, _)| !entities.contains(entity));
    }

    /// Values of entities that are no longer ours need no acknowledgement.
    pub(super) fn forget_unowned(&mut self, ownership: &Ownership) {
        self.owed
            .retain(|(entity, _), _| ownership.is_owned(*entity));
        self.baselines
            .retain(|(entity, _)| ownership.is_owned(*entity));
    }

    /// The peer could not read `key` in the message of `refused_at` (it no longer had the
    /// baseline): the value goes whole, at once (this is `tick`).
    pub(super) fn baseline_missing(&mut self, key: ValueKey, refused_at: u32, tick: u32) {
        // Every message sent before this tick may hold a difference from the missing value: none
        // of their acknowledgements makes a baseline; this tick's, whole, does.
        self.baselines
            .refused(key, refused_at.max(tick.saturating_sub(1)));
        self.stats.refused_differences += 1;
        let owed = self.owe(key, tick);
        owed.tick = tick;
        owed.sent_at = None;
    }

    /// The budget held `key` back at `tick` with `score`; `changed` if its value changed this
    /// tick (so it has not gone out as it is now).
    pub(super) fn hold_back(&mut self, key: ValueKey, score: f32, tick: u32, changed: bool) {
        let owed = self.owe(key, tick);
        if changed {
            owed.tick = tick;
            owed.sent_at = None;
        }
        owed.waiting = Some(Waiting {
            priority: score,
            since: owed.waiting.map_or(tick, |waiting| waiting.since),
        });
    }

    /// What is owed of `key`, a value of `tick` not sent yet if nothing was.
    fn owe(&mut self, key: ValueKey, tick: u32) -> &mut Owed {
        self.owed.entry(key).or_insert(Owed {
            tick,
            sent_at: None,
            waiting: None,
        })
    }

    /// `key` went out at `tick`, at `now`; `changed` if its value changed this tick.
    pub(super) fn sent(&mut self, key: ValueKey, tick: u32, now: Duration, changed: bool) {
        let owed = self.owe(key, tick);
        if changed {
            owed.tick = tick;
        }
        owed.sent_at = Some(now);
        if let Some(waiting) = owed.waiting.take() {
            let waited = tick.saturating_sub(waiting.since);
            self.stats.longest_wait = self.stats.longest_wait.max(waited);
        }
    }
}

#[cfg(test)]
mod tests {
    use bevy::prelude::*;

    use super::*;

    #[test]
    fn the_ack_of_an_earlier_resend_settles_a_value_that_stopped_changing() {
        let key = (Entity::PLACEHOLDER, 3);
        let mut stream = PeerStream::default();
        // Changed at tick 5 and sent; resent at ticks 7 and 9 before any ack came back.
        stream.owed.insert(
            key,
            Owed {
                tick: 5,
                sent_at: Some(Duration::from_millis(90)),
                waiting: None,
            },
        );
        for (token, tick) in [(1, 5), (2, 7), (3, 9)] {
            stream.in_flight.insert(
                token,
                InFlight {
                    tick,
                    values: vec![key],
                    ..Default::default()
                },
            );
        }
        stream.delivered(1, Delivery::Delivered);
        assert!(
            stream.owed.is_empty(),
            "the first ack carried the value as it still is: no more resends"
        );
        // A value that changed after the acked message is still owed.
        stream.owed.insert(
            key,
            Owed {
                tick: 10,
                sent_at: None,
                waiting: None,
            },
        );
        stream.delivered(3, Delivery::Delivered);
        assert!(
            stream.owed.contains_key(&key),
            "tick 9 did not carry the tick-10 value"
        );
    }

    #[test]
    fn after_a_refusal_only_messages_sent_since_it_was_heard_make_baselines() {
        let key = (Entity::PLACEHOLDER, 0);
        let mut stream = PeerStream::default();
        let send = |stream: &mut PeerStream, bytes: &[u8]| {
            let (send, _) = stream.baselines.next_send(key);
            let mut carried = Carried::default();
            carried.push(key, send, bytes);
            carried
        };
        send(&mut stream, b"tick 5");
        let before_heard = send(&mut stream, b"tick 9, a difference from tick 5");
        // The peer could not read the value in the message of tick 5; heard at tick 10.
        stream.baseline_missing(key, 5, 10);
        assert!(
            stream
                .owed
                .get(&key)
                .is_some_and(|owed| owed.sent_at.is_none()),
            "the value is due whole at once"
        );
        stream.baselines.acknowledged(9, &before_heard);
        assert!(
            stream.baselines.next_send(key).1.is_none(),
            "tick 9's message may hold a difference the peer could not read: no baseline"
        );
        let whole = send(&mut stream, b"tick 10, whole");
        stream.baselines.acknowledged(10, &whole);
        assert_eq!(
            stream.baselines.next_send(key).1.map(|(tick, _)| tick),
            Some(10),
            "the whole value sent once the refusal was heard is a baseline"
        );
    }
}
