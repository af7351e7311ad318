//! Values sent as differences, the owner's side: which value each peer acknowledged (its
//! baseline), whether the peer still keeps it, and the difference from it.
//!
//! A receiver keeps the last [`BASELINES_KEPT`] values it received of each entity's component,
//! labelled with the tick of the message that carried them. So a baseline is safe while fewer
//! than that many messages carried the value since: counting what was sent, not what arrived,
//! errs on the safe side. A receiver that lacks a baseline anyway (it evicted it, or the entity
//! was despawned and spawned again there) skips the value and says so; the value then goes
//! whole, and acknowledgements of messages up to that one no longer make baselines of it (their
//! entry for it was a difference the receiver could not read).

use bevy::platform::collections::HashMap;
use bevy::prelude::*;

use super::super::codec::{BASELINES_KEPT, MAX_BASELINE_LEN};
use super::super::registry::ReplicationRegistry;
use super::super::wire::{KIND_REFUSED, Refused};
use super::mutations::ValueKey;
use super::{SendState, Tick};
use crate::error::InputError;
use crate::net::{KindQueues, reject_input};
use crate::peer::PeerId;

/// At most this many refused values wait for the next network tick; more are dropped (the
/// receiver refuses them again).
const MAX_REFUSALS: usize = 1 << 16;

/// A value a peer could not read as a difference.
#[derive(Debug, Clone, Copy)]
pub(super) struct Refusal {
    peer: PeerId,
    /// The tick of the message it could not read it in.
    tick: u32,
    component: u16,
    wire: u32,
}

/// Takes in what peers could not read (every frame, whether a network tick is due or not).
pub(super) fn take_refusals(world: &mut World) {
    let messages = world.resource_mut::<KindQueues>().take(KIND_REFUSED);
    for message in messages {
        let refused = match Refused::decode(&message.body) {
            Ok(refused) => refused,
            Err(error) => {
                reject_input(world, message.peer, InputError::Malformed(error));
                continue;
            }
        };
        let mut state = world.resource_mut::<SendState>();
        let room = MAX_REFUSALS.saturating_sub(state.refused.len());
        if refused.values.len() > room {
            tracing::debug!(
                "{} refused values from {} wait for the next ones",
                refused.values.len() - room,
                message.peer
            );
        }
        state.refused.extend(
            refused
                .values
                .iter()
                .take(room)
                .map(|(component, wire)| Refusal {
                    peer: message.peer,
                    tick: refused.tick,
                    component: *component,
                    wire: *wire,
                }),
        );
    }
}

impl Tick<'_> {
    /// Values peers could not read as differences go whole at this tick.
    pub(super) fn refused_baselines(&mut self) {
        if self.state.refused.is_empty() {
            return;
        }
        let by_wire: HashMap<u32, Entity> = self
            .ownership
            .owned_entities()
            .map(|(entity, owned)| (owned.wire, entity))
            .collect();
        for refusal in std::mem::take(&mut self.state.refused) {
            let (Some(stream), Some(entity)) = (
                self.state.peers.get_mut(&refusal.peer),
                by_wire.get(&refusal.wire),
            ) else {
                continue;
            };
            let key = (*entity, refusal.component);
            stream.baseline_missing(key, refusal.tick, self.tick);
        }
    }
}

/// The values a mutation message carried that become baselines when it is acknowledged: their
/// full encodings, back to back.
#[derive(Debug, Default)]
pub(super) struct Carried {
    /// Each value, which of its sends this was, and where its bytes end.
    ends: Vec<(ValueKey, u32, u32)>,
    bytes: Vec<u8>,
}

impl Carried {
    /// Notes a value the message carries (its `send`th), if it is small enough to be a
    /// baseline.
    pub(super) fn push(&mut self, key: ValueKey, send: u32, bytes: &[u8]) {
        if bytes.len() <= MAX_BASELINE_LEN {
            self.bytes.extend_from_slice(bytes);
            self.ends.push((key, send, self.bytes.len() as u32));
        }
    }

    fn iter(&self) -> impl Iterator<Item = (ValueKey, u32, &[u8])> {
        let mut start = 0;
        self.ends.iter().map(move |(key, send, end)| {
            let bytes = &self.bytes[start..*end as usize];
            start = *end as usize;
            (*key, *send, bytes)
        })
    }
}

