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
