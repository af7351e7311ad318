//! The lobby dies: the players already connected keep playing. It comes back: they rejoin it by
//! themselves, come back to each other as the same players, and a new player joins the running
//! session.

use std::time::{Duration, Instant};

use crate::support::process::{free_port, poll_output, start_demo, start_lobby};

/// Summary lines (`[bot ME] N players, …`) an output has since `from`, with N.
fn player_counts(lines: &[String]) -> Vec<usize> {
    lines
        .iter()
        .filter_map(|line| {
            let (_, rest) = line.strip_prefix("[bot ")?.split_once("] ")?;
            rest.split_once(" players, ")?.0.parse().ok()
        })
        .collect()
}

#[test]
fn players_keep_playing_without_the_lobby_and_a_new_one_joins_once_it_is_back() {
    let port = free_port();
    let url = format!("ws://127.0.0.1:{port}");
    let lobby = start_lobby(port, &[]);
    let mut demos = vec![
        start_demo(&url, "lost-lobby", 120),
        start_demo(&url, "lost-lobby", 120),
    ];
    poll_output(
        &mut demos,
        Duration::from_secs(30),
        "the two players should see each other",
        |demos| demos.iter().all(|d| d.said("SEES 2 PLAYERS") > 0),
    );

    lobby.signal("KILL");
    let marks: Vec<usize> = demos.iter().map(|d| d.seen.len()).collect();
    poll_output(
        &mut demos,
        Duration::from_secs(10),
        "without the lobby, both should go on seeing 2 players for 3 summaries in a row",
        |demos| {
            demos.iter().enumerate().all(|(i, d)| {
                let counts = player_counts(d.since(marks[i]));
                counts.len() >= 3 && counts.iter().all(|n| *n == 2)
            })
        },
    );

    let _lobby = start_lobby(port, &[]);
    let back = Instant::now();
    let marks: Vec<usize> = demos.iter().map(|d| d.seen.len()).collect();
    demos.push(start_demo(&url, "lost-lobby", 120));
    let took = poll_output(
        &mut demos,
        Duration::from_secs(20),
        "once the lobby is back, the two should rejoin it and find each other again as the same \
         players, and all three should see 3 players",
        |demos| {
            let recognised = demos[..2].iter().enumerate().all(|(i, d)| {
                d.since(marks[i])
                    .iter()
                    .any(|l| l.contains("is back, as peer"))
            });
            let marks = [marks[0], marks[1], 0];
            recognised
                && demos
                    .iter()
                    .enumerate()
                    .all(|(i, d)| player_counts(d.since(marks[i])).last() == Some(&3))
        },
    );
    eprintln!(
        "a new player joined the running session {took:?} after the lobby came back \
         ({:?} since it answered)",
        back.elapsed()
    );
}

/// The lobby closes the players' connections to it (here its idle timeout, shorter than the
/// players' keep-alive; in the field its message rate limit under churn) while it keeps
/// running: their peer connections stay up, but no new player could reach them. The lobby
/// probe asks the lobby whether it still has them (`/health?peer=`): they rejoin, come back to
/// each other as the same players, and a new player joins the running session.
#[test]
fn players_the_lobby_dropped_while_it_kept_running_rejoin_it_and_a_new_one_joins() {
    let port = free_port();
    let url = format!("ws://127.0.0.1:{port}");
    // matchbox sends a keep-alive every 10 s: every player goes idle for the lobby after 4 s.
    let _lobby = start_lobby(port, &["--idle-timeout-secs", "4"]);
    let mut demos = vec![
        start_demo(&url, "dropped-by-lobby", 120),
        start_demo(&url, "dropped-by-lobby", 120),
    ];
    poll_output(
        &mut demos,
        Duration::from_secs(30),
        "the two players should see each other",
        |demos| demos.iter().all(|d| d.said("SEES 2 PLAYERS") > 0),
    );
    let closed = Instant::now();
    poll_output(
        &mut demos,
        Duration::from_secs(20),
        "once the lobby dropped them, both should notice and rejoin it, and find each other \
         again as the same players",
        |demos| demos.iter().all(|d| d.said("is back, as peer") > 0),
    );
    eprintln!("both rejoined {:?} after they connected", closed.elapsed());
    let marks: Vec<usize> = demos.iter().map(|d| d.seen.len()).collect();
    demos.push(start_demo(&url, "dropped-by-lobby", 120));
    let took = poll_output(
        &mut demos,
        Duration::from_secs(30),
        "a new player should reach the two, and all three see 3 players",
        |demos| {
            let marks = [marks[0], marks[1], 0];
            demos
                .iter()
                .enumerate()
                .all(|(i, d)| player_counts(d.since(marks[i])).last() == Some(&3))
        },
    );
    eprintln!("a new player joined the running session in {took:?}");
}
