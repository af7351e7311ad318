//! Rooms as a pure state machine: joins, leaves, matchmaking and relays in, frames out.
//!
//! No sockets and no clock: the async shell calls these methods under one lock, which also
//! serialises joins per room (two peers joining at once both learn of each other, exactly once).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde::Serialize;
use uuid::Uuid;

/// A peer's id, as the matchbox protocol carries it (a bare UUID).
pub type PeerId = Uuid;

/// What a client asked to join: a room name, and for matchmaking the group size.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RoomRequest {
    /// The room name (the URL path without its leading `/`; empty for the default room).
    pub name: String,
    /// `?next=N`: group players N at a time.
    pub next: Option<usize>,
}

/// A frame the server sends to one client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerFrame {
    /// Your id; always the first frame, sent once.
    IdAssigned(PeerId),
    /// A peer joined: make it an offer.
    NewPeer(PeerId),
    /// A peer left.
    PeerLeft(PeerId),
    /// A signal from `sender`, whose data is relayed verbatim (JSON).
    Signal {
        /// Who sent it.
        sender: PeerId,
        /// The signal, as the sender wrote it.
        data: Arc<str>,
    },
}

/// Why a join was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum JoinError {
    /// The room holds as many peers as it may.
    RoomFull {
        /// Its capacity.
        capacity: usize,
    },
    /// The id is already in a room.
    AlreadyJoined,
}

/// Why a signal was not relayed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SignalError {
    /// The sender is not in a room.
    NotJoined,
    /// The receiver is not in the sender's room (gone, or never there).
    UnknownReceiver,
    /// A peer signalled itself.
    ToSelf,
}

/// A room as the lobby browser shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RoomInfo {
    /// Its name.
    pub name: String,
    /// `next=N` rooms: the group size; absent for full-mesh rooms.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next: Option<usize>,
    /// Peers in it (for `next` rooms: waiting for their group to fill).
    pub peers: usize,
    /// Most peers it takes.
    pub capacity: usize,
}

