use std::collections::BTreeSet;

use super::*;

const MS: Duration = Duration::from_millis(1);
/// One step of the simulated room: every peer runs a frame.
const FRAME: Duration = Duration::from_millis(16);

/// Peers with a link graph, exchanging announcements one frame late (as the network does).
struct Room {
    config: SessionConfig,
    now: Duration,
    /// Wall clock at `now == 0`, per peer (their clocks need not agree).
    unix_base: Vec<u64>,
    ids: Vec<PeerId>,
    peers: Vec<Membership>,
    /// Whether each peer is running (has joined and not left).
    present: Vec<bool>,
    links: BTreeSet<(usize, usize)>,
    in_flight: Vec<(usize, usize, Bytes)>,
    events: Vec<Vec<MembershipEvent>>,
}

impl Room {
    fn new(ids: &[u128]) -> Self {
        Self {
            config: SessionConfig::default(),
            now: Duration::ZERO,
            unix_base: vec![1_700_000_000_000; ids.len()],
            ids: ids.iter().map(|id| PeerId(*id)).collect(),
            peers: ids.iter().map(|_| Membership::default()).collect(),
            present: vec![false; ids.len()],
            links: BTreeSet::new(),
            in_flight: Vec::new(),
            events: vec![Vec::new(); ids.len()],
        }
    }

    fn join(&mut self, i: usize) {
        self.present[i] = true;
    }

    fn link(&mut self, a: usize, b: usize) {
        self.links.insert((a.min(b), a.max(b)));
    }

    fn cut(&mut self, a: usize, b: usize) {
        self.links.remove(&(a.min(b), a.max(b)));
    }

    fn link_all(&mut self) {
        for a in 0..self.ids.len() {
            for b in a + 1..self.ids.len() {
                self.link(a, b);
            }
        }
    }

    fn leave(&mut self, i: usize) {
        self.present[i] = false;
        self.links.retain(|(a, b)| *a != i && *b != i);
    }

    fn linked(&self, a: usize, b: usize) -> bool {
        self.present[a] && self.present[b] && self.links.contains(&(a.min(b), a.max(b)))
    }

    fn step(&mut self) {
        self.now += FRAME;
        let arriving = std::mem::take(&mut self.in_flight);
        for i in 0..self.ids.len() {
            if !self.present[i] {
                continue;
            }
            let connected: Vec<PeerId> = (0..self.ids.len())
                .filter(|j| *j != i && self.linked(i, *j))
                .map(|j| self.ids[j])
                .collect();
            self.peers[i].sync_peers(self.now, &self.config, Some(self.ids[i]), connected);
            for (from, to, body) in &arriving {
                if *to == i && self.linked(*from, i) {
                    self.peers[i]
                        .handle_announcement(self.ids[*from], body)
                        .expect("announcements between honest peers decode");
                }
            }
            let unix = self.unix_base[i] + self.now.as_millis() as u64;
            self.peers[i].update(self.now, unix, &self.config);
            let events: Vec<_> = self.peers[i].drain_events().collect();
            self.events[i].extend(events);
            let ids = self.ids.clone();
            let mut out = Vec::new();
            self.peers[i].poll_transmit(|peer, body| {
                let to = ids.iter().position(|id| *id == peer).unwrap();
                out.push((i, to, body));
            });
            self.in_flight.extend(out);
        }
    }

    fn run(&mut self, time: Duration) {
        let until = self.now + time;
        while self.now < until {
            self.step();
        }
    }

    fn host(&self, i: usize) -> Option<PeerId> {
        self.peers[i].host()
    }

    /// The host every present peer sees, if they agree.
    fn agreed_host(&self) -> Option<PeerId> {
        let hosts: BTreeSet<_> = (0..self.ids.len())
            .filter(|i| self.present[*i])
            .map(|i| self.host(i))
            .collect();
        match hosts.into_iter().collect::<Vec<_>>().as_slice() {
            [Some(host)] => Some(*host),
            _ => None,
        }
    }

    fn hosts(&self) -> Vec<Option<PeerId>> {
        (0..self.ids.len()).map(|i| self.host(i)).collect()
    }
}

