//! An in-process network for tests: any number of peers, a seeded link conditioner, and a
//! clock that only moves when told to, so every run with the same seed is the same run.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bevy::platform::time::Instant;

use super::{LinkEvent, Packet, SocketState, Transport, TransportIo};
use crate::channel::Channel;
use crate::peer::PeerId;
use crate::rng::SplitMix64;

/// What a link does to packets: the faults of a real network, drawn from a seeded generator.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LinkConditioner {
    /// Share of packets lost, 0.0 to 1.0. On the reliable channel a loss costs a retransmission
    /// (the packet and all behind it come later) instead.
    pub loss: f32,
    /// One-way delay.
    pub latency: Duration,
    /// Each packet's delay is `latency` plus or minus up to this much, uniformly.
    pub jitter: Duration,
    /// Share of unreliable packets delivered twice.
    pub duplicate: f32,
    /// Share of unreliable packets held back long enough to arrive after later ones.
    pub reorder: f32,
}

impl LinkConditioner {
    /// No loss, no delay.
    pub const PERFECT: Self = Self {
        loss: 0.0,
        latency: Duration::ZERO,
        jitter: Duration::ZERO,
        duplicate: 0.0,
        reorder: 0.0,
    };

    /// When a packet sent at `now` on `channel` arrives: nothing when it is lost, twice when
    /// duplicated. `reliable_tail` is when the link's last reliable packet arrives (reliable
    /// packets never overtake each other; a loss costs them a resend instead).
    pub(crate) fn schedule(
        &self,
        rng: &mut SplitMix64,
        channel: Channel,
        now: Duration,
        reliable_tail: &mut Duration,
        out: &mut Vec<Duration>,
    ) {
        match channel {
            Channel::Unreliable => {
                if rng.chance(self.loss) {
                    return;
                }
                let copies = if rng.chance(self.duplicate) { 2 } else { 1 };
                for _ in 0..copies {
                    let mut delay = self.delay(rng);
                    if rng.chance(self.reorder) {
                        let extra = self.latency.max(Duration::from_millis(10));
                        delay += extra.mul_f32(0.5 + rng.unit());
                    }
                    out.push(now + delay);
                }
            }
            Channel::Reliable => {
                let mut delay = self.delay(rng);
                // SCTP resends a lost packet after about a round trip.
                let mut resends = 0;
                while resends < 8 && rng.chance(self.loss) {
                    delay += (self.latency * 2).max(Duration::from_millis(20));
                    resends += 1;
                }
                let at = (now + delay).max(*reliable_tail);
                *reliable_tail = at;
                out.push(at);
            }
        }
    }

    fn delay(&self, rng: &mut SplitMix64) -> Duration {
        let jitter = self.jitter.as_secs_f64() * (rng.unit() as f64 * 2.0 - 1.0);
        Duration::from_secs_f64((self.latency.as_secs_f64() + jitter).max(0.0))
    }
}

impl Default for LinkConditioner {
    fn default() -> Self {
        Self::PERFECT
    }
}

#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Scheduled {
    deliver_at: Duration,
    order: u64,
    from: PeerId,
    channel: Channel,
    bytes: bytes::Bytes,
}

#[derive(Debug, Default)]
struct Member {
    inbox: BinaryHeap<Reverse<Scheduled>>,
    links: Vec<LinkEvent>,
    /// Departures this member learns of later, with when.
    late_departures: Vec<LateDeparture>,
}

/// A peer that left, reported to one member only once the clock reaches `at`.
#[derive(Debug, Clone, Copy)]
struct LateDeparture {
    at: Duration,
    peer: PeerId,
}

#[derive(Debug)]
enum Clock {
    Manual(Duration),
    Real(Instant),
}

#[derive(Debug)]
struct Hub {
    rng: SplitMix64,
    clock: Clock,
    conditioner: LinkConditioner,
    overrides: HashMap<(PeerId, PeerId), LinkConditioner>,
    members: BTreeMap<PeerId, Member>,
    /// When the last reliable packet on each directed link arrives: later ones never overtake.
    reliable_tail: HashMap<(PeerId, PeerId), Duration>,
    /// Pairs of peers whose link is cut (lower id first).
    cut: HashSet<(PeerId, PeerId)>,
    /// Pairs of peers whose packets vanish without either side being told (lower id first).
    silenced: HashSet<(PeerId, PeerId)>,
    /// How long after a peer leaves each observer is told.
    departure_delays: HashMap<PeerId, Duration>,
    /// Directed links whose next reliable packet vanishes.
    lose_next: HashSet<(PeerId, PeerId)>,
    order: u64,
}

fn pair(a: PeerId, b: PeerId) -> (PeerId, PeerId) {
    (a.min(b), a.max(b))
}

impl Hub {
    fn now(&self) -> Duration {
        match &self.clock {
            Clock::Manual(now) => *now,
            Clock::Real(start) => start.elapsed(),
        }
    }

