//! Changed values to one peer: packed into single packets, and sent again until acknowledged or
//! replaced by a newer value.

use std::time::Duration;

use bevy::platform::collections::{HashMap, HashSet};
use bevy::prelude::*;
use bytes::Bytes;

use super::super::ownership::Ownership;
use super::super::registry::ReplicationRegistry;
use super::super::wire::{GroupHeader, KIND_MUTATE, MutateHeader, entry_len, put_entry};
use super::interest::PeerView;
use super::net_form;
use crate::channel::Channel;
use crate::endpoint::Endpoint;
use crate::peer::PeerId;
use crate::session::Delivery;

/// A component value of an entity owned here, identified by entity and registration index.
pub(super) type ValueKey = (Entity, u16);

/// A value sent to a peer and not acknowledged yet.
#[derive(Debug, Clone, Copy)]
struct Unacked {
    /// The tick it last changed: any message of this tick or later carried it as it is.
    tick: u32,
    /// When it last went out (first sent, or resent).
    sent_at: Duration,
}

/// A mutation message in flight: the tick it carried and which values.
#[derive(Debug)]
struct InFlight {
    tick: u32,
    values: Vec<ValueKey>,
}

/// What one peer has been sent.
#[derive(Debug, Default)]
pub(super) struct PeerStream {
    /// Still to be sent every entity (it just connected).
    pub(super) needs_snapshot: bool,
    /// The tick of the snapshot it was sent: mutations need at least that.
    pub(super) snapshot_tick: u32,
    /// The newest value sent of each entity's component, until the peer acknowledges it.
    unacked: HashMap<ValueKey, Unacked>,
    /// Mutation messages not yet acknowledged or lost, by delivery token.
    in_flight: HashMap<u64, InFlight>,
    /// Ticks left in which a message with no values goes out when nothing changed: it tells
    /// an interpolating receiver that the values it has are still current, so it holds them
    /// instead of extrapolating past where they stopped. A few, since any of them may be lost.
    quiet_markers: u8,
}

/// How many value-less mutation messages follow the last one with values.
const QUIET_MARKERS: u8 = 3;

impl PeerStream {
    /// A peer that just connected: it gets a snapshot first.
    pub(super) fn new_peer() -> Self {
        Self {
            needs_snapshot: true,
            ..Default::default()
        }
    }

    /// The peer was sent a snapshot at `tick`: what was in flight before no longer matters.
    pub(super) fn snapshot_sent(tick: u32) -> Self {
        Self {
            snapshot_tick: tick,
            ..Default::default()
        }
    }

    /// An acknowledged value needs no resend; a lost one is due at once. Any message that went
    /// out since the value last changed carried it as it is, so the ack of an earlier resend
    /// counts as much as the latest one's (otherwise a value that stopped changing would be
    /// resent forever whenever acks take longer than the resend interval).
    pub(super) fn delivered(&mut self, token: u64, delivery: Delivery) {
        let Some(in_flight) = self.in_flight.remove(&token) else {
            return;
        };
        for key in in_flight.values {
            if let Some(unacked) = self.unacked.get_mut(&key)
                && unacked.tick <= in_flight.tick
            {
                match delivery {
                    Delivery::Delivered => {
                        self.unacked.remove(&key);
                    }
                    Delivery::Lost => unacked.sent_at = Duration::ZERO,
                }
            }
        }
    }

    /// The peer is no longer shown these entities: their values are owed no more.
    pub(super) fn forget_entities(&mut self, entities: &[Entity]) {
        self.unacked
            .retain(|(entity, _), _| !entities.contains(entity));
    }

    /// Values of entities that are no longer ours need no acknowledgement.
    pub(super) fn forget_unowned(&mut self, ownership: &Ownership) {
        self.unacked
            .retain(|(entity, _), _| ownership.is_owned(*entity));
    }
}

/// A value that changed this tick, encoded in the tick's value buffer.
#[derive(Debug, Clone)]
pub(super) struct ChangedValue {
    pub(super) component: u16,
    pub(super) entity: Entity,
    pub(super) wire: u32,
    /// Where its bytes are in the buffer.
    pub(super) range: std::ops::Range<usize>,
}

/// One value to write into a mutation message.
#[derive(Debug, Clone, Copy)]
struct Entry<'a> {
    component: u16,
    wire: u32,
    entity: Entity,
    bytes: &'a [u8],
}

