//! NAT traversal on one machine, with real NATs: every player sits in its own network namespace
//! behind a NAT namespace (iptables), and the lobby and a real coturn sit in a "public" one.
//!
//! ```text
//!   player 1 (10.0.1.2) ── nat1 (10.0.1.1 | 198.51.100.11) ──┐
//!                                                           bridge in pub: lobby + coturn
//!   player 2 (10.0.2.2) ── nat2 (10.0.2.1 | 198.51.100.12) ──┘   (198.51.100.1)
//! ```
//!
//! The players are headless demo processes run with `ip netns exec`; they see only their
//! private address, so they reach each other only through what the NATs let through. Needs
//! root, `ip netns` and coturn's `turnserver`: without them each test prints one line and passes.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::process::{Watched, demo_binary, lobby_binary, poll_output};

/// The "internet" side: the public namespace's bridge and the NATs' outside addresses.
const PUBLIC_IP: &str = "198.51.100.1";
const TURN_USER: &str = "player";
const TURN_PASS: &str = "not-a-secret";

/// How a NAT namespace maps and filters.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Nat {
    /// Endpoint-independent mapping and filtering: SNAT keeps the player's port (one player per
    /// NAT, so it never has to change it) and every UDP packet to the outside address is
    /// forwarded to the player, whoever sends it.
    FullCone,
    /// A new random port per destination (`MASQUERADE --random-fully`) and only replies let in:
    /// the address STUN reports is useless to the other player.
    Symmetric,
}

/// The namespaces of one test, deleted when dropped (also when the test fails), which deletes
/// their interfaces and rules with them.
struct Namespaces {
    prefix: String,
    created: Vec<String>,
}

impl Namespaces {
    fn name(&self, role: &str) -> String {
        format!("{}-{role}", self.prefix)
    }

    fn add(&mut self, role: &str) -> String {
        let name = self.name(role);
        run(&["ip", "netns", "add", &name]);
        self.created.push(name.clone());
        in_ns(&name, &["ip", "link", "set", "lo", "up"]);
        name
    }

