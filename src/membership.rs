//! Who belongs to the session, in what order of seniority, and so who is host; without I/O.
//!
//! The host must be one peer that every peer agrees on, that stays host while it is there (a
//! joiner never takes over), and that every other peer can reach. The rule:
//!
//! - A peer that joins a room first waits [`SessionConfig::settle_time`] to meet others. If it
//!   meets a member of a session it joins that session, ranked after every member it knows
//!   (rank = highest known + 1). If it meets no one it *founds* a session, rank 0, stamped with
//!   its wall clock; peers that start together defer to the lowest id among them, so one founds
//!   and the others join it.
//! - Every ranked peer announces its standing (session, rank), the peers it is connected to and
//!   the host it sees, to every peer, whenever one of them changes.
//! - The host is the most senior member (lowest rank, then lowest id) that is connected to every
//!   member of the session this peer knows of: its own peers, and the peers its peers list,
//!   once they have been known for [`SessionConfig::mesh_grace`] (time for a mesh to form).
//!   In a full mesh that is the most senior member. In a partial mesh (A–B and B–C up, A–C
//!   never) every peer picks B, which reaches everyone; if no member reaches everyone each peer
//!   falls back to the most senior one it reaches, and the game sees two hosts until the mesh
//!   heals. A newcomer follows the host its senior peers name until its own view has formed.
//! - Two sessions that meet (two peers that founded alone, a room split by a lost lobby) merge
//!   into the older one (earlier founding time, then lower founder id): every member of the
//!   younger one re-ranks after the older one's members and drops its old world (see
//!   [`MembershipEvent::Merged`]).
//!
//! Departures need no agreement: each peer drops a departed member from its own view when its
//! link goes down or times out, and peers that notice seconds apart converge on the same host.
//! A member announcing a standing cannot be checked: election trusts members as much as the
//! rest of the protocol does (see docs/threat-model.md).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use bytes::Bytes;

use crate::error::InputError;
use crate::peer::PeerId;
use crate::session::SessionConfig;
use crate::wire::{Reader, WireError};

/// Kind of the membership announcement (reliable).
pub(crate) const KIND_MEMBERSHIP: u16 = 3;
/// Most peers one announcement may list: far above any room a mesh can hold.
const MAX_LINKS: u64 = 1024;
/// Version byte of the announcement.
const VERSION: u8 = 1;
/// How many peers whose link went down are remembered (for `mesh_grace` each).
const MAX_DEPARTED: usize = 1024;
/// An unranked peer defers to a connected unranked peer with a lower id for at most this many
/// settle times, so a peer that hangs while joining cannot keep a room without a host.
const FOUNDER_WAIT: u32 = 3;

/// A session: the founder and when it founded it (Unix milliseconds, its own clock). Orders
/// older sessions first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct SessionKey {
    pub(crate) founded_unix_ms: u64,
    pub(crate) founder: PeerId,
}

/// A member's place in its session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Standing {
    pub(crate) session: SessionKey,
    /// 0 for the founder; each joiner ranks after every member it knew of.
    pub(crate) rank: u32,
}

/// What a ranked member tells every peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Announcement {
    pub(crate) standing: Standing,
    /// The host it sees.
    pub(crate) host: Option<PeerId>,
    /// The peers it is connected to.
    pub(crate) links: Vec<PeerId>,
}

impl Announcement {
    pub(crate) fn encode(&self) -> Bytes {
        let mut out = Vec::with_capacity(48 + 16 * self.links.len());
        out.push(VERSION);
        out.extend_from_slice(&self.standing.session.founded_unix_ms.to_le_bytes());
        out.extend_from_slice(&self.standing.session.founder.0.to_le_bytes());
        out.extend_from_slice(&self.standing.rank.to_le_bytes());
        match self.host {
            Some(host) => {
                out.push(1);
                out.extend_from_slice(&host.0.to_le_bytes());
            }
            None => out.push(0),
        }
        crate::wire::put_varint(&mut out, self.links.len() as u64);
        for link in &self.links {
            out.extend_from_slice(&link.0.to_le_bytes());
        }
        Bytes::from(out)
    }

