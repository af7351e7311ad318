//! The replication messages as bytes: public so that tests and fuzzers can build and read them.
//!
//! Each owner sends two streams to every peer, numbered by its own network tick:
//!
//! ```text
//! update   (reliable, kind 1) := tick:varint op*            all structural changes of one tick
//! op       := 0x01 wire:varint net_id:u64 flags:u8 n:varint (component:varint len:varint bytes)^n   spawn
//!           | 0x02 wire:varint n:varint (component:varint len:varint bytes)^n                       insert
//!           | 0x03 wire:varint n:varint component:varint^n                                          remove
//!           | 0x04 wire:varint                                                                      despawn
//!           | 0x05 wire:varint to:u128                                                              hand over
//! mutate   (unreliable, kind 2) := tick:varint needs:varint group*
//! group    := component:varint n:varint (wire:varint value)^n
//! ```
//!
//! `wire` is the sender's own short number for an entity it owns; `net_id` names the entity in
//! the whole room (entity references inside components travel as net ids). A mutation message
//! `needs` the sender's update of that tick to have been applied first (the spawn of the
//! entities it mutates). Mutation values carry no length: their codec reads exactly what it
//! wrote, which keeps a moving entity at 15 bytes with the transform codec.

use crate::PeerId;
use crate::wire::{Reader, WireError, put_varint};

/// Message kind of update messages (reliable channel).
pub const KIND_UPDATE: u16 = 1;
/// Message kind of mutation messages (unreliable channel).
pub const KIND_MUTATE: u16 = 2;

const OP_SPAWN: u8 = 0x01;
const OP_INSERT: u8 = 0x02;
const OP_REMOVE: u8 = 0x03;
const OP_DESPAWN: u8 = 0x04;
const OP_HAND_OVER: u8 = 0x05;

/// Spawn flag: the entity belongs to whoever is host.
pub const FLAG_HOST_OWNED: u8 = 0x01;
/// Spawn flag: when its owner leaves, the host takes it over instead of despawning it.
pub const FLAG_HAND_TO_HOST: u8 = 0x02;
const KNOWN_FLAGS: u8 = FLAG_HOST_OWNED | FLAG_HAND_TO_HOST;

/// Most operations or components one message may list: bounds what a decoder allocates.
const MAX_COUNT: u64 = 1 << 20;

/// One structural change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpdateOp<'a> {
    /// The sender owns this entity (new, or taken over) with these components.
    Spawn {
        /// The sender's number for it.
        wire: u32,
        /// Its room-wide id.
        net_id: u64,
        /// `FLAG_*` bits.
        flags: u8,
        /// Its components: registration index and encoded value.
        components: Vec<(u16, &'a [u8])>,
    },
    /// Components added to an entity the sender owns.
    Insert {
        /// The sender's number for it.
        wire: u32,
        /// Registration index and encoded value.
        components: Vec<(u16, &'a [u8])>,
    },
    /// Components removed.
    Remove {
        /// The sender's number for it.
        wire: u32,
        /// Registration indices.
        components: Vec<u16>,
    },
    /// The entity is gone.
    Despawn {
        /// The sender's number for it.
        wire: u32,
    },
    /// The sender gives the entity to `to`, which announces itself with a spawn of the same
    /// net id.
    HandOver {
        /// The sender's number for it.
        wire: u32,
        /// The new owner.
        to: PeerId,
    },
}

/// Everything structural an owner did in one network tick.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpdateMessage<'a> {
    /// The owner's network tick.
    pub tick: u32,
    /// In the order they happened.
    pub ops: Vec<UpdateOp<'a>>,
}

fn put_components(out: &mut Vec<u8>, components: &[(u16, &[u8])]) {
    put_varint(out, components.len() as u64);
    for (component, bytes) in components {
        put_varint(out, u64::from(*component));
        put_varint(out, bytes.len() as u64);
        out.extend_from_slice(bytes);
    }
}

