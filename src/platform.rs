//! The one place that knows native from wasm.

use std::future::Future;

use bevy::tasks::{IoTaskPool, TaskPool};
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

/// Runs `future` in the background: on native on the IoTaskPool's own threads (so it is polled
/// between frames, not once per frame), in the browser on its event loop (`spawn_local`).
pub(crate) fn spawn_background(
    future: impl Future<Output = ()> + MaybeSend + 'static,
) -> Background {
    let (future, abort) = abortable(future);
    let pool = IoTaskPool::get_or_init(TaskPool::new);
    #[cfg(not(target_arch = "wasm32"))]
    pool.spawn(async move {
        let _ = future.await;
    })
    .detach();
    #[cfg(target_arch = "wasm32")]
    pool.spawn_local(async move {
        let _ = future.await;
    })
    .detach();
    Background { abort }
}