/// What sending one peer its mutations needs from the tick.
pub(super) struct MutationTick<'a> {
    pub(super) world: &'a World,
    pub(super) registry: &'a ReplicationRegistry,
    pub(super) ownership: &'a Ownership,
    pub(super) endpoint: &'a mut Endpoint,
    pub(super) now: Duration,
    pub(super) tick: u32,
    pub(super) tick_period: Duration,
    /// Values changed this tick, sorted by component.
    pub(super) changed: &'a [ChangedValue],
    pub(super) changed_keys: &'a HashSet<ValueKey>,
    pub(super) values: &'a [u8],
    pub(super) next_token: &'a mut u64,
}

impl MutationTick<'_> {
    /// Sends `peer` what changed, plus the values it has not acknowledged for half a round trip
    /// (until acknowledged or superseded). Resending before an ack could arrive costs a little
    /// bandwidth for values that stopped changing, and buys convergence within a few round
    /// trips whatever the loss. Only values of entities `view` shows go out.
    pub(super) fn send_to(&mut self, peer: PeerId, stream: &mut PeerStream, view: &PeerView) {
        let max = self.endpoint.config.max_unreliable_message();
        let resends = self.resends(peer, stream, max);
        let mut entries: Vec<Entry<'_>> = self
            .changed
            .iter()
            .map(|value| Entry {
                component: value.component,
                wire: value.wire,
                entity: value.entity,
                bytes: &self.values[value.range.clone()],
            })
            .collect();
        entries.extend(resends.iter().map(|resend| Entry {
            component: resend.component,
            wire: resend.wire,
            entity: resend.entity,
            bytes: &resend.bytes,
        }));
        entries.retain(|entry| view.shows(entry.wire));
        if entries.is_empty() {
            if stream.quiet_markers > 0 {
                stream.quiet_markers -= 1;
                self.send_quiet_marker(peer, stream);
            }
            return;
        }
        stream.quiet_markers = QUIET_MARKERS;
        entries.sort_by_key(|entry| entry.component);
        for batch in pack(&entries, max) {
            let needs = batch
                .iter()
                .filter_map(|entry| {
                    let owned = self.ownership.owned(entry.entity)?;
                    Some(owned.struct_tick.max(view.needs(entry.wire)))
                })
                .max()
                .unwrap_or(0)
                .max(stream.snapshot_tick);
            let mut message = Vec::with_capacity(max);
            self.header(needs).encode(&mut message);
            write_groups(&mut message, batch);
            *self.next_token += 1;
            let token = *self.next_token;
            let sent = self.endpoint.send(
                peer,
                Channel::Unreliable,
                KIND_MUTATE,
                Bytes::from(message),
                Some(token),
            );
            if sent.is_ok() {
                let values: Vec<ValueKey> = batch
                    .iter()
                    .map(|entry| (entry.entity, entry.component))
                    .collect();
                for key in &values {
                    match stream.unacked.get_mut(key) {
                        // A resend: the value is the one that changed at its tick.
                        Some(unacked) if !self.changed_keys.contains(key) => {
                            unacked.sent_at = self.now;
                        }
                        _ => {
                            stream.unacked.insert(
                                *key,
                                Unacked {
                                    tick: self.tick,
                                    sent_at: self.now,
                                },
                            );
                        }
                    }
                }
                stream.in_flight.insert(
                    token,
                    InFlight {
                        tick: self.tick,
                        values,
                    },
                );
            }
        }
    }

    fn header(&self, needs: u32) -> MutateHeader {
        MutateHeader {
            tick: self.tick,
            needs,
            time: self.now.as_micros() as u64,
        }
    }

    /// A mutation message with no values: nothing changed up to now. Not resent if lost.
    fn send_quiet_marker(&mut self, peer: PeerId, stream: &PeerStream) {
        let mut message = Vec::with_capacity(MutateHeader::MAX_LEN);
        self.header(stream.snapshot_tick).encode(&mut message);
        let _ = self.endpoint.send(
            peer,
            Channel::Unreliable,
            KIND_MUTATE,
            Bytes::from(message),
            None,
        );
    }

    /// Values `peer` has not acknowledged within the resend interval, encoded as they are now.
    fn resends(&self, peer: PeerId, stream: &mut PeerStream, max: usize) -> Vec<Resend> {
        // An ack comes back a round trip plus the time the peer holds it for its next frame
        // (the round-trip figure leaves that out).
        let ack_time = self
            .endpoint
            .stats(peer)
            .and_then(|stats| Some(stats.rtt? + stats.ack_delay))
            .unwrap_or(Duration::from_millis(100));
        let interval = (ack_time / 2)
            .max(self.tick_period * 2)
            .max(Duration::from_millis(20));
        let mut resends = Vec::new();
        let mut stale = Vec::new();
        for (key, unacked) in &stream.unacked {
            if self.changed_keys.contains(key)
                || self.now.saturating_sub(unacked.sent_at) < interval
            {
                continue;
            }
            let (entity, component) = *key;
            let (Some(owned), Some(registration)) =
                (self.ownership.owned(entity), self.registry.get(component))
            else {
                stale.push(*key);
                continue;
            };
            let mut bytes = Vec::new();
            let mut to_net = |e| net_form(self.world, e);
            let encoded = registration
                .erased
                .encode(self.world, entity, &mut to_net, &mut bytes);
            if encoded && bytes.len() + 16 <= max {
                resends.push(Resend {
                    component,
                    wire: owned.wire,
                    entity,
                    bytes,
                });
            } else {
                stale.push(*key);
            }
        }
        for key in stale {
            stream.unacked.remove(&key);
        }
        resends
    }
}

