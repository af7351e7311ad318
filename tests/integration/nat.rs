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
//! private address, so they reach each other only through what the NATs let through. coturn
//! checks TURN credentials one of two ways: a fixed user, or (as docs/turn.md recommends) a secret
//! it shares with the lobby, which hands each player time-limited credentials on `GET /turn`.
//! Needs root, `ip netns`, iptables and coturn's `turnserver`: without them each test prints one
//! line and passes.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::process::{Watched, demo_binary, lobby_binary, poll_output};

/// The "internet" side: the public namespace's bridge and the NATs' outside addresses.
const PUBLIC_IP: &str = "198.51.100.1";
/// The fixed TURN user of [`TurnAuth::StaticUser`].
const TURN_USER: &str = "player";
const TURN_PASS: &str = "not-a-secret";
/// coturn's `static-auth-secret`, the lobby's `--turn-secret`, in [`TurnAuth::SharedSecret`].
const TURN_SECRET: &str = "shared-by-lobby-and-coturn";

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

/// How coturn checks TURN credentials.
#[derive(Clone, Copy, PartialEq, Eq)]
enum TurnAuth {
    /// `lt-cred-mech` with one fixed user, [`TURN_USER`]:[`TURN_PASS`].
    StaticUser,
    /// `use-auth-secret` with [`TURN_SECRET`], which the lobby knows too (`--turn-secret`): the
    /// players ask the lobby's `/turn` for credentials.
    SharedSecret,
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
        in_ns(&name, "ip link set lo up");
        name
    }

    /// The public namespace and two players behind NATs of `kind`.
    fn build(tag: &str, kind: Nat) -> Namespaces {
        let mut spaces = Namespaces {
            prefix: format!("peersync{}{tag}", std::process::id()),
            created: Vec::new(),
        };
        let public = spaces.add("pub");
        in_ns(&public, "ip link add bridge0 type bridge");
        in_ns(&public, &format!("ip addr add {PUBLIC_IP}/24 dev bridge0"));
        in_ns(&public, "ip link set bridge0 up");
        for i in 1..=2 {
            let nat = spaces.add(&format!("nat{i}"));
            let player = spaces.add(&format!("player{i}"));
            let outside = format!("198.51.100.1{i}");
            let gateway = format!("10.0.{i}.1");
            let inside = format!("10.0.{i}.2");
            // Each veth is made in the NAT's namespace with its other end moved straight to its
            // neighbour's, so names never meet in the root namespace (tests run in parallel).
            for command in [
                format!("ip link add wan type veth peer name nat{i} netns {public}"),
                format!("ip addr add {outside}/24 dev wan"),
                "ip link set wan up".to_owned(),
                format!("ip link add lan type veth peer name eth0 netns {player}"),
                format!("ip addr add {gateway}/24 dev lan"),
                "ip link set lan up".to_owned(),
                "sysctl -qw net.ipv4.ip_forward=1".to_owned(),
            ] {
                in_ns(&nat, &command);
            }
            in_ns(&public, &format!("ip link set nat{i} master bridge0 up"));
            in_ns(&player, &format!("ip addr add {inside}/24 dev eth0"));
            in_ns(&player, "ip link set eth0 up");
            in_ns(&player, &format!("ip route add default via {gateway}"));
            let rules = match kind {
                Nat::FullCone => [
                    format!("-t nat -A POSTROUTING -o wan -j SNAT --to-source {outside}"),
                    format!("-t nat -A PREROUTING -i wan -p udp -j DNAT --to-destination {inside}"),
                ],
                Nat::Symmetric => [
                    "-t nat -A POSTROUTING -o wan -j MASQUERADE --random-fully".to_owned(),
                    "-A FORWARD -i wan -m conntrack ! --ctstate ESTABLISHED,RELATED -j DROP"
                        .to_owned(),
                ],
            };
            for rule in rules {
                in_ns(&nat, &format!("iptables {rule}"));
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

/// Runs `command` (words separated by spaces, none quoted) in `namespace`.
fn in_ns(namespace: &str, command: &str) {
    let words: Vec<&str> = ["ip", "netns", "exec", namespace]
        .into_iter()
        .chain(command.split_whitespace())
        .collect();
    run(&words);
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

/// The namespaces for `test` (players behind NATs of `kind`), or `None` after printing the one
/// line that says why the test cannot run here.
fn namespaces(test: &str, tag: &str, kind: Nat) -> Option<Namespaces> {
    match unsupported(test) {
        None => Some(Namespaces::build(tag, kind)),
        Some(reason) => {
            println!("SKIPPED nat::{test}: {reason} (needs root, ip netns, iptables and coturn)");
            None
        }
    }
}

/// The public side: the lobby and coturn (STUN always, TURN as `auth` says), ready.
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

fn start_public(spaces: &Namespaces, auth: TurnAuth) -> Public {
    let public = spaces.name("pub");
    let mut lobby = Command::new("ip");
    lobby
        .args(["netns", "exec", &public])
        .arg(lobby_binary())
        .args(["--bind", &format!("{PUBLIC_IP}:3536")]);
    // Its own user database: the default one under /var/lib/turn is the system's.
    let userdb = TempFile(std::env::temp_dir().join(format!("{}-turndb", spaces.prefix)));
    let mut coturn = Command::new("ip");
    coturn
        .args(["netns", "exec", &public, "turnserver", "-n", "-v"])
        .arg(format!("--listening-ip={PUBLIC_IP}"))
        .arg(format!("--relay-ip={PUBLIC_IP}"))
        .args([
            "--listening-port=3478",
            "--realm=peersync.test",
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
        .arg(format!("--userdb={}", userdb.0.display()));
    match auth {
        TurnAuth::StaticUser => {
            coturn.args(["--lt-cred-mech", &format!("--user={TURN_USER}:{TURN_PASS}")]);
        }
        TurnAuth::SharedSecret => {
            coturn.args([
                "--use-auth-secret",
                &format!("--static-auth-secret={TURN_SECRET}"),
            ]);
            lobby.args([
                "--turn-secret",
                TURN_SECRET,
                "--turn-uri",
                &format!("stun:{PUBLIC_IP}:3478"),
                "--turn-uri",
                &format!("turn:{PUBLIC_IP}:3478?transport=udp"),
            ]);
        }
    }
    let mut processes = [Watched::spawn(&mut lobby), Watched::spawn(&mut coturn)];
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

/// A player's ICE servers (passed to the demo as `--stun` / `--turn` by scheme) and TURN
/// credentials.
struct Ice {
    uris: Vec<String>,
    credentials: Option<(String, String)>,
}

impl Ice {
    fn stun_only() -> Ice {
        Ice {
            uris: vec![format!("stun:{PUBLIC_IP}:3478")],
            credentials: None,
        }
    }

    /// coturn's fixed user ([`TurnAuth::StaticUser`]).
    fn static_turn() -> Ice {
        Ice {
            uris: vec![
                format!("stun:{PUBLIC_IP}:3478"),
                format!("turn:{PUBLIC_IP}:3478"),
            ],
            credentials: Some((TURN_USER.to_owned(), TURN_PASS.to_owned())),
        }
    }

    /// What the lobby's `GET /turn?user=player<i>` answers player `i` ([`TurnAuth::SharedSecret`]),
    /// asked from the player's namespace through its NAT, as the game would ask. A plain
    /// HTTP/1.1 request over bash's `/dev/tcp`, so nothing more needs installing; `timeout`
    /// bounds it.
    fn from_lobby(spaces: &Namespaces, i: usize) -> Ice {
        let script = format!(
            "exec 3<>/dev/tcp/{PUBLIC_IP}/3536 && printf 'GET /turn?user=player{i} HTTP/1.1\\r\\n\
             Host: lobby\\r\\nConnection: close\\r\\n\\r\\n' >&3 && cat <&3"
        );
        let output = Command::new("timeout")
            .args(["10", "ip", "netns", "exec"])
            .arg(spaces.name(&format!("player{i}")))
            .args(["bash", "-c", &script])
            .output()
            .expect("timeout(1), ip and bash should run");
        let response = String::from_utf8_lossy(&output.stdout);
        let (head, body) = response.split_once("\r\n\r\n").unwrap_or_else(|| {
            panic!(
                "player {i} should get an HTTP answer from the lobby's /turn, got {response:?} ({})",
                String::from_utf8_lossy(&output.stderr)
            )
        });
        assert!(
            head.starts_with("HTTP/1.1 200"),
            "the lobby (with --turn-secret) should hand player {i} TURN credentials: {response}"
        );
        let json: serde_json::Value =
            serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: /turn answered {body:?}"));
        let field = |name: &str| {
            json[name]
                .as_str()
                .unwrap_or_else(|| panic!("/turn's answer should have a string {name}: {body}"))
                .to_owned()
        };
        Ice {
            uris: json["uris"]
                .as_array()
                .unwrap_or_else(|| panic!("/turn's answer should list uris: {body}"))
                .iter()
                .filter_map(|uri| uri.as_str().map(str::to_owned))
                .collect(),
            credentials: Some((field("username"), field("credential"))),
        }
    }
}

/// A headless demo in player namespace `i`.
fn start_player(spaces: &Namespaces, i: usize, room: &str, ice: &Ice, rust_log: &str) -> Watched {
    let mut command = Command::new("ip");
    command
        .args(["netns", "exec", &spaces.name(&format!("player{i}"))])
        .arg(demo_binary())
        .args(["--headless", "--room", room, "--quit-after", "90"])
        .args(["--lobby", &format!("ws://{PUBLIC_IP}:3536")])
        .env("RUST_LOG", rust_log);
    for uri in &ice.uris {
        let flag = if uri.starts_with("stun") {
            "--stun"
        } else {
            "--turn"
        };
        command.args([flag, uri]);
    }
    if let Some((user, pass)) = &ice.credentials {
        command.args(["--turn-user", user, "--turn-pass", pass]);
    }
    Watched::spawn(&mut command)
}

/// Both players in `room`, player `i` with `ice[i - 1]`.
fn start_players(spaces: &Namespaces, room: &str, ice: [&Ice; 2], rust_log: &str) -> [Watched; 2] {
    [
        start_player(spaces, 1, room, ice[0], rust_log),
        start_player(spaces, 2, room, ice[1], rust_log),
    ]
}

const DEMO_LOG: &str = "warn,bevy_peersync=info";

#[test]
fn full_cone_nats_connect_with_stun_only() {
    let Some(spaces) = namespaces("full_cone_nats_connect_with_stun_only", "c", Nat::FullCone)
    else {
        return;
    };
    let _public = start_public(&spaces, TurnAuth::StaticUser);
    let stun = Ice::stun_only();
    let mut players = start_players(&spaces, "cone", [&stun, &stun], DEMO_LOG);
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
    let test = "symmetric_nats_without_turn_do_not_connect";
    let Some(spaces) = namespaces(test, "s", Nat::Symmetric) else {
        return;
    };
    let _public = start_public(&spaces, TurnAuth::StaticUser);
    // The plugin never hears of a connection that did not open (matchbox reports peers only
    // once connected); webrtc-rs's ICE agent is what says the checks failed.
    let log = format!("{DEMO_LOG},rtc_ice::agent=info");
    let stun = Ice::stun_only();
    let mut players = start_players(&spaces, "symmetric", [&stun, &stun], &log);
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

/// Relay allocations coturn granted to TURN user `username`, from its log (one line each).
fn allocations(coturn: &Watched, username: &str) -> usize {
    coturn.said(&format!(
        "user <{username}>: incoming packet ALLOCATE processed, success"
    ))
}

#[test]
fn symmetric_nats_get_turn_relays_with_the_configured_credentials() {
    let test = "symmetric_nats_get_turn_relays_with_the_configured_credentials";
    let Some(spaces) = namespaces(test, "a", Nat::Symmetric) else {
        return;
    };
    let Public {
        _lobby,
        coturn,
        _userdb,
    } = start_public(&spaces, TurnAuth::StaticUser);
    let turn = Ice::static_turn();
    let players = start_players(&spaces, "allocate", [&turn, &turn], DEMO_LOG);
    let mut processes: Vec<Watched> = [coturn].into_iter().chain(players).collect();
    poll_output(
        &mut processes,
        Duration::from_secs(30),
        "coturn should allocate a relay for each player, authenticated with the flags' user",
        |p| allocations(&p[0], TURN_USER) >= 2,
    );
}

/// What the slice is for: behind symmetric NATs only the relay connects them. coturn runs as
/// docs/turn.md recommends, with a secret it shares with the lobby, and each player uses the
/// credentials the lobby handed it.
#[test]
fn symmetric_nats_connect_through_turn_with_credentials_from_the_lobby() {
    let test = "symmetric_nats_connect_through_turn_with_credentials_from_the_lobby";
    let Some(spaces) = namespaces(test, "t", Nat::Symmetric) else {
        return;
    };
    let Public {
        _lobby,
        coturn,
        _userdb,
    } = start_public(&spaces, TurnAuth::SharedSecret);
    let ice = [Ice::from_lobby(&spaces, 1), Ice::from_lobby(&spaces, 2)];
    let usernames: Vec<String> = ice
        .iter()
        .map(|ice| ice.credentials.as_ref().expect("credentials").0.clone())
        .collect();
    let players = start_players(&spaces, "relay", [&ice[0], &ice[1]], DEMO_LOG);
    let mut processes: Vec<Watched> = [coturn].into_iter().chain(players).collect();
    poll_output(
        &mut processes,
        Duration::from_secs(45),
        "behind symmetric NATs with TURN, each player should see both squares through a relay \
         that coturn allocated with the lobby's credentials",
        |p| {
            p[1..]
                .iter()
                .all(|p| p.said("SEES 2 PLAYERS") > 0 && p.said("THROUGH A RELAY") > 0)
                && usernames.iter().all(|user| allocations(&p[0], user) > 0)
        },
    );
}
