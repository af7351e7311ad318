//! Players who lost their connection without saying goodbye, kept for a while so that they can
//! come back as themselves (with their entities) under the new id their rejoin gets.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::identity::PlayerId;
use crate::peer::PeerId;

/// At most this many players wait to resume; beyond it the longest-waiting one is given up.
const MAX_SUSPENDED: usize = 1024;

#[derive(Debug, Clone, Copy)]
struct Suspended {
    player: PlayerId,
    since: Duration,
}

/// Which departed players may still resume, and what changed this frame.
#[derive(Debug, Default, Clone)]
pub(crate) struct Continuity {
    suspended: BTreeMap<PeerId, Suspended>,
    /// This frame: players that came back, as (the id they had, the id they have now).
    pub(crate) resumed: Vec<(PeerId, PeerId)>,
    /// This frame: ids of players whose grace ran out; they are gone for good.
    pub(crate) expired: Vec<PeerId>,
    /// Given up between frames (a close, the bound): reported with the next frame's expiries.
    expiring: Vec<PeerId>,
}

impl Continuity {
    /// Starts a frame: forgets last frame's news and gives up players waiting longer than
    /// `grace`.
    pub(crate) fn begin_frame(&mut self, now: Duration, grace: Duration) {
        self.resumed.clear();
        self.expired = std::mem::take(&mut self.expiring);
        let expired: Vec<PeerId> = self
            .suspended
            .iter()
            .filter(|(_, s)| now.saturating_sub(s.since) >= grace)
            .map(|(peer, _)| *peer)
            .collect();
        for peer in expired {
            self.suspended.remove(&peer);
            self.expired.push(peer);
        }
    }

    /// The player a suspended peer was.
    pub(crate) fn player_of(&self, peer: PeerId) -> Option<PlayerId> {
        self.suspended.get(&peer).map(|suspended| suspended.player)
    }

    /// `peer` (proven to be `player`) went without a goodbye.
    pub(crate) fn suspend(&mut self, peer: PeerId, player: PlayerId, now: Duration) {
        if self.suspended.len() >= MAX_SUSPENDED
            && let Some(oldest) = self
                .suspended
                .iter()
                .min_by_key(|(_, s)| s.since)
                .map(|(peer, _)| *peer)
        {
            self.suspended.remove(&oldest);
            self.expiring.push(oldest);
        }
        self.suspended
            .insert(peer, Suspended { player, since: now });
    }

    /// `peer` connected as `player`: if that player was waiting, it resumes; returns the id it
    /// had.
    pub(crate) fn resume(&mut self, peer: PeerId, player: PlayerId) -> Option<PeerId> {
        let previous = self
            .suspended
            .iter()
            .find(|(_, s)| s.player == player)
            .map(|(old, _)| *old)?;
        self.suspended.remove(&previous);
        self.resumed.push((previous, peer));
        Some(previous)
    }

    /// Whether `peer` left without a goodbye and its player may still come back.
    pub(crate) fn is_suspended(&self, peer: PeerId) -> bool {
        self.suspended.contains_key(&peer)
    }

    /// Forgets everyone, as when this peer leaves the room on purpose.
    pub(crate) fn clear(&mut self) {
        self.expiring.extend(self.suspended.keys().copied());
        self.suspended.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn a_player_resumes_under_its_new_id_within_the_grace_only() {
        let (alice, bob) = (PlayerId([1; 32]), PlayerId([2; 32]));
        let mut continuity = Continuity::default();
        continuity.suspend(PeerId(10), alice, S);
        continuity.suspend(PeerId(20), bob, S);
        continuity.begin_frame(3 * S, 10 * S);
        assert_eq!(continuity.resume(PeerId(11), alice), Some(PeerId(10)));
        assert_eq!(continuity.resumed, vec![(PeerId(10), PeerId(11))]);
        assert_eq!(continuity.resume(PeerId(12), alice), None, "once only");
        continuity.begin_frame(11 * S, 10 * S);
        assert!(continuity.resumed.is_empty());
        assert_eq!(continuity.expired, vec![PeerId(20)], "bob's grace ran out");
        assert_eq!(continuity.resume(PeerId(21), bob), None);
    }

    #[test]
    fn players_given_up_between_frames_are_reported_with_the_next_frame() {
        let mut continuity = Continuity::default();
        continuity.suspend(PeerId(10), PlayerId([1; 32]), S);
        continuity.clear(); // this peer leaves on purpose, at the end of a frame
        continuity.begin_frame(2 * S, 10 * S);
        assert_eq!(
            continuity.expired,
            vec![PeerId(10)],
            "its entities must go rather than stay suspended forever"
        );
    }
}