/// A value sent again, encoded afresh.
struct Resend {
    component: u16,
    wire: u32,
    entity: Entity,
    bytes: Vec<u8>,
}

/// Splits entries (sorted by component) into batches whose message fits `max` bytes.
fn pack<'e, 'b>(entries: &'e [Entry<'b>], max: usize) -> Vec<&'e [Entry<'b>]> {
    let mut batches = Vec::new();
    let mut start = 0;
    let mut size = MutateHeader::MAX_LEN;
    let mut group: Option<u16> = None;
    for (index, entry) in entries.iter().enumerate() {
        let group_header = if group == Some(entry.component) {
            0
        } else {
            GroupHeader::MAX_LEN
        };
        let len = entry_len(entry.wire, entry.bytes);
        if index > start && size + group_header + len > max {
            batches.push(&entries[start..index]);
            start = index;
            size = MutateHeader::MAX_LEN + GroupHeader::MAX_LEN + len;
        } else {
            size += group_header + len;
        }
        group = Some(entry.component);
    }
    if start < entries.len() {
        batches.push(&entries[start..]);
    }
    batches
}

/// Writes entries (sorted by component) as groups.
fn write_groups(out: &mut Vec<u8>, entries: &[Entry<'_>]) {
    for group in entries.chunk_by(|a, b| a.component == b.component) {
        GroupHeader {
            component: group[0].component,
            count: group.len() as u32,
        }
        .encode(out);
        for entry in group {
            put_entry(out, entry.wire, entry.bytes);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(component: u16, bytes: &[u8]) -> Entry<'_> {
        Entry {
            component,
            wire: 1,
            entity: Entity::PLACEHOLDER,
            bytes,
        }
    }

    #[test]
    fn batches_fit_the_limit_and_keep_every_entry() {
        let value = [7u8; 100];
        let entries: Vec<Entry<'_>> = (0..40).map(|i| entry(i / 10, &value)).collect();
        let batches = pack(&entries, 1146);
        assert_eq!(batches.iter().map(|b| b.len()).sum::<usize>(), 40);
        for batch in &batches {
            let mut out = Vec::new();
            MutateHeader {
                tick: u32::MAX,
                needs: u32::MAX,
                time: u64::MAX,
            }
            .encode(&mut out);
            write_groups(&mut out, batch);
            assert!(
                out.len() <= 1146,
                "a batch of {} entries is {} bytes",
                batch.len(),
                out.len()
            );
        }
        assert!(
            batches.len() <= 4,
            "about eleven 101-byte entries per packet"
        );
    }

    #[test]
    fn the_ack_of_an_earlier_resend_settles_a_value_that_stopped_changing() {
        let key = (Entity::PLACEHOLDER, 3);
        let mut stream = PeerStream::default();
        // Changed at tick 5 and sent; resent at ticks 7 and 9 before any ack came back.
        stream.unacked.insert(
            key,
            Unacked {
                tick: 5,
                sent_at: Duration::from_millis(90),
            },
        );
        for (token, tick) in [(1, 5), (2, 7), (3, 9)] {
            stream.in_flight.insert(
                token,
                InFlight {
                    tick,
                    values: vec![key],
                },
            );
        }
        stream.delivered(1, Delivery::Delivered);
        assert!(
            stream.unacked.is_empty(),
            "the first ack carried the value as it still is: no more resends"
        );
        // A value that changed after the acked message is still owed.
        stream.unacked.insert(
            key,
            Unacked {
                tick: 10,
                sent_at: Duration::ZERO,
            },
        );
        stream.delivered(3, Delivery::Delivered);
        assert!(
            stream.unacked.contains_key(&key),
            "tick 9 did not carry the tick-10 value"
        );
    }
}