    pub(crate) fn decode(body: &[u8]) -> Result<Self, WireError> {
        let mut reader = Reader::new(body);
        if reader.u8()? != VERSION {
            return Err(WireError::OutOfRange("membership version"));
        }
        let founded_unix_ms = reader.u64()?;
        let founder = PeerId(u128::from_le_bytes(reader.array()?));
        let rank = reader.u32()?;
        let host = match reader.u8()? {
            0 => None,
            1 => Some(PeerId(u128::from_le_bytes(reader.array()?))),
            _ => return Err(WireError::OutOfRange("membership host flag")),
        };
        let count = reader.varint_max(MAX_LINKS, "membership links")?;
        // Bounded by the bytes actually present, not by what the count claims.
        let mut links = Vec::with_capacity((count as usize).min(reader.remaining() / 16));
        for _ in 0..count {
            links.push(PeerId(u128::from_le_bytes(reader.array()?)));
        }
        if !reader.is_empty() {
            return Err(WireError::OutOfRange("membership trailing bytes"));
        }
        Ok(Self {
            standing: Standing {
                session: SessionKey {
                    founded_unix_ms,
                    founder,
                },
                rank,
            },
            host,
            links,
        })
    }
}

/// A moment in this peer's membership, for the layer above.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MembershipEvent {
    /// Nobody was there: this peer founded a session.
    Founded,
    /// This peer joined a session it met while unranked.
    Joined,
    /// This peer's session met an older one and joined it: its world entities belong to the
    /// session that lost and must go.
    Merged { from: SessionKey, into: SessionKey },
}

#[derive(Debug)]
struct Member {
    /// When this peer connected to it.
    since: Duration,
    announced: Option<Announcement>,
}

/// This peer's view of the session.
#[derive(Debug, Default)]
pub(crate) struct Membership {
    local: Option<PeerId>,
    /// When `local` was assigned.
    local_since: Duration,
    standing: Option<Standing>,
    /// When this peer took its current standing.
    standing_since: Duration,
    /// Connected, verified peers.
    members: BTreeMap<PeerId, Member>,
    /// Peers named in members' lists, with when they were first named.
    heard_of: BTreeMap<PeerId, Duration>,
    /// Peers whose link went down here, with when: for `mesh_grace` they do not count as known
    /// through others, whose lists may name them until they notice too. Still listed after
    /// that, they are there and this link is what broke: a partial mesh.
    departed: BTreeMap<PeerId, Duration>,
    host: Option<PeerId>,
    /// Our announcement changed: send it to everyone.
    announce_all: bool,
    /// Peers that connected since our last announcement.
    announce_to: Vec<PeerId>,
    events: Vec<MembershipEvent>,
}

impl Membership {
    /// Takes this frame's local id and connected peers. A new local id (a rejoin) starts over:
    /// the peer is a newcomer again.
    pub(crate) fn sync_peers(
        &mut self,
        now: Duration,
        config: &SessionConfig,
        local: Option<PeerId>,
        connected: impl IntoIterator<Item = PeerId>,
    ) {
        if local != self.local {
            *self = Self {
                local,
                local_since: now,
                ..Self::default()
            };
        }
        let connected: BTreeSet<PeerId> = connected.into_iter().collect();
        let gone: Vec<PeerId> = self
            .members
            .keys()
            .filter(|peer| !connected.contains(peer))
            .copied()
            .collect();
        for peer in gone {
            self.members.remove(&peer);
            self.remember_departed(peer, now);
            self.announce_all = true;
        }
        for peer in connected {
            if self.members.contains_key(&peer) {
                continue;
            }
            self.members.insert(
                peer,
                Member {
                    since: now,
                    announced: None,
                },
            );
            self.departed.remove(&peer);
            self.announce_all = true;
            self.announce_to.push(peer);
        }
        self.departed
            .retain(|_, at| now.saturating_sub(*at) < config.mesh_grace);
    }

    fn remember_departed(&mut self, peer: PeerId, now: Duration) {
        if self.departed.len() >= MAX_DEPARTED
            && let Some(oldest) = self
                .departed
                .iter()
                .min_by_key(|(_, at)| **at)
                .map(|(peer, _)| *peer)
        {
            self.departed.remove(&oldest);
        }
        self.departed.insert(peer, now);
    }