impl UpdateMessage<'_> {
    /// Appends the encoded message to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        put_varint(out, u64::from(self.tick));
        for op in &self.ops {
            match op {
                UpdateOp::Spawn {
                    wire,
                    net_id,
                    flags,
                    components,
                } => {
                    out.push(OP_SPAWN);
                    put_varint(out, u64::from(*wire));
                    out.extend_from_slice(&net_id.to_le_bytes());
                    out.push(*flags);
                    put_components(out, components);
                }
                UpdateOp::Insert { wire, components } => {
                    out.push(OP_INSERT);
                    put_varint(out, u64::from(*wire));
                    put_components(out, components);
                }
                UpdateOp::Remove { wire, components } => {
                    out.push(OP_REMOVE);
                    put_varint(out, u64::from(*wire));
                    put_varint(out, components.len() as u64);
                    for component in components {
                        put_varint(out, u64::from(*component));
                    }
                }
                UpdateOp::Despawn { wire } => {
                    out.push(OP_DESPAWN);
                    put_varint(out, u64::from(*wire));
                }
                UpdateOp::HandOver { wire, to } => {
                    out.push(OP_HAND_OVER);
                    put_varint(out, u64::from(*wire));
                    out.extend_from_slice(&to.0.to_le_bytes());
                }
            }
        }
    }
}

fn read_u32(reader: &mut Reader<'_>, what: &'static str) -> Result<u32, WireError> {
    Ok(reader.varint_max(u64::from(u32::MAX), what)? as u32)
}

fn read_component(reader: &mut Reader<'_>) -> Result<u16, WireError> {
    Ok(reader.varint_max(u64::from(u16::MAX), "component index")? as u16)
}

fn read_components<'a>(reader: &mut Reader<'a>) -> Result<Vec<(u16, &'a [u8])>, WireError> {
    let count = reader.varint_max(MAX_COUNT, "component count")?;
    // Every entry takes at least two bytes: the count cannot claim more than the input holds.
    let mut components = Vec::with_capacity((count as usize).min(reader.remaining() / 2));
    for _ in 0..count {
        let component = read_component(reader)?;
        let len = reader.varint_max(reader.remaining() as u64, "component length")?;
        components.push((component, reader.bytes(len as usize)?));
    }
    Ok(components)
}

/// Reads an update message. Any malformation fails the whole message: updates are applied
/// all or nothing.
pub fn decode_update(bytes: &[u8]) -> Result<UpdateMessage<'_>, WireError> {
    let mut reader = Reader::new(bytes);
    let tick = read_u32(&mut reader, "tick")?;
    let mut ops = Vec::new();
    while !reader.is_empty() {
        let op = match reader.u8()? {
            OP_SPAWN => {
                let wire = read_u32(&mut reader, "entity")?;
                let net_id = reader.u64()?;
                let flags = reader.u8()?;
                if flags & !KNOWN_FLAGS != 0 {
                    return Err(WireError::OutOfRange("spawn flags"));
                }
                UpdateOp::Spawn {
                    wire,
                    net_id,
                    flags,
                    components: read_components(&mut reader)?,
                }
            }
            OP_INSERT => UpdateOp::Insert {
                wire: read_u32(&mut reader, "entity")?,
                components: read_components(&mut reader)?,
            },
            OP_REMOVE => {
                let wire = read_u32(&mut reader, "entity")?;
                let count = reader.varint_max(MAX_COUNT, "component count")?;
                let mut components = Vec::with_capacity((count as usize).min(reader.remaining()));
                for _ in 0..count {
                    components.push(read_component(&mut reader)?);
                }
                UpdateOp::Remove { wire, components }
            }
            OP_DESPAWN => UpdateOp::Despawn {
                wire: read_u32(&mut reader, "entity")?,
            },
            OP_HAND_OVER => {
                let wire = read_u32(&mut reader, "entity")?;
                let to = u128::from_le_bytes(reader.array()?);
                UpdateOp::HandOver {
                    wire,
                    to: PeerId(to),
                }
            }
            _ => return Err(WireError::OutOfRange("update operation")),
        };
        ops.push(op);
    }
    Ok(UpdateMessage { tick, ops })
}

/// The fixed part of a mutation message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MutateHeader {
    /// The owner's network tick the values are from.
    pub tick: u32,
    /// The owner's update tick that must be applied before these values.
    pub needs: u32,
}

impl MutateHeader {
    /// Appends the header.
    pub fn encode(&self, out: &mut Vec<u8>) {
        put_varint(out, u64::from(self.tick));
        put_varint(out, u64::from(self.needs));
    }
}

