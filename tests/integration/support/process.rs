//! Child processes for tests that run the demo (and a browser): their output collected line by
//! line so a test can poll it against a deadline.

use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::time::{Duration, Instant};

/// The demo example, which `cargo test` builds next to the test binaries.
pub fn demo_binary() -> PathBuf {
    example_binary("demo", "`cargo test`")
}

/// An example binary of the workspace, built next to the test binaries by `built_by`.
pub fn example_binary(name: &str, built_by: &str) -> PathBuf {
    let mut path = std::env::current_exe().expect("the test binary's path");
    path.pop(); // the test binary
    if path.ends_with("deps") {
        path.pop();
    }
    path.push("examples");
    path.push(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(
        path.exists(),
        "{} should have been built by {built_by}",
        path.display()
    );
    path
}

/// A child process whose stdout and stderr lines are collected; killed when dropped, so a
/// failing test leaves nothing running.
pub struct Watched {
    child: Child,
    lines: Receiver<String>,
    /// Every line printed so far (after [`Watched::collect`]).
    pub seen: Vec<String>,
}

impl Watched {
    pub fn spawn(command: &mut Command) -> Watched {
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {command:?}: {e}"));
        let (tx, lines) = channel();
        forward(child.stdout.take().unwrap(), tx.clone());
        forward(child.stderr.take().unwrap(), tx);
        Watched {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Takes in what the process printed since the last call.
    pub fn collect(&mut self) {
        while let Ok(line) = self.lines.try_recv() {
            self.seen.push(line);
        }
    }

    /// Whether the process is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The process id, for signals.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal (`"STOP"`, `"CONT"`, ...) to the process with `kill`.
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([format!("-{name}"), self.pid().to_string()])
            .status()
            .expect("kill(1) should run");
        assert!(
            status.success(),
            "kill -{name} {} should succeed",
            self.pid()
        );
    }

    /// The collected lines from index `from` on.
    pub fn since(&self, from: usize) -> &[String] {
        &self.seen[from.min(self.seen.len())..]
    }

    /// How many collected lines contain `needle`.
    pub fn said(&self, needle: &str) -> usize {
        self.seen
            .iter()
            .filter(|line| line.contains(needle))
            .count()
    }
}

fn forward(stream: impl Read + Send + 'static, tx: Sender<String>) {
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
}

impl Drop for Watched {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A headless demo process (a bot) in `room` of the lobby at `lobby`, quitting after
/// `quit_after` seconds at the latest.
pub fn start_demo(lobby: &str, room: &str, quit_after: u32) -> Watched {
    Watched::spawn(&mut demo_command(lobby, room, quit_after))
}

/// The command [`start_demo`] runs, for a test that adds flags (see examples/demo/main.rs) or
/// environment. It keeps silent peers for 5 s, not the library's 2 s: a dozen debug-build
/// processes beside browsers on CI's two cores can stall for seconds (see `TEST_PEER_TIMEOUT`).
pub fn demo_command(lobby: &str, room: &str, quit_after: u32) -> Command {
    let mut command = demo_with_library_timeouts(lobby, room, quit_after);
    command.args(["--peer-timeout", "5"]);
    command
}

/// A headless demo with the library's own timeouts and `extra` flags: for tests about liveness.
pub fn start_demo_with(lobby: &str, room: &str, quit_after: u32, extra: &[&str]) -> Watched {
    Watched::spawn(demo_with_library_timeouts(lobby, room, quit_after).args(extra))
}

fn demo_with_library_timeouts(lobby: &str, room: &str, quit_after: u32) -> Command {
    let mut command = Command::new(demo_binary());
    command
        .args([
            "--headless",
            "--room",
            room,
            "--lobby",
            lobby,
            "--quit-after",
        ])
        .arg(quit_after.to_string())
        .env("RUST_LOG", "warn,bevy_peersync=info");
    command
}

/// Collects the processes' output until `done` holds, and says how long that took; past
/// `within`, fails with `what` and their last lines.
pub fn poll_output(
    processes: &mut [Watched],
    within: Duration,
    what: &str,
    mut done: impl FnMut(&mut [Watched]) -> bool,
) -> Duration {
    let start = Instant::now();
    loop {
        for process in processes.iter_mut() {
            process.collect();
        }
        if done(processes) {
            return start.elapsed();
        }
        if start.elapsed() > within {
            let logs: Vec<_> = processes.iter().map(|p| last_lines(&p.seen, 40)).collect();
            panic!(
                "{what} within {within:?}; their last lines:\n{}",
                logs.join("\n---\n")
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The last `n` distinct runs of a process's output, a repeated line shown once with its count,
/// so that a periodic summary does not hide what happened before it.
fn last_lines(seen: &[String], n: usize) -> String {
    let mut runs: Vec<(&str, usize)> = Vec::new();
    for line in seen {
        match runs.last_mut() {
            Some((last, count)) if *last == line.as_str() => *count += 1,
            _ => runs.push((line, 1)),
        }
    }
    runs[runs.len().saturating_sub(n)..]
        .iter()
        .map(|(line, count)| match count {
            1 => (*line).to_owned(),
            _ => format!("{line} (x{count})"),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// `peersync-lobby`, which `cargo test --workspace` builds (the lobby's own tests need it).
pub fn lobby_binary() -> PathBuf {
    let mut path = demo_binary();
    path.pop(); // demo
    path.pop(); // examples
    path.push(format!("peersync-lobby{}", std::env::consts::EXE_SUFFIX));
    assert!(
        path.exists(),
        "{} should have been built by `cargo test --workspace`",
        path.display()
    );
    path
}

/// A loopback port nothing listens on now (a lobby binds it next, and again after a restart).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a loopback port")
        .port()
}

/// A peersync-lobby process on 127.0.0.1:`port` with `extra` flags, once it listens.
pub fn start_lobby(port: u16, extra: &[&str]) -> Watched {
    let lobby = Watched::spawn(
        Command::new(lobby_binary())
            .args(["--bind", &format!("127.0.0.1:{port}")])
            .args(extra),
    );
    let mut lobby = lobby;
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "the lobby should listen on port {port} within 10 s"
        );
        if let Ok(Some(status)) = lobby.child.try_wait() {
            lobby.collect();
            panic!(
                "the lobby on port {port} should keep running, but it exited ({status}): {:?}",
                lobby.seen
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    lobby
}
