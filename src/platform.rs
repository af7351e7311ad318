//! The one place that knows native from wasm.

use std::future::Future;

use futures::future::{AbortHandle, abortable};

/// A future running in the background until it ends or this handle is dropped.
#[derive(Debug)]
pub(crate) struct Background {
    abort: AbortHandle,
}

impl Drop for Background {
    fn drop(&mut self) {
        self.abort.abort();
    }
}

/// Futures the background tasks may hold: `Send` where tasks move between threads.
#[cfg(not(target_arch = "wasm32"))]
pub(crate) trait MaybeSend: Send {}
#[cfg(not(target_arch = "wasm32"))]
impl<T: Send> MaybeSend for T {}
/// Futures the background tasks may hold: the browser has one thread, nothing needs `Send`.
#[cfg(target_arch = "wasm32")]
pub(crate) trait MaybeSend {}
#[cfg(target_arch = "wasm32")]
impl<T> MaybeSend for T {}

/// Runs `future` in the background until it ends or the handle is dropped.
///
/// Native: on a thread of its own that sleeps until the future is woken, so packets move between
/// frames (not once per frame) and two sockets never wait on each other. Browser: on its event
/// loop (`spawn_local`).
pub(crate) fn spawn_background(
    name: &str,
    future: impl Future<Output = ()> + MaybeSend + 'static,
) -> Background {
    let (future, abort) = abortable(future);
    #[cfg(not(target_arch = "wasm32"))]
    {
        let spawned = std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || {
                let _ = futures::executor::block_on(future);
            });
        if let Err(error) = spawned {
            // Dropping the future drops its result channel: the socket reports the loop ended.
            tracing::error!("cannot start {name}: {error}");
        }
    }
    #[cfg(target_arch = "wasm32")]
    {
        let _ = name;
        bevy::tasks::IoTaskPool::get_or_init(bevy::tasks::TaskPool::new)
            .spawn_local(async move {
                let _ = future.await;
            })
            .detach();
    }
    Background { abort }
}

/// The wall clock in milliseconds since the Unix epoch, 0 if the clock is before it. Only used to
/// order sessions by founding time, so clocks that disagree across machines change which session
/// wins a merge, never whether peers agree on it.
pub(crate) fn unix_millis() -> u64 {
    #[cfg(not(target_arch = "wasm32"))]
    {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |since| since.as_millis() as u64)
    }
    #[cfg(target_arch = "wasm32")]
    {
        js_sys::Date::now().max(0.0) as u64
    }
}

/// Whether the lobby answers (and whether it restarted), checked from a thread of its own every
/// `every`, so that a socket whose signaling connection died with the lobby can tell when the
/// lobby is back. matchbox keeps existing links when signaling is lost but says nothing about it,
/// and no new peer can reach a socket whose signaling is gone: knowing that the lobby went away
/// and answers again is what lets the transport rejoin. In the browser the same look is a
/// `fetch` of `/health` from the page's event loop (the lobby answers it to any origin).
#[derive(Debug)]
pub(crate) struct LobbyProbe {
    shared: std::sync::Arc<ProbeShared>,
    /// The browser's probe task, ended when the probe is dropped.
    #[cfg(target_arch = "wasm32")]
    _task: Background,
}

#[derive(Debug, Default)]
struct ProbeShared {
    stop: std::sync::atomic::AtomicBool,
    /// Times the server answered again after not answering.
    returns: std::sync::atomic::AtomicU64,
    /// The id the socket has in its room, which each look asks the lobby about.
    peer: std::sync::Mutex<Option<String>>,
    /// An id the lobby said twice in a row it does not have in any room.
    forgotten: std::sync::Mutex<Option<String>>,
}

