//! An extractor that tells whether the client asked for an ack: `play`
//! reports failures on its ack when there is one and as an `error` event
//! otherwise, and socketioxide's `AckSender` does not say which.

use socketioxide::adapter::Adapter;
use socketioxide::handler::{FromMessageParts, Value};
use socketioxide::socket::Socket;
use std::convert::Infallible;
use std::sync::Arc;

pub struct AckRequested(pub bool);

impl<A: Adapter> FromMessageParts<A> for AckRequested {
    type Error = Infallible;

    fn from_message_parts(_: &Arc<Socket<A>>, _: &mut Value, ack_id: &Option<i64>) -> Result<Self, Infallible> {
        Ok(AckRequested(ack_id.is_some()))
    }
}