#[test]
fn peers_that_start_together_agree_on_one_founder_after_the_settle_time() {
    let mut room = Room::new(&[30, 10, 20]);
    for i in 0..3 {
        room.join(i);
    }
    room.link_all();
    room.run(500 * MS);
    assert_eq!(
        room.hosts(),
        vec![None; 3],
        "nobody is host before the settle time"
    );
    room.run(room.config.settle_time);
    assert_eq!(
        room.agreed_host(),
        Some(PeerId(10)),
        "the lowest id among peers that met before settling founds the session: {:?}",
        room.hosts()
    );
    let founders = (0..3)
        .filter(|i| room.events[*i].contains(&MembershipEvent::Founded))
        .count();
    assert_eq!(founders, 1, "exactly one peer founds the session");
}

#[test]
fn a_joiner_with_the_lowest_id_does_not_become_host() {
    let mut room = Room::new(&[30, 20, 1]);
    room.join(0);
    room.join(1);
    room.link(0, 1);
    room.run(2 * room.config.settle_time);
    assert_eq!(room.agreed_host(), Some(PeerId(20)));
    room.join(2);
    room.link(2, 0);
    room.link(2, 1);
    let mut seen = BTreeSet::new();
    for _ in 0..600 {
        room.step();
        seen.extend(room.hosts());
    }
    assert_eq!(
        room.agreed_host(),
        Some(PeerId(20)),
        "the joiner (id 1) follows the host that was there first"
    );
    assert!(
        !seen.contains(&Some(PeerId(1))),
        "no peer ever saw the joiner as host: {seen:?}"
    );
    assert_eq!(room.peers[2].standing().map(|s| s.rank), Some(2));
}

#[test]
fn a_joiner_connected_to_some_members_only_waits_for_the_host_its_seniors_name() {
    let mut room = Room::new(&[1, 2, 3]);
    room.join(0);
    room.join(1);
    room.link(0, 1);
    room.run(2 * room.config.settle_time);
    room.join(2);
    room.link(2, 1);
    room.run(300 * MS);
    assert_eq!(
        room.host(2),
        None,
        "the joiner is not settled while it cannot reach the host its peers name"
    );
    assert_eq!(
        room.host(1),
        Some(PeerId(1)),
        "the joiner moves no one else"
    );
    room.link(2, 0);
    room.run(100 * MS);
    assert_eq!(room.agreed_host(), Some(PeerId(1)));
}

#[test]
fn two_sessions_that_meet_merge_into_the_older_one() {
    let mut room = Room::new(&[1, 2]);
    room.join(1);
    room.run(2 * room.config.settle_time);
    room.join(0);
    room.run(2 * room.config.settle_time);
    assert_eq!(room.host(0), Some(PeerId(1)), "each alone hosts itself");
    assert_eq!(room.host(1), Some(PeerId(2)));
    room.link(0, 1);
    room.run(200 * MS);
    assert_eq!(
        room.agreed_host(),
        Some(PeerId(2)),
        "the session founded first survives, though its founder has the higher id"
    );
    assert!(
        matches!(
            room.events[0].last(),
            Some(MembershipEvent::Merged { into, .. }) if into.founder == PeerId(2)
        ),
        "the younger session's member reports the merge: {:?}",
        room.events[0]
    );
    assert!(
        !room.events[1]
            .iter()
            .any(|e| matches!(e, MembershipEvent::Merged { .. })),
        "the older session does not merge"
    );
}

#[test]
fn in_a_partial_mesh_everyone_picks_the_member_that_reaches_everyone() {
    let mut room = Room::new(&[1, 2, 3]);
    for i in 0..3 {
        room.join(i);
    }
    room.link_all();
    room.run(2 * room.config.settle_time);
    assert_eq!(room.agreed_host(), Some(PeerId(1)));
    // The host loses its link to the third peer, for good.
    room.cut(0, 2);
    room.run(room.config.mesh_grace + 500 * MS);
    assert_eq!(
        room.agreed_host(),
        Some(PeerId(2)),
        "only the middle peer reaches both others: {:?}",
        room.hosts()
    );
    room.link(0, 2);
    room.run(room.config.mesh_grace + 500 * MS);
    assert_eq!(
        room.agreed_host(),
        Some(PeerId(1)),
        "the most senior member is host again once the mesh heals"
    );
}

