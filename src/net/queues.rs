//! Messages of each registered kind received this frame, waiting for the layer that decodes them.

use bevy::prelude::*;

use crate::endpoint::{FIRST_APP_KIND, Received};
use crate::session::MAX_KIND;

/// One queue per registered message kind. The library's own kinds (below
/// [`FIRST_APP_KIND`]) are registered by the layers that use them; app kinds are handed out in
/// registration order.
#[derive(Resource, Default)]
pub(crate) struct KindQueues {
    queues: Vec<Option<Vec<Received>>>,
    /// App message kinds handed out so far.
    app_kinds: u16,
}

impl KindQueues {
    /// Registers one of the library's own kinds.
    pub(crate) fn register(&mut self, kind: u16) {
        let index = usize::from(kind);
        if self.queues.len() <= index {
            self.queues.resize_with(index + 1, || None);
        }
        assert!(
            self.queues[index].is_none(),
            "message kind {kind} registered twice"
        );
        self.queues[index] = Some(Vec::new());
    }

    /// Hands out and registers the next app message kind.
    pub(crate) fn register_app_kind(&mut self) -> u16 {
        let kind = FIRST_APP_KIND + self.app_kinds;
        assert!(kind <= MAX_KIND, "too many peer message types");
        self.app_kinds += 1;
        self.register(kind);
        kind
    }

    /// Queues a message; gives it back if nobody registered its kind.
    pub(crate) fn push(&mut self, message: Received) -> Result<(), Received> {
        match self.queues.get_mut(usize::from(message.kind)) {
            Some(Some(queue)) => {
                queue.push(message);
                Ok(())
            }
            _ => Err(message),
        }
    }

    /// Takes what arrived of `kind` this frame.
    pub(crate) fn take(&mut self, kind: u16) -> Vec<Received> {
        self.queues
            .get_mut(usize::from(kind))
            .and_then(Option::as_mut)
            .map(std::mem::take)
            .unwrap_or_default()
    }
}
