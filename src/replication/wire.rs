//! The replication messages as bytes.
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
//! mutate   (unreliable, kind 2) := tick:varint needs:varint time:varint group*
//! group    := component:varint n:varint (wire:varint value)^n
//! ```
//!
//! `wire` is the sender's own short number for an entity it owns; `net_id` names the entity in
//! the whole room (entity references inside components travel as net ids). A mutation message
//! `needs` the sender's update of that tick to have been applied first (the spawn of the
//! entities it mutates). `time` is the sender's clock in µs when it collected the values (its
//! `Time<Real>` elapsed, the clock its session's time frames carry), so a receiver that
//! interpolates knows when each value was true (see [`interpolation`](super::interpolation)); a
//! mutation message with no group says that nothing else changed up to that time. Mutation values carry no length: their codec reads exactly what it
//! wrote, which keeps a moving entity at 15 bytes with the transform codec.

use bytes::Bytes;

use crate::peer::PeerId;
use crate::wire::{Reader, WireError, put_varint, varint_len};

/// Message kind of update messages (reliable channel).
pub(crate) const KIND_UPDATE: u16 = 1;
/// Message kind of mutation messages (unreliable channel).
pub(crate) const KIND_MUTATE: u16 = 2;

const OP_SPAWN: u8 = 0x01;
const OP_INSERT: u8 = 0x02;
const OP_REMOVE: u8 = 0x03;
const OP_DESPAWN: u8 = 0x04;
const OP_HAND_OVER: u8 = 0x05;

const FLAG_HOST_OWNED: u8 = 0x01;
const FLAG_HAND_TO_HOST: u8 = 0x02;

/// Most operations or components one message may list: bounds what a decoder allocates.
const MAX_COUNT: u64 = 1 << 20;

/// How an entity behaves when owners come and go, as announced with its spawn.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub(crate) struct SpawnFlags {
    /// A world entity: it belongs to whoever is host ([`HostOwned`](super::HostOwned)).
    pub(crate) host_owned: bool,
    /// When its owner leaves, the host takes it over
    /// ([`HandToHostOnLeave`](super::HandToHostOnLeave)).
    pub(crate) hand_to_host: bool,
}

impl SpawnFlags {
    /// Whether the host takes the entity when its owner is gone.
    pub(crate) fn follows_host(self) -> bool {
        self.host_owned || self.hand_to_host
    }

    fn to_byte(self) -> u8 {
        (if self.host_owned { FLAG_HOST_OWNED } else { 0 })
            | if self.hand_to_host {
                FLAG_HAND_TO_HOST
            } else {
                0
            }
    }

    fn from_byte(byte: u8) -> Result<Self, WireError> {
        if byte & !(FLAG_HOST_OWNED | FLAG_HAND_TO_HOST) != 0 {
            return Err(WireError::OutOfRange("spawn flags"));
        }
        Ok(Self {
            host_owned: byte & FLAG_HOST_OWNED != 0,
            hand_to_host: byte & FLAG_HAND_TO_HOST != 0,
        })
    }
}

/// One encoded component value: its registration index and its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ComponentValue {
    pub(crate) component: u16,
    pub(crate) bytes: Bytes,
}

/// An entity as its owner announces it: new, taken over, or in a snapshot for a newcomer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Spawn {
    /// The sender's number for it.
    pub(crate) wire: u32,
    /// Its room-wide id.
    pub(crate) net_id: u64,
    pub(crate) flags: SpawnFlags,
    /// Every replicated component it has: a spawn is the whole state.
    pub(crate) components: Vec<ComponentValue>,
}

/// One structural change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum UpdateOp {
    /// The sender owns this entity (new, or taken over) with these components.
    Spawn(Spawn),
    /// Components added to an entity the sender owns.
    Insert {
        wire: u32,
        components: Vec<ComponentValue>,
    },
    /// Components removed (registration indices).
    Remove { wire: u32, components: Vec<u16> },
    /// The entity is gone.
    Despawn { wire: u32 },
    /// The sender gives the entity to `to`, which announces itself with a spawn of the same
    /// net id.
    HandOver { wire: u32, to: PeerId },
}

impl UpdateOp {
    /// About how many bytes the operation takes encoded; for splitting big ticks.
    pub(crate) fn size_hint(&self) -> usize {
        let values = |components: &[ComponentValue]| {
            components
                .iter()
                .map(|value| value.bytes.len() + 6)
                .sum::<usize>()
        };
        match self {
            UpdateOp::Spawn(spawn) => 24 + values(&spawn.components),
            UpdateOp::Insert { components, .. } => 12 + values(components),
            UpdateOp::Remove { components, .. } => 8 + 3 * components.len(),
            UpdateOp::Despawn { .. } => 6,
            UpdateOp::HandOver { .. } => 22,
        }
    }