impl LobbyProbe {
    /// Starts probing `host:port` (as in a `ws://host:port/room` URL; the scheme's port when
    /// none is given). `None` when the URL names no host.
    pub(crate) fn start(room_url: &str, every: std::time::Duration) -> Option<Self> {
        let target = probe_target(room_url)?;
        let shared = std::sync::Arc::new(ProbeShared::default());
        #[cfg(not(target_arch = "wasm32"))]
        {
            let watched = shared.clone();
            let spawned = std::thread::Builder::new()
                .name("peersync-lobby-probe".to_owned())
                .spawn(move || probe_loop(&target, every, &watched));
            if let Err(error) = spawned {
                tracing::warn!("cannot watch the lobby: {error}");
                return None;
            }
        }
        #[cfg(target_arch = "wasm32")]
        {
            let scheme = if room_url
                .get(..4)
                .is_some_and(|s| s.eq_ignore_ascii_case("wss:"))
            {
                "https"
            } else {
                "http"
            };
            let origin = format!("{scheme}://{target}");
            let watched = shared.clone();
            let task = spawn_background("peersync-lobby-probe", async move {
                web::probe_loop(&origin, every, &watched).await
            });
            Some(Self {
                shared,
                _task: task,
            })
        }
        #[cfg(not(target_arch = "wasm32"))]
        Some(Self { shared })
    }

