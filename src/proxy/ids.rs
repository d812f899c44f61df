//! The id maps: every id we send is ours (one counter); the peers' ids are kept as sent and
//! restored exactly on the way back.

use super::*;

/// Where a request we sent to the server came from.
pub(super) enum Outbound {
    Client {
        id: Value,
        method: String,
    },
    ReplayInitialize,
    /// A question of the serving stage's (`serving::Question`): the result goes to the reply.
    Serving(tokio::sync::oneshot::Sender<Value>),
}

/// A server→client request waiting for the editor's answer.
pub(super) struct InboundRequest {
    pub(super) server_id: Value,
    pub(super) incarnation: u32,
}

/// Ids remapped in both directions.
pub(super) struct Ids {
    next_id: i64,
    /// Our id on the server side → origin.
    pub(super) to_server: HashMap<i64, Outbound>,
    /// The client's id → our id on the server side (for `$/cancelRequest`).
    pub(super) client_ids: HashMap<IdKey, i64>,
    /// Our id on the client side → the server's request.
    pub(super) to_client: HashMap<i64, InboundRequest>,
    /// The server's id → our id on the client side (for the server's `$/cancelRequest`).
    pub(super) server_ids: HashMap<IdKey, i64>,
    /// Our id of a `textDocument/diagnostic` pull on the server side → its document.
    pub(super) pulls: HashMap<i64, String>,
}

impl Ids {
    /// A fresh id of ours.
    pub(super) fn take(&mut self) -> i64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }
}

impl Default for Ids {
    fn default() -> Ids {
        Ids {
            next_id: 1,
            to_server: HashMap::new(),
            client_ids: HashMap::new(),
            to_client: HashMap::new(),
            server_ids: HashMap::new(),
            pulls: HashMap::new(),
        }
    }
}
