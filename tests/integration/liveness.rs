//! A peer that stops running (SIGSTOP: a hung process, a frozen laptop) is dropped by the others
//! within the peer timeout, not after the lobby's 30 s idle timeout; the world moves to a new
//! host; and when the stopped peer runs again it rejoins the room and comes back as the same
//! player. A killed host is replaced within a lobby round trip.

use std::time::Duration;

use crate::support::process::{Watched, poll_output, start_demo_with};
use peersync_lobby::{LobbyConfig, LobbyThread};

/// The demo's once-a-second summary: `[bot ME] N players, ball at (..) owned by X, host H`.
struct Summary {
    me: String,
    players: usize,
    ball_owner: Option<String>,
    host: String,
}

fn parse_summary(line: &str) -> Option<Summary> {
    let rest = line.strip_prefix("[bot ")?;
    let (me, rest) = rest.split_once("] ")?;
    let (players, rest) = rest.split_once(" players, ")?;
    let (ball, host) = rest.rsplit_once(", host ")?;
    let ball_owner = ball.split_once("owned by ").map(|(_, owner)| {
        if owner == "me" {
            me.to_owned()
        } else {
            owner.to_owned()
        }
    });
    Some(Summary {
        me: me.to_owned(),
        players: players.parse().ok()?,
        ball_owner,
        host: host.to_owned(),
    })
}

fn last_summary(lines: &[String]) -> Option<Summary> {
    lines.iter().rev().find_map(|line| parse_summary(line))
}

#[test]
fn a_stopped_host_is_replaced_within_seconds_and_rejoins_when_it_runs_again() {
    let lobby = LobbyThread::spawn(LobbyConfig::local()).unwrap();
    let url = format!("ws://{}", lobby.local_addr());
    let (mut demos, stopped) = three_demos(&url, "liveness-test");
    let host = last_summary(&demos[stopped].seen).unwrap().host;

    demos[stopped].signal("STOP");
    let marks: Vec<usize> = demos.iter().map(|d| d.seen.len()).collect();
    let took = poll_output(
        &mut demos,
        Duration::from_secs(12),
        "the two running demos should drop the stopped host (the lobby alone takes 30 s), \
         agree on a new host, and have it run the ball",
        |demos| {
            demos
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != stopped)
                .all(|(i, d)| {
                    last_summary(d.since(marks[i])).is_some_and(|s| {
                        s.players == 2
                            && s.host != host
                            && s.ball_owner.as_deref() == Some(s.host.as_str())
                    })
                })
        },
    );
    eprintln!("the stopped host was replaced after {took:?}");

    demos[stopped].signal("CONT");
    let marks: Vec<usize> = demos.iter().map(|d| d.seen.len()).collect();
    let took = poll_output(
        &mut demos,
        Duration::from_secs(40),
        "the resumed demo should notice its stall, rejoin under a new id, come back as the same \
         player on the others, and all three should see 3 players with one host again",
        |demos| {
            let resumed = demos[stopped].since(marks[stopped]);
            let rejoined = resumed.iter().any(|l| l.contains("rejoins the room"));
            let recognised = demos.iter().enumerate().all(|(i, d)| {
                i == stopped
                    || d.since(marks[i])
                        .iter()
                        .any(|l| l.contains("is back, as peer"))
            });
            let summaries: Vec<_> = demos
                .iter()
                .enumerate()
                .filter_map(|(i, d)| last_summary(d.since(marks[i])))
                .collect();
            rejoined
                && recognised
                && summaries.len() == 3
                && summaries.iter().all(|s| s.players == 3)
                && summaries.iter().all(|s| s.host == summaries[0].host)
                && summaries
                    .iter()
                    .all(|s| s.ball_owner.as_deref() == Some(s.host.as_str()))
                && summaries[stopped].me != host
        },
    );
    eprintln!("the stopped host was back as the same player {took:?} after it ran again");
}