    /// How many times the lobby answered again after an outage, so far.
    pub(crate) fn returns(&self) -> u64 {
        self.shared
            .returns
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// From now on each look also asks whether the lobby still has `peer` (the socket's id, a
    /// UUID) in a room; `None` stops asking.
    pub(crate) fn ask_about(&self, peer: Option<String>) {
        *lock(&self.shared.peer) = peer;
        *lock(&self.shared.forgotten) = None;
    }

    /// The id the lobby said (twice in a row) it does not have, once.
    pub(crate) fn take_forgotten(&self) -> Option<String> {
        lock(&self.shared.forgotten).take()
    }
}

/// Every value behind these locks is whole at any time, so a panic elsewhere does not matter.
fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl Drop for LobbyProbe {
    fn drop(&mut self) {
        self.shared
            .stop
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// `host:port` of a `ws://` or `wss://` URL.
fn probe_target(room_url: &str) -> Option<String> {
    let (scheme, rest) = room_url.split_once("://")?;
    let authority = rest.split(['/', '?', '#']).next()?;
    let authority = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    if authority.is_empty() {
        return None;
    }
    let has_port = match authority.rsplit_once(':') {
        Some((host, port)) => !host.ends_with(':') && port.parse::<u16>().is_ok(),
        None => false,
    };
    let has_port = has_port && !(authority.starts_with('[') && authority.ends_with(']'));
    if has_port {
        Some(authority.to_owned())
    } else {
        let port = if scheme.eq_ignore_ascii_case("wss") {
            443
        } else {
            80
        };
        Some(format!("{authority}:{port}"))
    }
}

/// What one look at the lobby found.
#[derive(Debug, PartialEq, Eq)]
enum Seen {
    /// Nothing answers.
    Down,
    /// It answers, with what its `/health` says.
    Up(Health),
}

/// What a `/health` answer says, as far as it says it (older lobbies say less).
#[derive(Debug, Default, PartialEq, Eq)]
struct Health {
    /// The lobby's boot id: peersync-lobby says a new one per start.
    boot: Option<String>,
    /// Whether the peer asked about is in a room there.
    present: Option<bool>,
}

/// What the probe remembers between looks.
#[derive(Debug)]
struct Watch {
    answered: bool,
    boot: Option<String>,
    /// The peer the previous look found absent.
    absent: Option<String>,
}

impl Default for Watch {
    fn default() -> Self {
        Self {
            answered: true,
            boot: None,
            absent: None,
        }
    }
}

impl ProbeShared {
    /// Counts a return when the lobby answers after not answering, or answers with another
    /// boot id than before (it restarted between two looks). A peer the lobby says twice in a
    /// row it does not have (`asked`, the id that look asked about) is forgotten: its lobby
    /// connection was closed while its peer connections stayed up. Twice, so that a look that
    /// crossed a join or a rejoin on the wire is not taken for it.
    fn observe(&self, watch: &mut Watch, seen: Seen, asked: Option<String>) {
        match seen {
            Seen::Down => watch.answered = false,
            Seen::Up(Health { boot, present }) => {
                let restarted =
                    matches!((&watch.boot, &boot), (Some(before), Some(now)) if before != now);
                if !watch.answered || restarted {
                    self.returns
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                watch.answered = true;
                if boot.is_some() {
                    watch.boot = boot;
                }
                let absent = asked.filter(|_| present == Some(false));
                if absent.is_some() && absent == watch.absent {
                    *lock(&self.forgotten) = absent.clone();
                }
                watch.absent = absent;
            }
        }
    }

    fn peer(&self) -> Option<String> {
        lock(&self.peer).clone()
    }

    fn stopped(&self) -> bool {
        self.stop.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// Looks at the lobby every `every` until stopped.
#[cfg(not(target_arch = "wasm32"))]
fn probe_loop(target: &str, every: std::time::Duration, shared: &ProbeShared) {
    let mut watch = Watch::default();
    while !shared.stopped() {
        let asked = shared.peer();
        let path = health_path(asked.as_deref());
        let seen = look(target, &path, every.min(std::time::Duration::from_secs(1)));
        shared.observe(&mut watch, seen, asked);
        // A probe's pace, not a synchronisation: the transport reads the count when it likes.
        std::thread::sleep(every);
    }
}

/// The browser's probe: `fetch` and `setTimeout` instead of a socket and a thread.
#[cfg(target_arch = "wasm32")]
mod web {
    use wasm_bindgen::JsCast;
    use wasm_bindgen_futures::JsFuture;

    use super::{Health, ProbeShared, Seen, Watch, health_body, health_path};

    pub(super) async fn probe_loop(origin: &str, every: std::time::Duration, shared: &ProbeShared) {
        let mut watch = Watch::default();
        let pause = i32::try_from(every.as_millis())
            .unwrap_or(i32::MAX)
            .max(100);
        while !shared.stopped() {
            let asked = shared.peer();
            let url = format!("{origin}{}", health_path(asked.as_deref()));
            let seen = look(&url, pause.min(1000).unsigned_abs()).await;
            shared.observe(&mut watch, seen, asked);
            if !sleep(pause).await {
                return;
            }
        }
    }

    /// `GET url`, given up after `timeout_ms`.
    async fn look(url: &str, timeout_ms: u32) -> Seen {
        let Some(window) = web_sys::window() else {
            return Seen::Down;
        };
        let init = web_sys::RequestInit::new();
        init.set_cache(web_sys::RequestCache::NoStore);
        // `AbortSignal.timeout` is missing from older browsers (Safari before 16), and calling
        // a missing function would throw: without it a look simply waits for the fetch.
        if has_abort_timeout() {
            init.set_signal(Some(&web_sys::AbortSignal::timeout_with_u32(timeout_ms)));
        }
        // A refused connection, a timeout and a CORS refusal all reject the promise.
        let Ok(response) = JsFuture::from(window.fetch_with_str_and_init(url, &init)).await else {
            return Seen::Down;
        };
        let Ok(response) = response.dyn_into::<web_sys::Response>() else {
            return Seen::Down;
        };
        if !response.ok() {
            return Seen::Up(Health::default());
        }
        let text = match response.text() {
            Ok(promise) => JsFuture::from(promise)
                .await
                .ok()
                .and_then(|t| t.as_string()),
            Err(_) => None,
        };
        Seen::Up(text.as_deref().map(health_body).unwrap_or_default())
    }

    fn has_abort_timeout() -> bool {
        js_sys::Reflect::get(&js_sys::global(), &"AbortSignal".into())
            .and_then(|signal| js_sys::Reflect::has(&signal, &"timeout".into()))
            .unwrap_or(false)
    }

    /// Waits `ms` on the page's timer; false when there is no window to wait on.
    async fn sleep(ms: i32) -> bool {
        let Some(window) = web_sys::window() else {
            return false;
        };
        let promise = js_sys::Promise::new(&mut |resolve, _reject| {
            let _ = window.set_timeout_with_callback_and_timeout_and_arguments_0(&resolve, ms);
        });
        JsFuture::from(promise).await.is_ok()
    }
}

/// `/health`, asking about `peer` if there is one.
fn health_path(peer: Option<&str>) -> String {
    match peer {
        Some(peer) => format!("/health?peer={peer}"),
        None => "/health".to_owned(),
    }
}

/// Connects to `target` and asks `GET path`.
#[cfg(not(target_arch = "wasm32"))]
fn look(target: &str, path: &str, timeout: std::time::Duration) -> Seen {
    use std::io::{Read, Write};
    use std::net::{TcpStream, ToSocketAddrs};
    let Ok(addrs) = target.to_socket_addrs() else {
        return Seen::Down;
    };
    let Some(mut stream) = addrs
        .into_iter()
        .find_map(|addr| TcpStream::connect_timeout(&addr, timeout).ok())
    else {
        return Seen::Down;
    };
    let _ = stream.set_read_timeout(Some(timeout));
    let _ = stream.set_write_timeout(Some(timeout));
    let request = format!("GET {path} HTTP/1.0\r\nHost: {target}\r\nConnection: close\r\n\r\n");
    if stream.write_all(request.as_bytes()).is_err() {
        return Seen::Up(Health::default());
    }
    let mut response = Vec::with_capacity(512);
    let _ = stream.take(4096).read_to_end(&mut response);
    Seen::Up(health_answer(&response))
}

/// What a `/health` answer says: `HTTP/1.x 200`, then a body `ok <boot id> [present|absent]`.
#[cfg(not(target_arch = "wasm32"))]
fn health_answer(response: &[u8]) -> Health {
    let Some((head, body)) = std::str::from_utf8(response)
        .ok()
        .and_then(|text| text.split_once("\r\n\r\n"))
    else {
        return Health::default();
    };
    if !head.starts_with("HTTP/1.") || head.split(' ').nth(1) != Some("200") {
        return Health::default();
    }
    health_body(body)
}

/// The body of a `/health` answer: `ok <boot id>`, and with `?peer=` `present` or `absent`.
fn health_body(body: &str) -> Health {
    let Some(rest) = body.trim().strip_prefix("ok ") else {
        return Health::default();
    };
    let mut words = rest.split_whitespace();
    let boot = words.next().filter(|id| id.len() <= 64).map(str::to_owned);
    let present = match words.next() {
        Some("present") => Some(true),
        Some("absent") => Some(false),
        _ => None,
    };
    Health { boot, present }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_probe_targets_the_lobby_address() {
        assert_eq!(
            probe_target("ws://127.0.0.1:3536/room").as_deref(),
            Some("127.0.0.1:3536")
        );
        assert_eq!(
            probe_target("wss://lobby.example/room?next=2").as_deref(),
            Some("lobby.example:443")
        );
        assert_eq!(
            probe_target("ws://[::1]:9000/").as_deref(),
            Some("[::1]:9000")
        );
        assert_eq!(probe_target("ws://[::1]/").as_deref(), Some("[::1]:80"));
        assert_eq!(probe_target("not a url"), None);
    }

    #[test]
    fn the_boot_id_comes_from_a_health_answer_only() {
        let boot_id = |response: &[u8]| health_answer(response).boot;
        let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 40\r\n\r\nok 0f4c9b5e-1111-4222-8333-944445555666\n";
        assert_eq!(
            boot_id(ok).as_deref(),
            Some("0f4c9b5e-1111-4222-8333-944445555666")
        );
        assert_eq!(boot_id(b"HTTP/1.1 404 Not Found\r\n\r\nok x"), None);
        assert_eq!(
            boot_id(b"HTTP/1.1 200 OK\r\n\r\nok\n"),
            None,
            "an older lobby"
        );
        assert_eq!(boot_id(b"garbage"), None);
        assert_eq!(
            health_answer(b"HTTP/1.1 200 OK\r\n\r\nok b1 absent\n"),
            Health {
                boot: Some("b1".into()),
                present: Some(false)
            }
        );
    }

    #[test]
    fn a_peer_the_lobby_twice_says_it_lacks_is_forgotten() {
        let shared = ProbeShared::default();
        let mut watch = Watch::default();
        let say = |present| {
            Seen::Up(Health {
                boot: Some("b".into()),
                present,
            })
        };
        let me = || Some("me".to_owned());
        shared.observe(&mut watch, say(Some(false)), me());
        assert_eq!(
            *lock(&shared.forgotten),
            None,
            "once may be a join in flight"
        );
        shared.observe(&mut watch, say(Some(true)), me());
        shared.observe(&mut watch, say(Some(false)), me());
        assert_eq!(*lock(&shared.forgotten), None, "not twice in a row");
        shared.observe(&mut watch, say(Some(false)), Some("other".into()));
        assert_eq!(*lock(&shared.forgotten), None, "about two different ids");
        shared.observe(&mut watch, say(Some(false)), Some("other".into()));
        assert_eq!(lock(&shared.forgotten).as_deref(), Some("other"));
        shared.observe(&mut watch, say(None), me());
        shared.observe(&mut watch, say(None), me());
        assert_eq!(
            lock(&shared.forgotten).as_deref(),
            Some("other"),
            "an older lobby that does not answer the question changes nothing"
        );
    }
}