/// Baselines up to this long are kept inside the table (a transform takes 13 bytes).
const INLINE: usize = 16;

/// What the owner knows of one value at one peer.
#[derive(Debug, Default)]
struct SentValue {
    /// How many messages carried it.
    sends: u32,
    /// Which of those the newest acknowledged one was (`sends` just after it).
    acked_send: u32,
    /// That message's tick, 0 for none.
    acked: u32,
    /// Acknowledgements of messages up to this tick make no baseline (the peer could not read
    /// the value in them).
    refused_through: u32,
    /// The value that message carried: inline, or in `long` past [`INLINE`] bytes.
    len: u16,
    inline: [u8; INLINE],
    long: Vec<u8>,
}

impl SentValue {
    fn baseline(&self) -> &[u8] {
        let len = usize::from(self.len);
        if len <= INLINE {
            &self.inline[..len]
        } else {
            &self.long
        }
    }

    fn set_baseline(&mut self, bytes: &[u8]) {
        self.len = bytes.len() as u16;
        if bytes.len() <= INLINE {
            self.inline[..bytes.len()].copy_from_slice(bytes);
        } else {
            self.long.clear();
            self.long.extend_from_slice(bytes);
        }
    }
}

/// One peer's baselines.
#[derive(Debug, Default)]
pub(super) struct SentBaselines {
    values: HashMap<ValueKey, SentValue>,
}

impl SentBaselines {
    /// Counts another message carrying `key` (one lookup for both): which send of it this is,
    /// and the baseline to send it as a difference from, with its tick, if the peer surely keeps
    /// one (fewer than it keeps were sent since). A value the budget then holds back was counted
    /// all the same, which only retires its baseline sooner.
    pub(super) fn next_send(&mut self, key: ValueKey) -> (u32, Option<(u32, &[u8])>) {
        let value = self.values.entry(key).or_default();
        let newer = value.sends.wrapping_sub(value.acked_send);
        value.sends = value.sends.wrapping_add(1);
        let usable = value.acked != 0 && (newer as usize) < BASELINES_KEPT;
        (value.sends, usable.then(|| (value.acked, value.baseline())))
    }

    /// The message of `tick` that carried `carried` arrived: its values are the newest baselines.
    pub(super) fn acknowledged(&mut self, tick: u32, carried: &Carried) {
        for (key, send, bytes) in carried.iter() {
            let Some(value) = self.values.get_mut(&key) else {
                continue;
            };
            if tick > value.acked && tick > value.refused_through {
                value.acked = tick;
                value.acked_send = send;
                value.set_baseline(bytes);
            }
        }
    }

    /// The peer could not read `key` in the message of `tick`: no baseline until it gets it
    /// whole.
    pub(super) fn refused(&mut self, key: ValueKey, tick: u32) {
        // Only values sent as differences: a peer cannot make this table grow by refusing others.
        if let Some(value) = self.values.get_mut(&key) {
            value.acked = 0;
            value.refused_through = value.refused_through.max(tick);
        }
    }

    /// Keeps only the values `keep` says.
    pub(super) fn retain(&mut self, mut keep: impl FnMut(&ValueKey) -> bool) {
        self.values.retain(|key, _| keep(key));
    }
}

/// How a value goes in a mutation message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Form {
    /// In a group of whole values: its component is not sent as differences (or they are off).
    Plain,
    /// Whole, in a group of differences: the peer may keep it as a baseline.
    Whole,
    /// As the difference from the value `age` ticks old, at `start..end` of the tick's buffer of
    /// differences.
    Delta { age: u32, start: u32, end: u32 },
}