#[test]
fn a_host_departure_noticed_at_different_times_converges() {
    let mut room = Room::new(&[1, 2, 3, 4]);
    for i in 0..4 {
        room.join(i);
    }
    room.link_all();
    room.run(2 * room.config.settle_time + room.config.mesh_grace);
    assert_eq!(room.agreed_host(), Some(PeerId(1)));
    // Peer 2 notices the host is gone 6 s before the others do.
    room.cut(0, 1);
    room.run(6000 * MS);
    room.leave(0);
    room.run(500 * MS);
    assert_eq!(
        room.agreed_host(),
        Some(PeerId(2)),
        "the next most senior member is host everywhere: {:?}",
        room.hosts()
    );
}

#[test]
fn a_rejoin_under_a_new_id_is_a_newcomer() {
    let mut membership = Membership::default();
    let config = SessionConfig::default();
    membership.sync_peers(Duration::ZERO, &config, Some(PeerId(1)), []);
    membership.update(2 * config.settle_time, 0, &config);
    assert_eq!(membership.host(), Some(PeerId(1)));
    membership.sync_peers(3 * config.settle_time, &config, Some(PeerId(9)), []);
    membership.update(3 * config.settle_time, 0, &config);
    assert_eq!(membership.standing(), None, "a new id starts unranked");
    assert_eq!(membership.host(), None);
}

#[test]
fn bad_announcements_are_refused_without_allocating_what_they_claim() {
    let mut membership = Membership::default();
    let config = SessionConfig::default();
    membership.sync_peers(Duration::ZERO, &config, Some(PeerId(1)), [PeerId(2)]);
    let good = Announcement {
        standing: Standing {
            session: SessionKey {
                founded_unix_ms: 5,
                founder: PeerId(2),
            },
            rank: 0,
        },
        host: Some(PeerId(2)),
        links: vec![PeerId(1)],
    }
    .encode();
    assert_eq!(Announcement::decode(&good).unwrap().links, vec![PeerId(1)]);
    let mut trailing = good.to_vec();
    trailing.push(0);
    let mut huge_count = good[..good.len() - 17].to_vec();
    crate::wire::put_varint(&mut huge_count, 1 << 40);
    for bad in [
        &good[..good.len() - 1],
        &trailing[..],
        &huge_count[..],
        &[2u8][..],
        &[][..],
    ] {
        assert!(
            membership.handle_announcement(PeerId(2), bad).is_err(),
            "{bad:?} should be refused"
        );
    }
    assert_eq!(membership.standing_of(PeerId(2)), None);
    membership.handle_announcement(PeerId(2), &good).unwrap();
    assert_eq!(membership.standing_of(PeerId(2)).map(|s| s.rank), Some(0));
}

#[test]
fn the_successor_is_the_peer_the_others_elect_when_the_host_leaves() {
    let mut room = Room::new(&[30, 20, 10]);
    room.join(0);
    room.join(1);
    room.link(0, 1);
    room.run(2 * room.config.settle_time);
    room.join(2);
    room.link_all();
    room.run(room.config.mesh_grace + 500 * MS);
    let host = room.agreed_host().expect("the room settled");
    let successors: BTreeSet<_> = (0..3).map(|i| room.peers[i].successor()).collect();
    assert_eq!(
        successors.len(),
        1,
        "every peer names the same successor: {successors:?}"
    );
    let successor = successors
        .into_iter()
        .next()
        .flatten()
        .expect("one is named");
    assert_ne!(successor, host, "the successor is not the host");
    let host_index = room.ids.iter().position(|id| *id == host).unwrap();
    room.leave(host_index);
    room.run(room.config.mesh_grace + 500 * MS);
    assert_eq!(
        room.agreed_host(),
        Some(successor),
        "the peer named next in line is the one elected when the host leaves"
    );
}