/// One group of peers that see each other: a full-mesh room, or one matched group.
#[derive(Debug, Default)]
struct Group {
    /// In join order.
    members: Vec<PeerId>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct GroupId(u64);

#[derive(Debug)]
struct Member {
    group: GroupId,
    request: RoomRequest,
}

/// Every room and who is in it.
#[derive(Debug)]
pub struct Rooms {
    capacity: usize,
    groups: HashMap<GroupId, Group>,
    /// Full-mesh rooms, and the group of each `next` room that is still filling.
    open: BTreeMap<RoomRequest, GroupId>,
    members: HashMap<PeerId, Member>,
    next_group: u64,
}

/// Frames to deliver, in order.
pub type Outbox = Vec<(PeerId, ServerFrame)>;

impl Rooms {
    /// Rooms of at most `capacity` peers each.
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            groups: HashMap::new(),
            open: BTreeMap::new(),
            members: HashMap::new(),
            next_group: 0,
        }
    }

    /// Whether a join to `request` would be accepted now.
    pub fn check_join(&self, request: &RoomRequest) -> Result<(), JoinError> {
        let capacity = self.capacity_of(request);
        let size = self
            .open
            .get(request)
            .map_or(0, |group| self.groups[group].members.len());
        if size >= capacity {
            return Err(JoinError::RoomFull { capacity });
        }
        Ok(())
    }

    fn capacity_of(&self, request: &RoomRequest) -> usize {
        request.next.unwrap_or(self.capacity).min(self.capacity)
    }

    /// Adds `peer` to the room. The peer is told its id first; the members already there are
    /// told of it (they make the offers). In a `next=N` room nobody is told anything until N
    /// peers are waiting: then every pair is introduced at once and the group is sealed.
    pub fn join(&mut self, peer: PeerId, request: RoomRequest) -> Result<Outbox, JoinError> {
        if self.members.contains_key(&peer) {
            return Err(JoinError::AlreadyJoined);
        }
        self.check_join(&request)?;
        let group_id = match self.open.get(&request) {
            Some(group) => *group,
            None => {
                let id = GroupId(self.next_group);
                self.next_group += 1;
                self.groups.insert(id, Group::default());
                self.open.insert(request.clone(), id);
                id
            }
        };
        let mut out = vec![(peer, ServerFrame::IdAssigned(peer))];
        let group = self.groups.get_mut(&group_id).expect("open groups exist");
        match request.next {
            None => {
                out.extend(
                    group
                        .members
                        .iter()
                        .map(|m| (*m, ServerFrame::NewPeer(peer))),
                );
                group.members.push(peer);
            }
            Some(size) => {
                group.members.push(peer);
                if group.members.len() >= size {
                    for (i, earlier) in group.members.iter().enumerate() {
                        for later in &group.members[i + 1..] {
                            out.push((*earlier, ServerFrame::NewPeer(*later)));
                        }
                    }
                    // Matched: later joiners start the next group.
                    self.open.remove(&request);
                }
            }
        }
        self.members.insert(
            peer,
            Member {
                group: group_id,
                request,
            },
        );
        Ok(out)
    }

    /// Removes `peer`; the peers that knew of it are told. Unknown peers are ignored.
    pub fn leave(&mut self, peer: PeerId) -> Outbox {
        let Some(member) = self.members.remove(&peer) else {
            return Vec::new();
        };
        let group = self
            .groups
            .get_mut(&member.group)
            .expect("members' groups exist");
        group.members.retain(|m| *m != peer);
        let still_filling = self.open.get(&member.request) == Some(&member.group);
        // Nobody in a group that is still filling was introduced to anyone.
        let out = if member.request.next.is_some() && still_filling {
            Vec::new()
        } else {
            group
                .members
                .iter()
                .map(|m| (*m, ServerFrame::PeerLeft(peer)))
                .collect()
        };
        if group.members.is_empty() {
            self.groups.remove(&member.group);
            if still_filling {
                self.open.remove(&member.request);
            }
        }
        out
    }

    /// Relays a signal to a peer of the sender's own group, and nowhere else.
    pub fn signal(
        &self,
        sender: PeerId,
        receiver: PeerId,
        data: Arc<str>,
    ) -> Result<(PeerId, ServerFrame), SignalError> {
        let from = self.members.get(&sender).ok_or(SignalError::NotJoined)?;
        if sender == receiver {
            return Err(SignalError::ToSelf);
        }
        match self.members.get(&receiver) {
            Some(to) if to.group == from.group => {
                Ok((receiver, ServerFrame::Signal { sender, data }))
            }
            _ => Err(SignalError::UnknownReceiver),
        }
    }

    /// Whether `a` and `b` are in one group, i.e. may signal each other.
    pub fn same_group(&self, a: PeerId, b: PeerId) -> bool {
        match (self.members.get(&a), self.members.get(&b)) {
            (Some(a), Some(b)) => a.group == b.group,
            _ => false,
        }
    }

    /// The rooms whose name starts with `prefix`, by name.
    pub fn list(&self, prefix: &str) -> Vec<RoomInfo> {
        let mut rooms: BTreeMap<&RoomRequest, RoomInfo> = BTreeMap::new();
        // Open groups are what a player can join; sealed `next` groups are private matches.
        for (request, group) in &self.open {
            if !request.name.starts_with(prefix) {
                continue;
            }
            rooms.insert(
                request,
                RoomInfo {
                    name: request.name.clone(),
                    next: request.next,
                    peers: self.groups[group].members.len(),
                    capacity: self.capacity_of(request),
                },
            );
        }
        rooms.into_values().collect()
    }

    /// Whether `peer` is in a room (or waiting for a match).
    pub fn contains(&self, peer: PeerId) -> bool {
        self.members.contains_key(&peer)
    }

    /// Peers in rooms.
    pub fn peer_count(&self) -> usize {
        self.members.len()
    }

    /// Groups with anyone in them: full-mesh rooms, filling groups and matches.
    pub fn group_count(&self) -> usize {
        self.groups.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u128) -> PeerId {
        Uuid::from_u128(n)
    }

    fn mesh(name: &str) -> RoomRequest {
        RoomRequest {
            name: name.to_owned(),
            next: None,
        }
    }

    fn next(name: &str, n: usize) -> RoomRequest {
        RoomRequest {
            name: name.to_owned(),
            next: Some(n),
        }
    }

    #[test]
    fn id_first_then_existing_members_learn_of_the_newcomer() {
        let mut rooms = Rooms::new(8);
        assert_eq!(
            rooms.join(id(1), mesh("a")).unwrap(),
            vec![(id(1), ServerFrame::IdAssigned(id(1)))]
        );
        assert_eq!(
            rooms.join(id(2), mesh("a")).unwrap(),
            vec![
                (id(2), ServerFrame::IdAssigned(id(2))),
                (id(1), ServerFrame::NewPeer(id(2)))
            ]
        );
        assert_eq!(
            rooms.join(id(3), mesh("a")).unwrap(),
            vec![
                (id(3), ServerFrame::IdAssigned(id(3))),
                (id(1), ServerFrame::NewPeer(id(3))),
                (id(2), ServerFrame::NewPeer(id(3)))
            ],
            "each pair is introduced to exactly one side"
        );
        assert_eq!(
            rooms.leave(id(2)),
            vec![
                (id(1), ServerFrame::PeerLeft(id(2))),
                (id(3), ServerFrame::PeerLeft(id(2)))
            ]
        );
    }

    #[test]
    fn signals_stay_inside_the_room() {
        let mut rooms = Rooms::new(8);
        rooms.join(id(1), mesh("a")).unwrap();
        rooms.join(id(2), mesh("a")).unwrap();
        rooms.join(id(3), mesh("b")).unwrap();
        let data: Arc<str> = Arc::from(r#"{"Offer":"sdp"}"#);
        assert_eq!(
            rooms.signal(id(1), id(2), data.clone()),
            Ok((
                id(2),
                ServerFrame::Signal {
                    sender: id(1),
                    data: data.clone()
                }
            ))
        );
        assert_eq!(
            rooms.signal(id(1), id(3), data.clone()),
            Err(SignalError::UnknownReceiver)
        );
        assert_eq!(
            rooms.signal(id(1), id(1), data.clone()),
            Err(SignalError::ToSelf)
        );
        assert_eq!(
            rooms.signal(id(9), id(1), data),
            Err(SignalError::NotJoined)
        );
    }

    #[test]
    fn next_pairs_four_players_into_two_groups() {
        let mut rooms = Rooms::new(8);
        let mut frames = Vec::new();
        for n in 1..=4 {
            frames.extend(rooms.join(id(n), next("duel", 2)).unwrap());
        }
        let introductions: Vec<_> = frames
            .iter()
            .filter(|(_, f)| matches!(f, ServerFrame::NewPeer(_)))
            .cloned()
            .collect();
        assert_eq!(
            introductions,
            vec![
                (id(1), ServerFrame::NewPeer(id(2))),
                (id(3), ServerFrame::NewPeer(id(4)))
            ]
        );
        let data: Arc<str> = Arc::from("{}");
        assert!(
            rooms.signal(id(1), id(3), data).is_err(),
            "groups are isolated"
        );
        assert_eq!(
            rooms.leave(id(1)),
            vec![(id(2), ServerFrame::PeerLeft(id(1)))]
        );
    }

    #[test]
    fn a_player_leaving_a_filling_group_is_replaced_silently() {
        let mut rooms = Rooms::new(8);
        rooms.join(id(1), next("trio", 3)).unwrap();
        rooms.join(id(2), next("trio", 3)).unwrap();
        assert_eq!(rooms.leave(id(1)), vec![], "nobody was introduced to it");
        let frames = rooms.join(id(3), next("trio", 3)).unwrap();
        assert_eq!(frames.len(), 1, "two waiting, not yet three");
        let frames = rooms.join(id(4), next("trio", 3)).unwrap();
        assert_eq!(
            frames
                .iter()
                .filter(|(_, f)| matches!(f, ServerFrame::NewPeer(_)))
                .count(),
            3
        );
    }

    #[test]
    fn capacity_is_enforced_and_empty_rooms_vanish() {
        let mut rooms = Rooms::new(2);
        rooms.join(id(1), mesh("a")).unwrap();
        rooms.join(id(2), mesh("a")).unwrap();
        assert_eq!(
            rooms.join(id(3), mesh("a")),
            Err(JoinError::RoomFull { capacity: 2 })
        );
        assert_eq!(
            rooms.list(""),
            vec![RoomInfo {
                name: "a".into(),
                next: None,
                peers: 2,
                capacity: 2
            }]
        );
        rooms.leave(id(1));
        rooms.leave(id(2));
        assert_eq!(rooms.list(""), vec![]);
        assert_eq!(rooms.group_count(), 0);
        assert_eq!(rooms.join(id(1), mesh("a")).map(|f| f.len()), Ok(1));
        assert_eq!(rooms.join(id(1), mesh("b")), Err(JoinError::AlreadyJoined));
    }

    #[test]
    fn listing_filters_by_prefix() {
        let mut rooms = Rooms::new(8);
        rooms.join(id(1), mesh("eu-1")).unwrap();
        rooms.join(id(2), mesh("us-1")).unwrap();
        rooms.join(id(3), next("eu-duel", 2)).unwrap();
        let names: Vec<_> = rooms.list("eu").into_iter().map(|r| r.name).collect();
        assert_eq!(names, vec!["eu-1", "eu-duel"]);
    }
}