/// Three demos that agree on a host, with the library's own peer timeout; returns them and the
/// host's index.
fn three_demos(url: &str, room: &str) -> (Vec<Watched>, usize) {
    let mut demos: Vec<Watched> = (0..3)
        .map(|_| start_demo_with(url, room, 120, &[]))
        .collect();
    poll_output(
        &mut demos,
        Duration::from_secs(60),
        "each demo should see 3 players and agree on the host",
        |demos| {
            let hosts: Vec<_> = demos
                .iter()
                .filter_map(|d| last_summary(&d.seen))
                .filter(|s| s.players == 3)
                .map(|s| s.host)
                .collect();
            hosts.len() == 3 && hosts[0] != "-" && hosts.iter().all(|h| *h == hosts[0])
        },
    );
    let host = last_summary(&demos[0].seen).unwrap().host;
    let index = demos
        .iter()
        .position(|d| last_summary(&d.seen).is_some_and(|s| s.me == host))
        .expect("the host is one of the demos");
    (demos, index)
}

#[test]
fn a_killed_host_is_replaced_within_two_seconds() {
    let lobby = LobbyThread::spawn(LobbyConfig::local()).unwrap();
    let url = format!("ws://{}", lobby.local_addr());
    let (mut demos, killed) = three_demos(&url, "kill-test");
    let host = last_summary(&demos[killed].seen).unwrap().host;
    demos[killed].signal("KILL");
    let marks: Vec<usize> = demos.iter().map(|d| d.seen.len()).collect();
    let took = poll_output(
        &mut demos,
        Duration::from_secs(5),
        "the two running demos should notice the killed host's connection close, agree on a \
         new host and have it run the ball",
        |demos| {
            demos
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != killed)
                .all(|(i, d)| {
                    d.since(marks[i])
                        .iter()
                        .any(|l| l.contains("lost its connection"))
                        && last_summary(d.since(marks[i])).is_some_and(|s| {
                            s.host != host && s.ball_owner.as_deref() == Some(s.host.as_str())
                        })
                })
        },
    );
    eprintln!("the killed host was replaced after {took:?} (summaries print once a second)");
}

#[test]
fn a_stopped_player_that_is_not_host_comes_back_as_itself_and_the_host_stays() {
    let lobby = LobbyThread::spawn(LobbyConfig::local()).unwrap();
    let url = format!("ws://{}", lobby.local_addr());
    let (mut demos, host_index) = three_demos(&url, "pause-test");
    let host = last_summary(&demos[host_index].seen).unwrap().host;
    let stopped = (host_index + 1) % 3;

    demos[stopped].signal("STOP");
    let marks: Vec<usize> = demos.iter().map(|d| d.seen.len()).collect();
    poll_output(
        &mut demos,
        Duration::from_secs(12),
        "the two running demos should drop the stopped player and keep their host",
        |demos| {
            demos
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != stopped)
                .all(|(i, d)| {
                    last_summary(d.since(marks[i]))
                        .is_some_and(|s| s.players == 2 && s.host == host)
                })
        },
    );

    demos[stopped].signal("CONT");
    let marks: Vec<usize> = demos.iter().map(|d| d.seen.len()).collect();
    let took = poll_output(
        &mut demos,
        Duration::from_secs(30),
        "the resumed player should rejoin, be recognised as the same player by the others, and \
         all three should see 3 players under the host they had before",
        |demos| {
            let recognised = demos.iter().enumerate().all(|(i, d)| {
                i == stopped
                    || d.since(marks[i])
                        .iter()
                        .any(|l| l.contains("is back, as peer"))
            });
            recognised
                && demos.iter().enumerate().all(|(i, d)| {
                    last_summary(d.since(marks[i])).is_some_and(|s| {
                        s.players == 3
                            && s.host == host
                            && s.ball_owner.as_deref() == Some(host.as_str())
                    })
                })
        },
    );
    eprintln!("a stopped player that is not host was back as itself {took:?} after it ran again");
}