    /// Reads a member's announcement. From a peer that is not connected it is ignored.
    pub(crate) fn handle_announcement(
        &mut self,
        peer: PeerId,
        body: &[u8],
    ) -> Result<(), InputError> {
        let mut announcement = Announcement::decode(body).map_err(InputError::Malformed)?;
        let Some(member) = self.members.get_mut(&peer) else {
            return Ok(());
        };
        announcement.links.retain(|link| *link != peer);
        member.announced = Some(announcement);
        Ok(())
    }

    /// Takes a standing if this peer has none (or meets an older session), then elects the
    /// host. `unix_ms` is the wall clock, used only to stamp a session this peer founds.
    pub(crate) fn update(&mut self, now: Duration, unix_ms: u64, config: &SessionConfig) {
        self.refresh_heard_of(now);
        if let Some(local) = self.local {
            self.take_standing(now, unix_ms, config, local);
        }
        let host = self.elect(now, config);
        if host != self.host {
            self.host = host;
            self.announce_all = true;
        }
    }

    fn refresh_heard_of(&mut self, now: Duration) {
        let named: BTreeSet<PeerId> = self
            .members
            .values()
            .filter_map(|member| member.announced.as_ref())
            .flat_map(|announced| announced.links.iter().copied())
            .collect();
        self.heard_of.retain(|peer, _| named.contains(peer));
        for peer in named {
            self.heard_of.entry(peer).or_insert(now);
        }
    }

    fn take_standing(
        &mut self,
        now: Duration,
        unix_ms: u64,
        config: &SessionConfig,
        local: PeerId,
    ) {
        let best = self
            .members
            .values()
            .filter_map(|member| member.announced.as_ref())
            .map(|announced| announced.standing.session)
            .min();
        match (self.standing, best) {
            (None, Some(session)) => {
                self.join(now, session);
                self.events.push(MembershipEvent::Joined);
            }
            (None, None) if self.may_found(now, config, local) => {
                self.standing = Some(Standing {
                    session: SessionKey {
                        founded_unix_ms: unix_ms,
                        founder: local,
                    },
                    rank: 0,
                });
                self.standing_since = now;
                self.announce_all = true;
                self.events.push(MembershipEvent::Founded);
            }
            (Some(mine), Some(session)) if session < mine.session => {
                self.join(now, session);
                self.events.push(MembershipEvent::Merged {
                    from: mine.session,
                    into: session,
                });
            }
            _ => {}
        }
    }

    fn may_found(&self, now: Duration, config: &SessionConfig, local: PeerId) -> bool {
        let waited = now.saturating_sub(self.local_since);
        if waited < config.settle_time {
            return false;
        }
        let lower_newcomer = self
            .members
            .iter()
            .any(|(peer, member)| *peer < local && member.announced.is_none());
        !lower_newcomer || waited >= config.settle_time * FOUNDER_WAIT
    }

    fn join(&mut self, now: Duration, session: SessionKey) {
        let highest = self
            .members
            .values()
            .filter_map(|member| member.announced.as_ref())
            .filter(|announced| announced.standing.session == session)
            .map(|announced| announced.standing.rank)
            .max()
            .unwrap_or(0);
        self.standing = Some(Standing {
            session,
            rank: highest.saturating_add(1),
        });
        self.standing_since = now;
        self.announce_all = true;
    }

