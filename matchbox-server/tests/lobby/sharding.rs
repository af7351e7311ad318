//! Two lobby instances behind nginx, sharded by room path: the players of one room meet on one
//! instance whatever their query strings, and rooms spread over both.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::client::*;
use peersync_lobby::Lobby;

/// nginx in one process (`master_process off`): killing it leaves no orphaned worker behind
/// (a worker outlives a killed master, and keeps every file the test inherited open).
struct Nginx {
    child: Child,
    dir: PathBuf,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn nginx_binary() -> PathBuf {
    ["/usr/sbin/nginx", "/usr/bin/nginx"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .expect("Debian's nginx is needed for the sharding test (.ci/run installs it)")
}

fn start_nginx(port: u16, upstreams: &[&Lobby]) -> Nginx {
    let dir = std::env::temp_dir().join(format!("peersync-nginx-{}-{port}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("logs")).unwrap();
    let servers: String = upstreams
        .iter()
        .map(|l| format!("server {};\n", l.local_addr()))
        .collect();
    let config = format!(
        r#"
daemon off;
master_process off;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/logs/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    # The room is the path: hash it alone, so tokens and ?next= do not split a room.
    upstream lobbies {{
        hash $uri consistent;
        {servers}
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://lobbies;
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection "upgrade";
            proxy_read_timeout 60s;
        }}
    }}
}}
"#,
        dir = dir.display()
    );
    let path = dir.join("nginx.conf");
    std::fs::write(&path, config).unwrap();
    let child = Command::new(nginx_binary())
        .arg("-p")
        .arg(&dir)
        .arg("-c")
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("nginx starts");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "nginx should listen on {port}");
        std::thread::sleep(Duration::from_millis(20));
    }
    Nginx { child, dir }
}

async fn rooms_on(lobby: &Lobby) -> Vec<String> {
    let (_, body) = get(lobby, "/rooms").await;
    let rooms: Vec<serde_json::Value> = serde_json::from_str(&body).unwrap();
    rooms
        .iter()
        .map(|r| r["name"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rooms_are_sharded_by_path_across_two_instances() {
    let a = lobby(|_| {}).await;
    let b = lobby(|_| {}).await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let _nginx = start_nginx(port, &[&a, &b]);
    let through = |path: &str| format!("ws://127.0.0.1:{port}{path}");

    // Three players of one room, each with its own query string, meet.
    let (mut first, _) = tokio_tungstenite::connect_async(through("/arena?token=one"))
        .await
        .unwrap();
    next_text(&mut first).await; // IdAssigned
    let (mut second, _) = tokio_tungstenite::connect_async(through("/arena?token=two"))
        .await
        .unwrap();
    next_text(&mut second).await;
    let (mut third, _) = tokio_tungstenite::connect_async(through("/arena?x=3"))
        .await
        .unwrap();
    next_text(&mut third).await;
    assert!(
        next_text(&mut first).await.contains("NewPeer"),
        "the first player meets the second"
    );
    assert!(
        next_text(&mut first).await.contains("NewPeer"),
        "and the third: same instance"
    );

    // Many rooms spread over both instances, each room on one.
    let mut held = Vec::new();
    for room in 0..24 {
        let (mut ws, _) = tokio_tungstenite::connect_async(through(&format!("/room-{room}")))
            .await
            .unwrap();
        next_text(&mut ws).await;
        held.push(ws);
    }
    let (on_a, on_b) = (rooms_on(&a).await, rooms_on(&b).await);
    assert!(
        on_a.len() >= 3 && on_b.len() >= 3,
        "rooms should land on both instances: {on_a:?} / {on_b:?}"
    );
    assert_eq!(
        on_a.len() + on_b.len(),
        25,
        "each room on exactly one instance"
    );
    assert!(on_a.iter().all(|room| !on_b.contains(room)));
    a.shutdown().await;
    b.shutdown().await;
}