/// Reads a mutation message's header; the groups follow in `reader`.
pub(crate) fn decode_mutate_header(reader: &mut Reader<'_>) -> Result<MutateHeader, WireError> {
    Ok(MutateHeader {
        tick: read_u32(reader, "tick")?,
        needs: read_u32(reader, "update tick")?,
    })
}

/// Starts a group of values of one component: call with the count, then append
/// `wire` + value for each.
pub fn put_group_header(out: &mut Vec<u8>, component: u16, count: u32) {
    put_varint(out, u64::from(component));
    put_varint(out, u64::from(count));
}

/// Reads a group header.
pub(crate) fn read_group_header(reader: &mut Reader<'_>) -> Result<(u16, u32), WireError> {
    Ok((read_component(reader)?, read_u32(reader, "group size")?))
}

/// Reads an entity number inside a group.
pub(crate) fn read_wire(reader: &mut Reader<'_>) -> Result<u32, WireError> {
    read_u32(reader, "entity")
}

/// Checks a mutation message's framing (header, group headers, entity numbers) without the
/// component codecs: for fuzzing the part that runs before any codec.
pub fn decode_mutate_header_only(bytes: &[u8]) -> Result<MutateHeader, WireError> {
    decode_mutate_header(&mut Reader::new(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> UpdateMessage<'static> {
        UpdateMessage {
            tick: 77,
            ops: vec![
                UpdateOp::Spawn {
                    wire: 1,
                    net_id: 0xdead_beef_0000_0001,
                    flags: FLAG_HOST_OWNED,
                    components: vec![(0, b"abc"), (3, b"")],
                },
                UpdateOp::Insert {
                    wire: 300,
                    components: vec![(2, b"x")],
                },
                UpdateOp::Remove {
                    wire: 1,
                    components: vec![0, 3],
                },
                UpdateOp::Despawn { wire: 9 },
                UpdateOp::HandOver {
                    wire: 1,
                    to: PeerId(u128::MAX - 5),
                },
            ],
        }
    }

    #[test]
    fn updates_round_trip() {
        let mut bytes = Vec::new();
        sample().encode(&mut bytes);
        assert_eq!(decode_update(&bytes), Ok(sample()));
    }

    #[test]
    fn a_truncated_update_fails_whole() {
        let mut bytes = Vec::new();
        sample().encode(&mut bytes);
        for cut in 1..bytes.len() {
            if let Ok(message) = decode_update(&bytes[..cut]) {
                // A cut between two operations is a valid, shorter message.
                assert!(message.ops.len() < sample().ops.len());
            }
        }
    }

    fn op() -> impl Strategy<Value = (u8, u32, u64, Vec<(u16, Vec<u8>)>)> {
        (
            1u8..=5,
            any::<u32>(),
            any::<u64>(),
            proptest::collection::vec(
                (any::<u16>(), proptest::collection::vec(any::<u8>(), 0..20)),
                0..4,
            ),
        )
    }

    proptest! {
        #[test]
        fn any_update_round_trips(tick: u32, ops in proptest::collection::vec(op(), 0..10)) {
            let ops: Vec<UpdateOp<'_>> = ops
                .iter()
                .map(|(kind, wire, id, components)| {
                    let components: Vec<(u16, &[u8])> = components.iter().map(|(c, b)| (*c, b.as_slice())).collect();
                    match kind {
                        1 => UpdateOp::Spawn { wire: *wire, net_id: *id, flags: (*id as u8) & KNOWN_FLAGS, components },
                        2 => UpdateOp::Insert { wire: *wire, components },
                        3 => UpdateOp::Remove { wire: *wire, components: components.iter().map(|(c, _)| *c).collect() },
                        4 => UpdateOp::Despawn { wire: *wire },
                        _ => UpdateOp::HandOver { wire: *wire, to: PeerId(u128::from(*id) << 3) },
                    }
                })
                .collect();
            let message = UpdateMessage { tick, ops };
            let mut bytes = Vec::new();
            message.encode(&mut bytes);
            prop_assert_eq!(decode_update(&bytes), Ok(message));
        }

        #[test]
        fn any_bytes_decode_or_fail(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = decode_update(&bytes);
            let _ = decode_mutate_header_only(&bytes);
        }
    }
}
