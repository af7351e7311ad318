//! A room member that answers offers with garbage, through a lobby that relays anything (the
//! upstream matchbox_signaling server, not peersync-lobby, which refuses such signals): matchbox
//! 0.15 panics on it in the victims' socket threads. The victims' games keep running, report
//! the failure, and are back in the room, connected to each other, within seconds.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::process::{Watched, example_binary, free_port, poll_output, start_demo};
use crate::support::raw_member::RawMember;

/// Joins the room with a plain WebSocket and answers every offer with `answer`.
fn poison_offers(url: &str, victims: usize, answer: &str) {
    let mut intruder = RawMember::join(url, Duration::from_millis(200))
        .expect("the relay lobby accepts a WebSocket");
    let mut answered = 0;
    let deadline = Instant::now() + Duration::from_secs(20);
    while answered < victims {
        assert!(
            Instant::now() < deadline,
            "each of the {victims} members should have sent the newcomer an offer"
        );
        if let Some(sender) =
            intruder.next_offer("the lobby should keep the intruder's socket open")
        {
            intruder.signal(&sender, answer);
            answered += 1;
        }
    }
    intruder.leave();
}

#[test]
fn a_poisoned_answer_through_a_relaying_lobby_costs_the_victims_a_rejoin_not_the_game() {
    let port = free_port();
    let mut processes = vec![Watched::spawn(
        Command::new(example_binary(
            "baseline_signaling",
            "`cargo test --workspace` (an example of peersync-lobby)",
        ))
        .arg(format!("127.0.0.1:{port}")),
    )];
    poll_output(
        &mut processes,
        Duration::from_secs(20),
        "the relay lobby should listen",
        |p| p[0].said("listening on") > 0,
    );
    let url = format!("ws://127.0.0.1:{port}");
    processes.push(start_demo(&url, "hostile", 90));
    processes.push(start_demo(&url, "hostile", 90));
    poll_output(
        &mut processes,
        Duration::from_secs(60),
        "both demos should see each other",
        |p| p[1..].iter().all(|d| d.said("SEES 2 PLAYERS") > 0),
    );

    let marks: Vec<usize> = processes.iter().map(|p| p.seen.len()).collect();
    poison_offers(
        &format!("{url}/hostile"),
        2,
        r#"{"Answer":"not an sdp at all"}"#,
    );
    let attacked = Instant::now();
    let took = poll_output(
        &mut processes,
        Duration::from_secs(10),
        "both demos should survive, report the panic, rejoin and see each other again",
        |p| {
            p[1..].iter_mut().enumerate().all(|(i, demo)| {
                let after = demo.since(marks[i + 1]);
                let reported = after.iter().any(|l| l.contains("panicked"));
                let rejoined = after
                    .iter()
                    .position(|l| l.contains("panicked"))
                    .is_some_and(|at| {
                        // Back in the room: each sees the other again, as the same player.
                        after[at..]
                            .iter()
                            .any(|l| l.contains("SEES 2 PLAYERS") || l.contains("is back, as peer"))
                    });
                demo.running() && reported && rejoined
            })
        },
    );
    eprintln!(
        "both victims were back in the room {took:?} after the attack ({:?} since the poison was sent)",
        attacked.elapsed()
    );
    for (i, victim) in processes[1..].iter().enumerate() {
        for line in victim.since(marks[i + 1]) {
            if line.contains("panicked") || line.contains("SEES") {
                eprintln!("victim {i}: {line}");
            }
        }
    }
}