    fn route(&mut self, from: PeerId, packet: Packet) {
        let link_pair = pair(from, packet.peer);
        if !self.members.contains_key(&packet.peer)
            || self.cut.contains(&link_pair)
            || self.silenced.contains(&link_pair)
        {
            return;
        }
        let link = (from, packet.peer);
        if packet.channel == Channel::Reliable && self.lose_next.remove(&link) {
            return;
        }
        let conditioner = self
            .overrides
            .get(&link)
            .copied()
            .unwrap_or(self.conditioner);
        let now = self.now();
        let mut deliveries = Vec::with_capacity(2);
        let tail = self.reliable_tail.entry(link).or_default();
        conditioner.schedule(&mut self.rng, packet.channel, now, tail, &mut deliveries);
        for deliver_at in deliveries {
            self.order += 1;
            let scheduled = Scheduled {
                deliver_at,
                order: self.order,
                from,
                channel: packet.channel,
                bytes: packet.bytes.clone(),
            };
            if let Some(member) = self.members.get_mut(&packet.peer) {
                member.inbox.push(Reverse(scheduled));
            }
        }
    }

    /// A new member with a fresh id; `first` goes into its link events before the others.
    fn add_member(&mut self, first: Vec<LinkEvent>) -> PeerId {
        let id = loop {
            let id =
                PeerId((u128::from(self.rng.next_u64()) << 64) | u128::from(self.rng.next_u64()));
            if !self.members.contains_key(&id) {
                break id;
            }
        };
        let mut member = Member {
            links: first,
            ..Member::default()
        };
        for (other, existing) in self.members.iter_mut() {
            existing.links.push(LinkEvent::Up(id));
            member.links.push(LinkEvent::Up(*other));
        }
        self.members.insert(id, member);
        id
    }

    fn leave(&mut self, id: PeerId) {
        if self.members.remove(&id).is_none() {
            return;
        }
        let now = self.now();
        for (observer, member) in self.members.iter_mut() {
            match self.departure_delays.get(observer) {
                Some(delay) => member.late_departures.push(LateDeparture {
                    at: now + *delay,
                    peer: id,
                }),
                None => member.links.push(LinkEvent::Down(id)),
            }
        }
        self.departure_delays.remove(&id);
        self.reliable_tail.retain(|(a, b), _| *a != id && *b != id);
        self.cut.retain(|(a, b)| *a != id && *b != id);
        self.silenced.retain(|(a, b)| *a != id && *b != id);
    }
}

/// The shared network. Clone it to hand it to several apps; [`MemoryNetwork::join`] makes one
/// peer's transport.
#[derive(Debug, Clone)]
pub struct MemoryNetwork {
    hub: Arc<Mutex<Hub>>,
}

impl MemoryNetwork {
    /// A network whose faults are drawn from `seed`, perfect until
    /// [`MemoryNetwork::set_conditioner`], with a manual clock at zero (see
    /// [`MemoryNetwork::advance`]).
    pub fn new(seed: u64) -> Self {
        Self {
            hub: Arc::new(Mutex::new(Hub {
                rng: SplitMix64::new(seed),
                clock: Clock::Manual(Duration::ZERO),
                conditioner: LinkConditioner::PERFECT,
                overrides: HashMap::new(),
                members: BTreeMap::new(),
                reliable_tail: HashMap::new(),
                cut: HashSet::new(),
                silenced: HashSet::new(),
                departure_delays: HashMap::new(),
                lose_next: HashSet::new(),
                order: 0,
            })),
        }
    }