    /// The public namespace and two players behind NATs of `kind`.
    fn build(tag: &str, kind: Nat) -> Namespaces {
        let mut spaces = Namespaces {
            prefix: format!("peersync{}{tag}", std::process::id()),
            created: Vec::new(),
        };
        let public = spaces.add("pub");
        in_ns(&public, &["ip", "link", "add", "bridge0", "type", "bridge"]);
        in_ns(
            &public,
            &[
                "ip",
                "addr",
                "add",
                &format!("{PUBLIC_IP}/24"),
                "dev",
                "bridge0",
            ],
        );
        in_ns(&public, &["ip", "link", "set", "bridge0", "up"]);
        for i in 1..=2 {
            let nat = spaces.add(&format!("nat{i}"));
            let player = spaces.add(&format!("player{i}"));
            let outside = format!("198.51.100.1{i}");
            let gateway = format!("10.0.{i}.1");
            let inside = format!("10.0.{i}.2");
            // Each veth is made in the NAT's namespace with its other end moved straight to its
            // neighbour's, so names never meet in the root namespace (tests run in parallel).
            let uplink = format!("nat{i}");
            in_ns(
                &nat,
                &[
                    "ip", "link", "add", "wan", "type", "veth", "peer", "name", &uplink, "netns",
                    &public,
                ],
            );
            in_ns(
                &public,
                &["ip", "link", "set", &uplink, "master", "bridge0", "up"],
            );
            in_ns(
                &nat,
                &["ip", "addr", "add", &format!("{outside}/24"), "dev", "wan"],
            );
            in_ns(&nat, &["ip", "link", "set", "wan", "up"]);
            in_ns(
                &nat,
                &[
                    "ip", "link", "add", "lan", "type", "veth", "peer", "name", "eth0", "netns",
                    &player,
                ],
            );
            in_ns(
                &nat,
                &["ip", "addr", "add", &format!("{gateway}/24"), "dev", "lan"],
            );
            in_ns(&nat, &["ip", "link", "set", "lan", "up"]);
            in_ns(
                &player,
                &["ip", "addr", "add", &format!("{inside}/24"), "dev", "eth0"],
            );
            in_ns(&player, &["ip", "link", "set", "eth0", "up"]);
            in_ns(&player, &["ip", "route", "add", "default", "via", &gateway]);
            in_ns(&nat, &["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
            let nat_rule = |rule: &[&str]| in_ns(&nat, &[&["iptables"][..], rule].concat());
            match kind {
                Nat::FullCone => {
                    nat_rule(&[
                        "-t",
                        "nat",
                        "-A",
                        "POSTROUTING",
                        "-o",
                        "wan",
                        "-j",
                        "SNAT",
                        "--to-source",
                        &outside,
                    ]);
                    nat_rule(&[
                        "-t",
                        "nat",
                        "-A",
                        "PREROUTING",
                        "-i",
                        "wan",
                        "-p",
                        "udp",
                        "-j",
                        "DNAT",
                        "--to-destination",
                        &inside,
                    ]);
                }
                Nat::Symmetric => {
                    nat_rule(&[
                        "-t",
                        "nat",
                        "-A",
                        "POSTROUTING",
                        "-o",
                        "wan",
                        "-j",
                        "MASQUERADE",
                        "--random-fully",
                    ]);
                    nat_rule(&[
                        "-A",
                        "FORWARD",
                        "-i",
                        "wan",
                        "-m",
                        "conntrack",
                        "!",
                        "--ctstate",
                        "ESTABLISHED,RELATED",
                        "-j",
                        "DROP",
                    ]);
                }
            }
        }
        spaces
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for name in self.created.drain(..).rev() {
            let _ = Command::new("ip")
                .args(["netns", "del", &name])
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// Runs a setup command, failing the test with its output if it fails.
fn run(command: &[&str]) {
    let output = Command::new(command[0])
        .args(&command[1..])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    assert!(
        output.status.success(),
        "{command:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

fn in_ns(namespace: &str, command: &[&str]) {
    run(&[&["ip", "netns", "exec", namespace][..], command].concat());
}

/// Why these tests cannot run here, if they cannot: they need to create namespaces (root) and
/// coturn's `turnserver`.
fn unsupported(test: &str) -> Option<String> {
    // Named after the test: the tests run in parallel.
    let probe = format!("peersync{}{test}", std::process::id());
    match Command::new("ip").args(["netns", "add", &probe]).output() {
        Ok(output) if output.status.success() => {
            let _ = Command::new("ip").args(["netns", "del", &probe]).status();
        }
        Ok(output) => {
            return Some(format!(
                "`ip netns add` failed ({})",
                String::from_utf8_lossy(&output.stderr).trim()
            ));
        }
        Err(e) => return Some(format!("cannot run `ip`: {e}")),
    }
    if Command::new("turnserver")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_err()
    {
        return Some("coturn's `turnserver` is not installed".to_owned());
    }
    if Command::new("iptables").arg("--version").output().is_err() {
        return Some("`iptables` is not installed".to_owned());
    }
    None
}

/// Prints the one line that says why a test did not run, and says whether it may run.
fn supported(test: &str) -> bool {
    match unsupported(test) {
        None => true,
        Some(reason) => {
            println!("SKIPPED nat::{test}: {reason} (needs root, ip netns, iptables and coturn)");
            false
        }
    }
}

/// The public side: the lobby and coturn (STUN always, TURN for [`TURN_USER`]), ready.
struct Public {
    _lobby: Watched,
    coturn: Watched,
    _userdb: TempFile,
}

/// A file removed when dropped.
struct TempFile(PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn start_public(spaces: &Namespaces) -> Public {
    let public = spaces.name("pub");
    let lobby = Watched::spawn(
        Command::new("ip")
            .args(["netns", "exec", &public])
            .arg(lobby_binary())
            .args(["--bind", &format!("{PUBLIC_IP}:3536")]),
    );
    // Its own user database: the default one under /var/lib/turn is the system's.
    let userdb = TempFile(std::env::temp_dir().join(format!("{}-turndb", spaces.prefix)));
    let coturn = Watched::spawn(
        Command::new("ip")
            .args(["netns", "exec", &public, "turnserver", "-n", "-v"])
            .arg(format!("--listening-ip={PUBLIC_IP}"))
            .arg(format!("--relay-ip={PUBLIC_IP}"))
            .args([
                "--listening-port=3478",
                "--realm=peersync.test",
                "--lt-cred-mech",
                &format!("--user={TURN_USER}:{TURN_PASS}"),
                "--no-tls",
                "--no-dtls",
                "--no-cli",
                // The players' private addresses: ICE pairs a relay with the other player's host
                // candidate too, and coturn closes an allocation for good when a send to an
                // unreachable peer fails, so those pairs must be refused (403) instead. Every
                // production coturn should deny private ranges anyway (docs/turn.md).
                "--denied-peer-ip=10.0.0.0-10.255.255.255",
                // rtc-turn 0.21 drops a channel binding on a stale nonce instead of refreshing
                // it (docs/turn.md): nonces that never go stale avoid it.
                "--stale-nonce=0",
                "--log-file=stdout",
                "--simple-log",
            ])
            .arg(format!("--userdb={}", userdb.0.display())),
    );
    let mut processes = [lobby, coturn];
    poll_output(
        &mut processes,
        Duration::from_secs(20),
        "the lobby and coturn should be listening",
        |p| p[0].said("lobby listening on") > 0 && p[1].said("Total General servers") > 0,
    );
    let [lobby, coturn] = processes;
    Public {
        _lobby: lobby,
        coturn,
        _userdb: userdb,
    }
}

/// ICE server flags for the demo.
enum Ice {
    StunOnly,
    StunAndTurn,
}

/// A headless demo in player namespace `i`.
fn start_player(spaces: &Namespaces, i: usize, room: &str, ice: Ice, rust_log: &str) -> Watched {
    let mut command = Command::new("ip");
    command
        .args(["netns", "exec", &spaces.name(&format!("player{i}"))])
        .arg(demo_binary())
        .args([
            "--headless",
            "--room",
            room,
            "--lobby",
            &format!("ws://{PUBLIC_IP}:3536"),
            "--quit-after",
            "90",
            "--stun",
            &format!("stun:{PUBLIC_IP}:3478"),
        ])
        .env("RUST_LOG", rust_log);
    if let Ice::StunAndTurn = ice {
        command.args([
            "--turn",
            &format!("turn:{PUBLIC_IP}:3478"),
            "--turn-user",
            TURN_USER,
            "--turn-pass",
            TURN_PASS,
        ]);
    }
    Watched::spawn(&mut command)
}

const DEMO_LOG: &str = "warn,bevy_peersync=info";

#[test]
fn full_cone_nats_connect_with_stun_only() {
    if !supported("full_cone_nats_connect_with_stun_only") {
        return;
    }
    let spaces = Namespaces::build("c", Nat::FullCone);
    let _public = start_public(&spaces);
    let mut players = [
        start_player(&spaces, 1, "cone", Ice::StunOnly, DEMO_LOG),
        start_player(&spaces, 2, "cone", Ice::StunOnly, DEMO_LOG),
    ];
    poll_output(
        &mut players,
        Duration::from_secs(30),
        "behind full-cone NATs with STUN, each player should see both squares and be reached \
         directly",
        |p| {
            p.iter()
                .all(|p| p.said("SEES 2 PLAYERS") > 0 && p.said("DIRECTLY") > 0)
        },
    );
    assert!(
        players.iter().all(|p| p.said("THROUGH A RELAY") == 0),
        "no TURN server was configured, so nothing can be relayed"
    );
}

#[test]
fn symmetric_nats_without_turn_do_not_connect() {
    if !supported("symmetric_nats_without_turn_do_not_connect") {
        return;
    }
    let spaces = Namespaces::build("s", Nat::Symmetric);
    let _public = start_public(&spaces);
    // The plugin never hears of a connection that did not open (matchbox reports peers only
    // once connected); webrtc-rs's ICE agent is what says the checks failed.
    let log = format!("{DEMO_LOG},rtc_ice::agent=info");
    let mut players = [
        start_player(&spaces, 1, "symmetric", Ice::StunOnly, &log),
        start_player(&spaces, 2, "symmetric", Ice::StunOnly, &log),
    ];
    poll_output(
        &mut players,
        Duration::from_secs(20),
        "both players should join the room",
        |p| p.iter().all(|p| p.said("joined the room as") > 0),
    );
    // ICE gives up about 30 s after it starts checking (webrtc-rs's disconnected plus failed
    // timeouts); nothing else bounds the attempt.
    let waited = poll_output(
        &mut players,
        Duration::from_secs(60),
        "behind symmetric NATs without TURN, ICE should report its checks failed",
        |p| {
            p.iter()
                .all(|p| p.said("Setting new connection state: Failed") > 0)
        },
    );
    for (i, player) in players.iter().enumerate() {
        assert!(
            player.said("SEES 2 PLAYERS") == 0 && player.said("REACHES") == 0,
            "player {} connected through symmetric NATs without a relay, which they cannot: \
             is the NAT really symmetric? Its output:\n{}",
            i + 1,
            player.seen.join("\n")
        );
    }
    println!("symmetric NATs without TURN: ICE failed after {waited:?}, nobody connected");
}

/// Relay allocations on coturn for [`TURN_USER`], from its log (one line per allocation).
fn allocations(coturn: &Watched) -> usize {
    coturn.said(&format!(
        "user <{TURN_USER}>: incoming packet ALLOCATE processed, success"
    ))
}

#[test]
fn symmetric_nats_get_turn_relays_with_the_configured_credentials() {
    if !supported("symmetric_nats_get_turn_relays_with_the_configured_credentials") {
        return;
    }
    let spaces = Namespaces::build("a", Nat::Symmetric);
    let public = start_public(&spaces);
    let players = vec![
        start_player(&spaces, 1, "allocate", Ice::StunAndTurn, DEMO_LOG),
        start_player(&spaces, 2, "allocate", Ice::StunAndTurn, DEMO_LOG),
    ];
    let Public {
        _lobby,
        coturn,
        _userdb,
    } = public;
    let mut processes: Vec<Watched> = [coturn].into_iter().chain(players).collect();
    poll_output(
        &mut processes,
        Duration::from_secs(30),
        "coturn should allocate a relay for each player, authenticated with the flags' user",
        |p| allocations(&p[0]) >= 2,
    );
}

/// What the slice is for: behind symmetric NATs only the relay connects them.
#[test]
fn symmetric_nats_connect_through_turn() {
    if !supported("symmetric_nats_connect_through_turn") {
        return;
    }
    let spaces = Namespaces::build("t", Nat::Symmetric);
    let _public = start_public(&spaces);
    let mut players = [
        start_player(&spaces, 1, "relay", Ice::StunAndTurn, DEMO_LOG),
        start_player(&spaces, 2, "relay", Ice::StunAndTurn, DEMO_LOG),
    ];
    poll_output(
        &mut players,
        Duration::from_secs(45),
        "behind symmetric NATs with TURN, each player should see both squares through a relay",
        |p| {
            p.iter()
                .all(|p| p.said("SEES 2 PLAYERS") > 0 && p.said("THROUGH A RELAY") > 0)
        },
    );
}
