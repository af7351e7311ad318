//! Round trips and refusals of the replication messages.
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
        tick: 7,
        snapshot: SnapshotMarks::default(),
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
    for (begins, ends) in [(true, false), (false, true), (true, true)] {
        let mut message = sample();
        message.tick = u32::MAX;
        message.snapshot = SnapshotMarks { begins, ends };
        assert_eq!(decode_update(&encoded(&message)), Ok(message));
    }
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
    let groups = [
        GroupHeader {
            component: u16::MAX,
            count: u32::MAX,
            base: Some(u32::MAX),
        },
        GroupHeader {
            component: 7,
            count: 1,
            base: None,
        },
    ];
    groups.iter().for_each(|group| group.encode(&mut out));
    assert!(out.len() <= MutateHeader::MAX_LEN + 2 * GroupHeader::MAX_LEN);
    for form in [
        EntryForm::FromGroupBase,
        EntryForm::FromAge(3),
        EntryForm::Whole(u32::MAX),
    ] {
        put_delta_entry(&mut out, u32::MAX, form);
    }
    let mut reader = Reader::new(&out);
    assert_eq!(
        MutateHeader::decode(&mut reader),
        Ok(MutateHeader {
            tick: u32::MAX,
            needs: 3,
            time: u64::MAX,
        })
    );
    for group in groups {
        assert_eq!(GroupHeader::decode(&mut reader), Ok(group));
    }
    for form in [
        EntryForm::FromGroupBase,
        EntryForm::FromAge(3),
        EntryForm::Whole(u32::MAX),
    ] {
        assert_eq!(read_delta_entry(&mut reader), Ok((u32::MAX, form)));
    }
    assert!(reader.is_empty());
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
        let message = UpdateMessage {
            tick,
            snapshot: SnapshotMarks::default(),
            ops,
        };
        prop_assert_eq!(decode_update(&encoded(&message)), Ok(message));
    }

    #[test]
    fn any_bytes_decode_or_fail(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let bytes = Bytes::from(bytes);
        let _ = decode_update(&bytes);
        let _ = MutateHeader::decode(&mut Reader::new(&bytes));
    }
}