/// How to send one value: whole, or as the difference from `baselines`' value of it (written to
/// `differences`), whichever the codec and the baseline allow; with which send of it this is.
pub(super) fn form_of(
    registry: &ReplicationRegistry,
    baselines: &mut SentBaselines,
    tick: u32,
    key: &ValueKey,
    bytes: &[u8],
    differences: &mut Vec<u8>,
) -> (Form, u32) {
    let Some(delta) = registry.get(key.1).and_then(|r| r.delta.as_deref()) else {
        return (Form::Plain, 0);
    };
    let (send, baseline) = baselines.next_send(*key);
    let Some((base_tick, baseline)) = baseline else {
        return (Form::Whole, send);
    };
    let start = differences.len();
    if bytes.len() > MAX_BASELINE_LEN || !delta.encode_delta(baseline, bytes, differences) {
        differences.truncate(start);
        return (Form::Whole, send);
    }
    let form = Form::Delta {
        age: tick.wrapping_sub(base_tick),
        start: start as u32,
        end: differences.len() as u32,
    };
    (form, send)
}

/// The age most differences of one component use: the one its group header names.
pub(super) fn common_age(forms: impl Iterator<Item = Form>) -> u32 {
    // Boyer–Moore majority vote: the majority if there is one, some age otherwise.
    let mut candidate = 0;
    let mut count = 0u32;
    for form in forms {
        if let Form::Delta { age, .. } = form {
            if count == 0 {
                candidate = age;
                count = 1;
            } else if age == candidate {
                count += 1;
            } else {
                count -= 1;
            }
        }
    }
    candidate
}

#[cfg(test)]
mod tests {
    use bevy::prelude::*;

    use super::*;

    const KEY: ValueKey = (Entity::PLACEHOLDER, 0);

    /// Sends `KEY` in a message that carries `bytes`.
    fn send(baselines: &mut SentBaselines, bytes: &[u8]) -> Carried {
        let (send, _) = baselines.next_send(KEY);
        let mut carried = Carried::default();
        carried.push(KEY, send, bytes);
        carried
    }

    /// The baseline the next send of `KEY` may use (and that send, counted).
    fn usable(baselines: &mut SentBaselines) -> Option<(u32, Vec<u8>)> {
        let (_, baseline) = baselines.next_send(KEY);
        baseline.map(|(tick, bytes)| (tick, bytes.to_vec()))
    }

    #[test]
    fn a_baseline_is_used_while_the_peer_surely_keeps_it() {
        let mut baselines = SentBaselines::default();
        let one = send(&mut baselines, b"one"); // send 1
        assert!(usable(&mut baselines).is_none(), "nothing acknowledged yet"); // send 2
        baselines.acknowledged(1, &one);
        assert_eq!(usable(&mut baselines), Some((1, b"one".to_vec()))); // send 3
        for _ in 3..BASELINES_KEPT {
            send(&mut baselines, b"later");
        }
        assert!(
            usable(&mut baselines).is_some(),
            "15 sends after the baseline's: one fewer than the peer keeps"
        );
        let hundred = send(&mut baselines, b"a hundred, longer than sixteen bytes");
        assert!(
            usable(&mut baselines).is_none(),
            "as many sends as the peer keeps may have pushed it out"
        );
        baselines.acknowledged(100, &hundred);
        assert_eq!(
            usable(&mut baselines),
            Some((100, b"a hundred, longer than sixteen bytes".to_vec()))
        );
        baselines.acknowledged(50, &one);
        assert_eq!(
            usable(&mut baselines).map(|(tick, _)| tick),
            Some(100),
            "a late acknowledgement of an older message changes nothing"
        );
    }

    #[test]
    fn a_refused_value_needs_a_newer_acknowledgement() {
        let mut baselines = SentBaselines::default();
        let four = send(&mut baselines, b"four");
        baselines.acknowledged(4, &four);
        let six = send(&mut baselines, b"a difference it could not read");
        baselines.refused(KEY, 6);
        assert!(usable(&mut baselines).is_none());
        baselines.acknowledged(6, &six);
        assert!(
            usable(&mut baselines).is_none(),
            "the message it could not read is no baseline"
        );
        let seven = send(&mut baselines, b"seven");
        baselines.acknowledged(7, &seven);
        assert_eq!(usable(&mut baselines), Some((7, b"seven".to_vec())));
    }

    #[test]
    fn the_common_age_is_the_majority() {
        let delta = |age| Form::Delta {
            age,
            start: 0,
            end: 0,
        };
        let forms = [delta(2), Form::Whole, delta(3), delta(2), delta(2)];
        assert_eq!(common_age(forms.into_iter()), 2);
        assert_eq!(common_age([Form::Whole].into_iter()), 0);
    }
}