    fn encode(&self, out: &mut Vec<u8>) {
        match self {
            UpdateOp::Spawn(spawn) => {
                out.push(OP_SPAWN);
                put_varint(out, u64::from(spawn.wire));
                out.extend_from_slice(&spawn.net_id.to_le_bytes());
                out.push(spawn.flags.to_byte());
                put_components(out, &spawn.components);
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

/// Everything structural an owner did in one network tick.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct UpdateMessage {
    /// The owner's network tick.
    pub(crate) tick: u32,
    /// In the order they happened.
    pub(crate) ops: Vec<UpdateOp>,
}

impl UpdateMessage {
    /// Appends the encoded message to `out`.
    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        put_varint(out, u64::from(self.tick));
        for op in &self.ops {
            op.encode(out);
        }
    }
}

fn put_components(out: &mut Vec<u8>, components: &[ComponentValue]) {
    put_varint(out, components.len() as u64);
    for value in components {
        put_varint(out, u64::from(value.component));
        put_varint(out, value.bytes.len() as u64);
        out.extend_from_slice(&value.bytes);
    }
}

fn read_u32(reader: &mut Reader<'_>, what: &'static str) -> Result<u32, WireError> {
    Ok(reader.varint_max(u64::from(u32::MAX), what)? as u32)
}

fn read_component(reader: &mut Reader<'_>) -> Result<u16, WireError> {
    Ok(reader.varint_max(u64::from(u16::MAX), "component index")? as u16)
}

fn read_components(
    reader: &mut Reader<'_>,
    message: &Bytes,
) -> Result<Vec<ComponentValue>, WireError> {
    let count = reader.varint_max(MAX_COUNT, "component count")?;
    // Every entry takes at least two bytes: the count cannot claim more than the input holds.
    let mut components = Vec::with_capacity((count as usize).min(reader.remaining() / 2));
    for _ in 0..count {
        let component = read_component(reader)?;
        let len = reader.varint_max(reader.remaining() as u64, "component length")?;
        let bytes = message.slice_ref(reader.bytes(len as usize)?);
        components.push(ComponentValue { component, bytes });
    }
    Ok(components)
}

/// Reads an update message; component values are slices of `bytes`, not copies. Any
/// malformation fails the whole message: updates are applied all or nothing.
pub(crate) fn decode_update(bytes: &Bytes) -> Result<UpdateMessage, WireError> {
    let mut reader = Reader::new(bytes);
    let tick = read_u32(&mut reader, "tick")?;
    let mut ops = Vec::new();
    while !reader.is_empty() {
        let op = match reader.u8()? {
            OP_SPAWN => {
                let wire = read_u32(&mut reader, "entity")?;
                let net_id = reader.u64()?;
                let flags = SpawnFlags::from_byte(reader.u8()?)?;
                UpdateOp::Spawn(Spawn {
                    wire,
                    net_id,
                    flags,
                    components: read_components(&mut reader, bytes)?,
                })
            }
            OP_INSERT => UpdateOp::Insert {
                wire: read_u32(&mut reader, "entity")?,
                components: read_components(&mut reader, bytes)?,
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
                let to = PeerId(u128::from_le_bytes(reader.array()?));
                UpdateOp::HandOver { wire, to }
            }
            _ => return Err(WireError::OutOfRange("update operation")),
        };
        ops.push(op);
    }
    Ok(UpdateMessage { tick, ops })
}

/// The fixed part of a mutation message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct MutateHeader {
    /// The owner's network tick the values are from.
    pub(crate) tick: u32,
    /// The owner's update tick that must be applied before these values.
    pub(crate) needs: u32,
    /// The owner's clock when the values were collected, in µs.
    pub(crate) time: u64,
}

impl MutateHeader {
    /// At most two varints of five bytes and one of ten.
    pub(crate) const MAX_LEN: usize = 20;

    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        put_varint(out, u64::from(self.tick));
        put_varint(out, u64::from(self.needs));
        put_varint(out, self.time);
    }

    /// Reads a mutation message's header; the groups follow in `reader`.
    pub(crate) fn decode(reader: &mut Reader<'_>) -> Result<Self, WireError> {
        Ok(Self {
            tick: read_u32(reader, "tick")?,
            needs: read_u32(reader, "update tick")?,
            time: reader.varint_max(u64::MAX, "send time")?,
        })
    }
}

/// The start of a group of values of one component in a mutation message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct GroupHeader {
    pub(crate) component: u16,
    /// How many `wire value` entries follow.
    pub(crate) count: u32,
}

