//! The lobby under load, against a baseline server built from matchbox_signaling's full-mesh
//! builder, both measured in the same run, each in its own process (so its memory and CPU can be
//! read from /proc):
//!
//! - joins per second and time to `IdAssigned` (p50/p99) with 1k and 10k connections held open,
//!   opened 1000 at a time, in rooms of four;
//! - server memory per idle connection, and what is left once they all left;
//! - server CPU time per join;
//! - 1000 simultaneous connects: how many needed a SYN retry (took over a second).
//!
//! `cargo bench -p peersync-lobby --bench lobby`; needs ~21k file descriptors (the process raises
//! its soft limit). Figures in BENCHMARKS.md.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use futures_util::StreamExt;
use tokio::runtime::Runtime;
use tokio_tungstenite::connect_async;
use tokio_tungstenite::tungstenite::Message;

const WAVE: usize = 1000;

struct Server {
    name: &'static str,
    child: Child,
    addr: SocketAddr,
}

impl Server {
    fn start(name: &'static str, command: &mut Command, addr: SocketAddr) -> Server {
        let child = command
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("the server starts");
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(addr).is_err() {
            assert!(Instant::now() < deadline, "{name} did not start listening");
            std::thread::sleep(Duration::from_millis(20));
        }
        Server { name, child, addr }
    }

    fn ours() -> Server {
        let addr = free_addr();
        Server::start(
            "peersync-lobby",
            Command::new(env!("CARGO_BIN_EXE_peersync-lobby")).args([
                "--bind",
                &addr.to_string(),
                "--max-connections-per-ip",
                "0",
                "--max-connections",
                "50000",
                // Every client comes from 127.0.0.1, a thousand at a time.
                "--join-burst-per-ip",
                "0",
            ]),
            addr,
        )
    }

    fn baseline() -> Server {
        let addr = free_addr();
        Server::start(
            "matchbox_signaling full mesh",
            Command::new(baseline_binary()).arg(addr.to_string()),
            addr,
        )
    }

    /// Resident memory in bytes.
    fn rss(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let kib: u64 = status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap();
        kib * 1024
    }

    /// User + system CPU time.
    fn cpu(&self) -> Duration {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap();
        // Fields after the command name, which is in parentheses and may hold spaces.
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .unwrap()
            .1
            .split_whitespace()
            .collect();
        let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
        Duration::from_millis(ticks * 10) // USER_HZ is 100 on Linux
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

fn baseline_binary() -> PathBuf {
    let mut path = std::env::current_exe().unwrap();
    path.pop();
    if path.ends_with("deps") {
        path.pop();
    }
    let binary = path.join("examples").join("baseline_signaling");
    if !binary.exists() {
        let status = Command::new(env!("CARGO"))
            .args([
                "build",
                "--release",
                "-p",
                "peersync-lobby",
                "--example",
                "baseline_signaling",
            ])
            .status()
            .expect("cargo builds the baseline");
        assert!(status.success());
    }
    binary
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Opens `count` connections at once, in rooms of four; each is timed until its `IdAssigned`.
async fn wave(addr: SocketAddr, first: usize, count: usize) -> Vec<(Duration, Ws)> {
    let tasks: Vec<_> = (first..first + count)
        .map(|i| {
            tokio::spawn(async move {
                let url = format!("ws://{addr}/room-{}", i / 4);
                let start = Instant::now();
                loop {
                    match connect_async(&url).await {
                        Ok((mut ws, _)) => loop {
                            match ws.next().await {
                                Some(Ok(Message::Text(text))) if text.contains("IdAssigned") => {
                                    return (start.elapsed(), ws);
                                }
                                Some(Ok(_)) => continue,
                                other => panic!("no IdAssigned: {other:?}"),
                            }
                        },
                        // Counted as a slow join: the time includes the retry.
                        Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                    }
                }
            })
        })
        .collect();
    let mut joined = Vec::with_capacity(count);
    for task in tasks {
        joined.push(task.await.unwrap());
    }
    joined
}

struct Load {
    wall: Duration,
    times: Vec<Duration>,
    connections: Vec<Ws>,
}

async fn load(addr: SocketAddr, total: usize) -> Load {
    let start = Instant::now();
    let mut times = Vec::with_capacity(total);
    let mut connections = Vec::with_capacity(total);
    let mut first = 0;
    while first < total {
        let count = WAVE.min(total - first);
        for (time, ws) in wave(addr, first, count).await {
            times.push(time);
            connections.push(ws);
        }
        first += count;
    }
    Load {
        wall: start.elapsed(),
        times,
        connections,
    }
}

fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    samples.sort();
    samples[((samples.len() as f64 - 1.0) * p).round() as usize]
}

fn raise_fd_limit() {
    let (_, hard) = rlimit::Resource::NOFILE.get().unwrap();
    let _ = rlimit::Resource::NOFILE.set(hard, hard);
}

fn joins(c: &mut Criterion) {
    raise_fd_limit();
    let runtime = Runtime::new().unwrap();
    let mut group = c.benchmark_group("join_1000_simultaneous");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(10));
    for server in [Server::ours(), Server::baseline()] {
        group.bench_function(server.name, |bench| {
            bench.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let load = runtime.block_on(load(server.addr, 1000));
                    total += load.wall;
                    drop(load.connections);
                }
                total
            })
        });
    }
    group.finish();
}

fn summary(_: &mut Criterion) {
    raise_fd_limit();
    let runtime = Runtime::new().unwrap();
    let mut lines = Vec::new();
    for total in [1_000usize, 10_000] {
        for server in [Server::ours(), Server::baseline()] {
            std::thread::sleep(Duration::from_millis(300));
            let (rss_before, cpu_before) = (server.rss(), server.cpu());
            let mut load = runtime.block_on(load(server.addr, total));
            std::thread::sleep(Duration::from_millis(500));
            let (rss_held, cpu_after) = (server.rss(), server.cpu());
            let slow = load
                .times
                .iter()
                .filter(|t| **t > Duration::from_secs(1))
                .count();
            drop(std::mem::take(&mut load.connections));
            // The lobby's allocator (jemalloc) returns unused pages after a 10 s decay.
            std::thread::sleep(Duration::from_secs(12));
            let rss_after = server.rss();
            lines.push(format!(
                "{:>30} {total:>6} conns: {:>7.0} joins/s, IdAssigned p50 {:>9.2?} p99 {:>9.2?}, {:>5.1} KiB/conn held, \
                 {:>6.1} MiB left after they left (was {:.1} before), CPU {:>6.1?}/join, {slow} over 1 s",
                server.name,
                total as f64 / load.wall.as_secs_f64(),
                percentile(&mut load.times, 0.5),
                percentile(&mut load.times, 0.99),
                (rss_held.saturating_sub(rss_before)) as f64 / total as f64 / 1024.0,
                rss_after as f64 / (1 << 20) as f64,
                rss_before as f64 / (1 << 20) as f64,
                (cpu_after.saturating_sub(cpu_before)) / total as u32,
            ));
        }
    }
    // 1000 simultaneous connects in one go, to see whether the accept backlog holds.
    for server in [Server::ours(), Server::baseline()] {
        let joined = runtime.block_on(wave(server.addr, 0, 1000));
        let slow = joined
            .iter()
            .filter(|(t, _)| *t > Duration::from_secs(1))
            .count();
        lines.push(format!(
            "{:>30} 1000 simultaneous connects: {slow} took over 1 s (a SYN retry)",
            server.name
        ));
    }
    for line in lines {
        eprintln!("{line}");
    }
}

criterion_group!(benches, joins, summary);
criterion_main!(benches);
