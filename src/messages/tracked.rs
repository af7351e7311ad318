//! Delivery reports: a message sent with [`PeerMessageWriter::send_tracked`] is answered by the
//! receiving app once it has decoded it, and the sender reads a [`DeliveryReport`] per
//! recipient: delivered, or not (the recipient left first).
//!
//! [`PeerMessageWriter::send_tracked`]: super::PeerMessageWriter::send_tracked

use std::collections::BTreeMap;

use bevy::platform::collections::HashMap;
use bevy::prelude::*;
use bytes::Bytes;

use crate::channel::Channel;
use crate::endpoint::KIND_DELIVERED;
use crate::error::InputError;
use crate::net::{ConnectedPeers, KindQueues, NetEndpoint, PeerDisconnected, reject_input};
use crate::peer::PeerId;
use crate::wire::{Reader, put_varint};

/// Most tickets one answer carries; more go in further answers.
const TICKETS_PER_ANSWER: usize = 1024;
/// Most tracked messages one peer may have unanswered here; beyond it the oldest is reported
/// undelivered, so a peer that never answers costs bounded memory.
const MAX_PENDING_PER_PEER: usize = 65_536;

/// Names one tracked message (the same for each of its recipients).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MessageTicket(pub u64);

/// What became of a tracked message at one recipient.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DeliveryOutcome {
    /// The recipient's app decoded it (it is in that frame's `FromPeer` messages there).
    Delivered,
    /// The recipient left, or lost its connection, before it answered. It may or may not have
    /// read the message; send it again (to the new host, say) if it matters.
    PeerLeft,
    /// Too many of this peer's tracked messages were unanswered; this one is no longer tracked.
    GivenUp,
}

/// One recipient's answer to a tracked message. Read them with
/// `MessageReader<DeliveryReport>`.
#[derive(Message, Debug, Clone, PartialEq, Eq)]
pub struct DeliveryReport {
    /// The message, as [`send_tracked`](super::PeerMessageWriter::send_tracked) returned it.
    pub ticket: MessageTicket,
    /// The recipient.
    pub peer: PeerId,
    /// The message's type.
    pub message_type: &'static str,
    /// Delivered or not.
    pub outcome: DeliveryOutcome,
}

/// Tracked messages waiting for their answer, and answers owed to others.
#[derive(Resource, Default)]
pub(crate) struct Deliveries {
    /// By recipient and ticket: the message's type.
    pending: BTreeMap<(PeerId, u64), &'static str>,
    pending_by: HashMap<PeerId, usize>,
    /// Tickets of messages read this frame, by sender, to answer.
    owed: BTreeMap<PeerId, Vec<u64>>,
    /// Reports to hand out this frame (filled where no writer is at hand).
    reports: Vec<DeliveryReport>,
}

impl Deliveries {
    /// A tracked message went to `peer`.
    pub(crate) fn sent(&mut self, peer: PeerId, ticket: u64, message_type: &'static str) {
        let count = self.pending_by.entry(peer).or_default();
        if *count >= MAX_PENDING_PER_PEER
            && let Some((&(_, oldest), &oldest_type)) =
                self.pending.range((peer, 0)..=(peer, u64::MAX)).next()
        {
            self.pending.remove(&(peer, oldest));
            *count -= 1;
            self.reports.push(DeliveryReport {
                ticket: MessageTicket(oldest),
                peer,
                message_type: oldest_type,
                outcome: DeliveryOutcome::GivenUp,
            });
        }
        if self.pending.insert((peer, ticket), message_type).is_none() {
            *count += 1;
        }
    }

    /// A tracked message could not go to `peer`: it left after the message was queued.
    pub(crate) fn not_sent(&mut self, peer: PeerId, ticket: u64, message_type: &'static str) {
        self.reports.push(DeliveryReport {
            ticket: MessageTicket(ticket),
            peer,
            message_type,
            outcome: DeliveryOutcome::PeerLeft,
        });
    }

    /// A tracked message from `sender` was decoded here: answer it (at once when it is our own,
    /// sent to ourselves as host).
    pub(crate) fn read(&mut self, sender: PeerId, ticket: u64, local: Option<PeerId>) {
        if Some(sender) == local {
            self.answered(sender, ticket);
        } else {
            self.owed.entry(sender).or_default().push(ticket);
        }
    }

    fn answered(&mut self, peer: PeerId, ticket: u64) {
        if let Some(message_type) = self.pending.remove(&(peer, ticket)) {
            if let Some(count) = self.pending_by.get_mut(&peer) {
                *count = count.saturating_sub(1);
            }
            self.reports.push(DeliveryReport {
                ticket: MessageTicket(ticket),
                peer,
                message_type,
                outcome: DeliveryOutcome::Delivered,
            });
        }
    }