    /// The rule of the module docs, applied to this peer's view.
    fn elect(&self, now: Duration, config: &SessionConfig) -> Option<PeerId> {
        let standing = self.standing?;
        let local = self.local?;
        let mut candidates: Vec<(u32, PeerId)> = vec![(standing.rank, local)];
        candidates.extend(
            self.session_members(standing.session)
                .map(|(peer, _, announced)| (announced.standing.rank, peer)),
        );
        candidates.sort_unstable();
        if now.saturating_sub(self.standing_since) < config.mesh_grace
            && let Some(named) = self.named_by_seniors(standing, local)
        {
            return named;
        }
        let grace = config.mesh_grace;
        let mut required: BTreeSet<PeerId> = self
            .session_members(standing.session)
            .filter(|(_, member, _)| now.saturating_sub(member.since) >= grace)
            .map(|(peer, _, _)| peer)
            .collect();
        required.extend(
            self.heard_of
                .iter()
                .filter(|(peer, since)| {
                    **peer != local
                        && !self.members.contains_key(peer)
                        && !self.departed.contains_key(peer)
                        && now.saturating_sub(**since) >= grace
                })
                .map(|(peer, _)| *peer),
        );
        let reaches_all = |candidate: PeerId| {
            required.iter().all(|peer| {
                *peer == candidate
                    || if candidate == local {
                        self.members.contains_key(peer)
                    } else {
                        self.members
                            .get(&candidate)
                            .and_then(|member| member.announced.as_ref())
                            .is_some_and(|announced| announced.links.contains(peer))
                    }
            })
        };
        candidates
            .iter()
            .map(|(_, peer)| *peer)
            .find(|peer| reaches_all(*peer))
            .or(candidates.first().map(|(_, peer)| *peer))
    }

    /// For a newcomer to the session: the host its most senior peer names, if this peer reaches
    /// it (`Some(None)` while it does not yet); `None` when no senior peer names one.
    fn named_by_seniors(&self, standing: Standing, local: PeerId) -> Option<Option<PeerId>> {
        let (_, _, senior) = self
            .session_members(standing.session)
            .filter(|(_, _, announced)| announced.standing.rank < standing.rank)
            .min_by_key(|(peer, _, announced)| (announced.standing.rank, *peer))?;
        let named = senior.host?;
        Some((named == local || self.members.contains_key(&named)).then_some(named))
    }

    fn session_members(
        &self,
        session: SessionKey,
    ) -> impl Iterator<Item = (PeerId, &Member, &Announcement)> {
        self.members.iter().filter_map(move |(peer, member)| {
            let announced = member.announced.as_ref()?;
            (announced.standing.session == session).then_some((*peer, member, announced))
        })
    }

    /// The host, once this peer has a standing.
    pub(crate) fn host(&self) -> Option<PeerId> {
        self.host
    }

    /// The member next in line: the most senior member of the session other than the host (this
    /// peer included), which every peer elects if the host leaves a full mesh. `None` without a
    /// host or another member.
    pub(crate) fn successor(&self) -> Option<PeerId> {
        let standing = self.standing?;
        let host = self.host?;
        std::iter::once((standing.rank, self.local?))
            .chain(
                self.session_members(standing.session)
                    .map(|(peer, _, announced)| (announced.standing.rank, peer)),
            )
            .filter(|(_, peer)| *peer != host)
            .min()
            .map(|(_, peer)| peer)
    }

    /// This peer's standing, once it has one.
    #[cfg(test)]
    pub(crate) fn standing(&self) -> Option<Standing> {
        self.standing
    }

    /// A connected peer's standing, as it announced it.
    #[cfg(test)]
    pub(crate) fn standing_of(&self, peer: PeerId) -> Option<Standing> {
        self.members
            .get(&peer)?
            .announced
            .as_ref()
            .map(|announced| announced.standing)
    }

    /// Announcements to send: to everyone when ours changed, else to peers that just connected.
    pub(crate) fn poll_transmit(&mut self, mut send: impl FnMut(PeerId, Bytes)) {
        let Some(standing) = self.standing else {
            self.announce_to.clear();
            return;
        };
        let targets: Vec<PeerId> = if std::mem::take(&mut self.announce_all) {
            self.members.keys().copied().collect()
        } else {
            self.announce_to.clone()
        };
        self.announce_to.clear();
        if targets.is_empty() {
            return;
        }
        let body = Announcement {
            standing,
            host: self.host,
            links: self.members.keys().copied().collect(),
        }
        .encode();
        for peer in targets {
            send(peer, body.clone());
        }
    }

    pub(crate) fn drain_events(&mut self) -> std::vec::Drain<'_, MembershipEvent> {
        self.events.drain(..)
    }
}

#[cfg(test)]
mod tests;