    fn hub(&self) -> MutexGuard<'_, Hub> {
        // A test that panicked while holding the lock leaves consistent data behind.
        self.hub.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Makes every link behave as `conditioner` (except those set with
    /// [`MemoryNetwork::set_link`]).
    pub fn set_conditioner(&self, conditioner: LinkConditioner) {
        self.hub().conditioner = conditioner;
    }

    /// Makes the link from `from` to `to` (one direction) behave as `conditioner`.
    pub fn set_link(&self, from: PeerId, to: PeerId, conditioner: LinkConditioner) {
        self.hub().overrides.insert((from, to), conditioner);
    }

    /// Cuts the link between `a` and `b`, as when a connection breaks while both peers stay in
    /// the room: each sees the other's link go down, and what was in flight between them is
    /// lost. Nothing passes until [`MemoryNetwork::heal`]. Peers that join later are not cut.
    pub fn cut(&self, a: PeerId, b: PeerId) {
        let mut hub = self.hub();
        if a == b || !hub.cut.insert(pair(a, b)) {
            return;
        }
        for (this, other) in [(a, b), (b, a)] {
            if let Some(member) = hub.members.get_mut(&this) {
                member.links.push(LinkEvent::Down(other));
                let inbox = std::mem::take(&mut member.inbox);
                member.inbox = inbox
                    .into_iter()
                    .filter(|Reverse(scheduled)| scheduled.from != other)
                    .collect();
            }
        }
    }

    /// Opens a link [`MemoryNetwork::cut`] closed: both peers see it come up, as a new
    /// connection.
    pub fn heal(&self, a: PeerId, b: PeerId) {
        let mut hub = self.hub();
        if !hub.cut.remove(&pair(a, b)) {
            return;
        }
        for (this, other) in [(a, b), (b, a)] {
            hub.reliable_tail.remove(&(this, other));
            if hub.members.contains_key(&other)
                && let Some(member) = hub.members.get_mut(&this)
            {
                member.links.push(LinkEvent::Up(other));
            }
        }
    }

    /// Makes every packet between `a` and `b` vanish while both links stay up, as when a
    /// player's network drops without its WebRTC stack (or the lobby) noticing yet: only the
    /// silence tells. Undone by [`MemoryNetwork::unsilence`]; peers that join later (a rejoin
    /// is a new id) are not silenced.
    pub fn silence(&self, a: PeerId, b: PeerId) {
        if a != b {
            self.hub().silenced.insert(pair(a, b));
        }
    }

    /// Lets packets between `a` and `b` through again after [`MemoryNetwork::silence`].
    pub fn unsilence(&self, a: PeerId, b: PeerId) {
        self.hub().silenced.remove(&pair(a, b));
    }

    /// `observer` learns that a peer left only `by` after it did; meanwhile the gone peer's
    /// link looks up and silent. A WebRTC stack does this when a peer vanishes without closing
    /// its connection (ICE gives up after seconds), and two observers may learn of one
    /// departure seconds apart.
    pub fn delay_departures(&self, observer: PeerId, by: Duration) {
        self.hub().departure_delays.insert(observer, by);
    }

    /// The next packet `from` sends `to` on the reliable channel vanishes, as a WebRTC stack
    /// can lose a new channel's first message.
    pub fn lose_next_reliable(&self, from: PeerId, to: PeerId) {
        self.hub().lose_next.insert((from, to));
    }

    /// Moves the clock forward. Packets are delivered once the clock has reached their time.
    pub fn advance(&self, by: Duration) {
        if let Clock::Manual(now) = &mut self.hub().clock {
            *now += by;
        }
    }

    /// Follows the wall clock from now on, for apps that run freely.
    pub fn use_real_time(&self) {
        let mut hub = self.hub();
        let now = hub.now();
        hub.clock = Clock::Real(Instant::now() - now);
    }

    /// The network's current time.
    pub fn now(&self) -> Duration {
        self.hub().now()
    }

    /// Adds a peer: every peer already on the network and the new one see a link come up.
    pub fn join(&self) -> MemoryTransport {
        let id = self.hub().add_member(Vec::new());
        MemoryTransport {
            network: self.clone(),
            id,
            closed: false,
        }
    }

    /// Peers currently on the network.
    pub fn peers(&self) -> Vec<PeerId> {
        self.hub().members.keys().copied().collect()
    }
}

/// One peer's end of a [`MemoryNetwork`].
#[derive(Debug)]
pub struct MemoryTransport {
    network: MemoryNetwork,
    id: PeerId,
    closed: bool,
}

impl MemoryTransport {
    /// This peer's id.
    pub fn id(&self) -> PeerId {
        self.id
    }
}

impl Transport for MemoryTransport {
    fn receive(&mut self, _now: Duration, io: &mut TransportIo) {
        if self.closed {
            return;
        }
        let mut hub = self.network.hub();
        let now = hub.now();
        let Some(member) = hub.members.get_mut(&self.id) else {
            return;
        };
        io.links.append(&mut member.links);
        member.late_departures.retain(|late| {
            let due = late.at <= now;
            if due {
                io.links.push(LinkEvent::Down(late.peer));
            }
            !due
        });
        while member
            .inbox
            .peek()
            .is_some_and(|Reverse(next)| next.deliver_at <= now)
        {
            let Reverse(scheduled) = member.inbox.pop().expect("peeked");
            io.incoming.push(Packet {
                peer: scheduled.from,
                channel: scheduled.channel,
                bytes: scheduled.bytes,
            });
        }
    }

    fn send(&mut self, io: &mut TransportIo) {
        if self.closed {
            io.outgoing.clear();
            return;
        }
        let mut hub = self.network.hub();
        for packet in io.outgoing.drain(..) {
            debug_assert!(!packet.bytes.is_empty());
            hub.route(self.id, packet);
        }
    }

    fn state(&self) -> SocketState {
        if self.closed {
            SocketState::Closed
        } else {
            SocketState::Connected(self.id)
        }
    }

    fn close(&mut self) {
        if !self.closed {
            self.closed = true;
            self.network.hub().leave(self.id);
        }
    }

    /// Leaves and joins again under a new id: this peer sees every old link go down, then the
    /// links to everyone come up as new ones.
    fn rejoin(&mut self) -> bool {
        let mut hub = self.network.hub();
        let downs = hub
            .members
            .keys()
            .filter(|peer| **peer != self.id)
            .map(|peer| LinkEvent::Down(*peer))
            .collect();
        hub.leave(self.id);
        self.id = hub.add_member(downs);
        self.closed = false;
        true
    }
}

impl Drop for MemoryTransport {
    fn drop(&mut self) {
        self.close();
    }
}

#[cfg(test)]
mod tests;