    fn peer_left(&mut self, peer: PeerId) {
        let tickets: Vec<(u64, &'static str)> = self
            .pending
            .range((peer, 0)..=(peer, u64::MAX))
            .map(|(&(_, ticket), &message_type)| (ticket, message_type))
            .collect();
        for (ticket, message_type) in tickets {
            self.pending.remove(&(peer, ticket));
            self.reports.push(DeliveryReport {
                ticket: MessageTicket(ticket),
                peer,
                message_type,
                outcome: DeliveryOutcome::PeerLeft,
            });
        }
        self.pending_by.remove(&peer);
        self.owed.remove(&peer);
    }
}

/// Registered by the plugin: the answer kind, the reports, and the systems that move them.
pub(crate) fn build(app: &mut App) {
    app.world_mut()
        .resource_mut::<KindQueues>()
        .register(KIND_DELIVERED);
    app.init_resource::<Deliveries>()
        .add_message::<DeliveryReport>()
        .add_observer(
            |gone: On<PeerDisconnected>, mut deliveries: ResMut<Deliveries>| {
                deliveries.peer_left(gone.peer);
            },
        )
        .add_systems(
            PreUpdate,
            receive_answers.in_set(crate::net::PeersyncSystems::Receive),
        )
        .add_systems(
            PostUpdate,
            (send_answers, publish_reports).in_set(crate::net::PeersyncSystems::Send),
        );
}

fn receive_answers(world: &mut World) {
    let answers = world.resource_mut::<KindQueues>().take(KIND_DELIVERED);
    for answer in answers {
        match decode_answer(&answer.body) {
            Ok(tickets) => {
                let mut deliveries = world.resource_mut::<Deliveries>();
                for ticket in tickets {
                    deliveries.answered(answer.peer, ticket);
                }
            }
            Err(error) => reject_input(world, answer.peer, InputError::Malformed(error)),
        }
    }
    publish(world);
}

fn decode_answer(body: &[u8]) -> Result<Vec<u64>, crate::wire::WireError> {
    let mut reader = Reader::new(body);
    let count = reader.varint_max(TICKETS_PER_ANSWER as u64, "delivery tickets")? as usize;
    let mut tickets = Vec::with_capacity(count);
    for _ in 0..count {
        tickets.push(reader.varint()?);
    }
    if !reader.is_empty() {
        return Err(crate::wire::WireError::OutOfRange(
            "delivery answer trailing bytes",
        ));
    }
    Ok(tickets)
}

fn send_answers(
    mut deliveries: ResMut<Deliveries>,
    mut endpoint: ResMut<NetEndpoint>,
    peers: Res<ConnectedPeers>,
) {
    for (peer, tickets) in std::mem::take(&mut deliveries.owed) {
        if !peers.contains(peer) {
            continue;
        }
        for chunk in tickets.chunks(TICKETS_PER_ANSWER) {
            let mut body = Vec::with_capacity(2 + chunk.len() * 4);
            put_varint(&mut body, chunk.len() as u64);
            for ticket in chunk {
                put_varint(&mut body, *ticket);
            }
            // Fails only if the peer left since: then nobody waits for the answer.
            let _ = endpoint.0.send(
                peer,
                Channel::Reliable,
                KIND_DELIVERED,
                Bytes::from(body),
                None,
            );
        }
    }
}

fn publish_reports(world: &mut World) {
    publish(world);
}

/// Hands the reports gathered so far to the game.
fn publish(world: &mut World) {
    let reports = std::mem::take(&mut world.resource_mut::<Deliveries>().reports);
    for report in reports {
        world.write_message(report);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_round_trip_and_garbage_is_refused() {
        let mut body = Vec::new();
        put_varint(&mut body, 2);
        put_varint(&mut body, 7);
        put_varint(&mut body, 1 << 40);
        assert_eq!(decode_answer(&body), Ok(vec![7, 1 << 40]));
        let mut huge = Vec::new();
        put_varint(&mut huge, 1 << 30);
        assert!(decode_answer(&huge).is_err(), "a count over the limit");
        assert!(decode_answer(&body[..2]).is_err(), "truncated");
    }

    #[test]
    fn a_peer_that_leaves_gets_its_messages_reported_undelivered() {
        let (a, b) = (PeerId(1), PeerId(2));
        let mut deliveries = Deliveries::default();
        deliveries.sent(a, 1, "T");
        deliveries.sent(b, 1, "T");
        deliveries.sent(a, 2, "T");
        deliveries.answered(a, 1);
        deliveries.answered(a, 99); // unknown: ignored
        deliveries.peer_left(a);
        let outcomes: Vec<_> = deliveries
            .reports
            .iter()
            .map(|r| (r.peer, r.ticket.0, r.outcome))
            .collect();
        assert_eq!(
            outcomes,
            vec![
                (a, 1, DeliveryOutcome::Delivered),
                (a, 2, DeliveryOutcome::PeerLeft)
            ]
        );
        assert!(
            deliveries.pending.contains_key(&(b, 1)),
            "b's is still waiting"
        );
    }
}