impl GroupHeader {
    /// At most a three-byte component index and a five-byte count.
    pub(crate) const MAX_LEN: usize = 8;

    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        put_varint(out, u64::from(self.component));
        put_varint(out, u64::from(self.count));
    }

    pub(crate) fn decode(reader: &mut Reader<'_>) -> Result<Self, WireError> {
        Ok(Self {
            component: read_component(reader)?,
            count: read_u32(reader, "group size")?,
        })
    }
}

/// Appends one entry of a group: the entity's number, then its value's bytes.
pub(crate) fn put_entry(out: &mut Vec<u8>, wire: u32, value: &[u8]) {
    put_varint(out, u64::from(wire));
    out.extend_from_slice(value);
}

/// Bytes an entry takes in a group.
pub(crate) fn entry_len(wire: u32, value: &[u8]) -> usize {
    varint_len(u64::from(wire)) + value.len()
}

/// Reads an entity number inside a group.
pub(crate) fn read_wire(reader: &mut Reader<'_>) -> Result<u32, WireError> {
    read_u32(reader, "entity")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn value(component: u16, bytes: &'static [u8]) -> ComponentValue {
        ComponentValue {
            component,
            bytes: Bytes::from_static(bytes),
        }
    }

    fn sample() -> UpdateMessage {
        UpdateMessage {
            tick: 77,
            ops: vec![
                UpdateOp::Spawn(Spawn {
                    wire: 1,
                    net_id: 0xdead_beef_0000_0001,
                    flags: SpawnFlags {
                        host_owned: true,
                        hand_to_host: false,
                    },
                    components: vec![value(0, b"abc"), value(3, b"")],
                }),
                UpdateOp::Insert {
                    wire: 300,
                    components: vec![value(2, b"x")],
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

    fn encoded(message: &UpdateMessage) -> Bytes {
        let mut bytes = Vec::new();
        message.encode(&mut bytes);
        Bytes::from(bytes)
    }

    #[test]
    fn updates_round_trip() {
        assert_eq!(decode_update(&encoded(&sample())), Ok(sample()));
    }

    #[test]
    fn a_truncated_update_fails_whole() {
        let bytes = encoded(&sample());
        for cut in 1..bytes.len() {
            if let Ok(message) = decode_update(&bytes.slice(..cut)) {
                // A cut between two operations is a valid, shorter message.
                assert!(message.ops.len() < sample().ops.len());
            }
        }
    }

    #[test]
    fn unknown_spawn_flags_are_refused() {
        let mut bytes = encoded(&sample()).to_vec();
        // tick (1 byte), op, wire, net id (8 bytes), then the flags byte.
        bytes[1 + 1 + 1 + 8] = 0x80;
        assert_eq!(
            decode_update(&Bytes::from(bytes)),
            Err(WireError::OutOfRange("spawn flags"))
        );
    }

    #[test]
    fn mutation_headers_round_trip() {
        let mut out = Vec::new();
        MutateHeader {
            tick: u32::MAX,
            needs: 3,
            time: u64::MAX,
        }
        .encode(&mut out);
        GroupHeader {
            component: u16::MAX,
            count: u32::MAX,
        }
        .encode(&mut out);
        assert!(out.len() <= MutateHeader::MAX_LEN + GroupHeader::MAX_LEN);
        let mut reader = Reader::new(&out);
        assert_eq!(
            MutateHeader::decode(&mut reader),
            Ok(MutateHeader {
                tick: u32::MAX,
                needs: 3,
                time: u64::MAX,
            })
        );
        assert_eq!(
            GroupHeader::decode(&mut reader),
            Ok(GroupHeader {
                component: u16::MAX,
                count: u32::MAX
            })
        );
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
            let ops: Vec<UpdateOp> = ops
                .into_iter()
                .map(|(kind, wire, id, components)| {
                    let values: Vec<ComponentValue> = components
                        .iter()
                        .map(|(c, b)| ComponentValue { component: *c, bytes: Bytes::from(b.clone()) })
                        .collect();
                    match kind {
                        1 => UpdateOp::Spawn(Spawn {
                            wire,
                            net_id: id,
                            flags: SpawnFlags { host_owned: id & 1 != 0, hand_to_host: id & 2 != 0 },
                            components: values,
                        }),
                        2 => UpdateOp::Insert { wire, components: values },
                        3 => UpdateOp::Remove { wire, components: components.iter().map(|(c, _)| *c).collect() },
                        4 => UpdateOp::Despawn { wire },
                        _ => UpdateOp::HandOver { wire, to: PeerId(u128::from(id) << 3) },
                    }
                })
                .collect();
            let message = UpdateMessage { tick, ops };
            prop_assert_eq!(decode_update(&encoded(&message)), Ok(message));
        }

        #[test]
        fn any_bytes_decode_or_fail(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let bytes = Bytes::from(bytes);
            let _ = decode_update(&bytes);
            let _ = MutateHeader::decode(&mut Reader::new(&bytes));
        }
    }
}
