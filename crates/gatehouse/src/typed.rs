//! Typed handlers: a handler is a function from a decoded prost request to a prost
//! reply or a [`Failure`], so that `?` works and every error becomes a status.
//!
//! The service's `request` stays the router, a `match` on the route that hands each
//! payload to [`request`] with the typed handler:
//!
//! ```
//! use bytes::Bytes;
//! use gatehouse::typed::{self, Failure};
//! use gatehouse::{Context, Disconnect, Reply, Service, Status};
//!
//! const GREET: u16 = 1;
//!
//! struct Greeter;
//!
//! impl Greeter {
//!     /// A typed handler: a decoded request in, a reply or a failure out.
//!     async fn greet(&self, greeted: &mut u32, name: String) -> Result<String, Failure> {
//!         if name.is_empty() {
//!             return Err(Failure::new(Status::BAD_REQUEST, "a name, please"));
//!         }
//!         *greeted += 1;
//!         Ok(format!("hello, {name} (greeting {greeted})"))
//!     }
//! }
//!
//! impl Service for Greeter {
//!     type Session = u32;
//!     type Message = ();
//!
//!     async fn connect(&self, _ctx: &mut Context<'_, ()>) -> u32 {
//!         0
//!     }
//!
//!     async fn request(
//!         &self,
//!         greeted: &mut u32,
//!         _ctx: &mut Context<'_, ()>,
//!         route: u16,
//!         payload: Bytes,
//!     ) -> Reply {
//!         match route {
//!             GREET => typed::request(payload, |name| self.greet(greeted, name)).await,
//!             _ => Reply::unknown_route(route),
//!         }
//!     }
//!
//!     async fn disconnect(&self, _greeted: u32, _info: Disconnect) {}
//! }
//! ```
//!
//! A handler's `?` turns a [`RoomError`] or a
//! [`HandleError`] into its status, through [`Failure`]'s `From`.
//!
//! A `match` rather than a table of boxed closures: the handlers borrow the session
//! and the context mutably across their awaits, which a stored closure cannot
//! express on stable Rust with a `Send` future, and a `match` costs nothing. The raw
//! `u16` + `Bytes` API is untouched for routes that want it.

use std::future::Future;

use bytes::Bytes;
use gatehouse_protocol::Status;

use crate::hub::HandleError;
use crate::room::RoomError;
use crate::service::Reply;
use crate::timer::TimerError;

/// A typed handler's error: the status (and text) its client is answered with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{text} ({status})")]
pub struct Failure {
    /// A framework status, or a game's own (1000 and up).
    pub status: Status,
    /// Why, for the client.
    pub text: String,
}

impl Failure {
    /// A failure with `status` and `text`.
    pub fn new(status: Status, text: impl Into<String>) -> Self {
        Failure {
            status,
            text: text.into(),
        }
    }
}

impl From<prost::DecodeError> for Failure {
    fn from(error: prost::DecodeError) -> Self {
        Failure::new(Status::BAD_REQUEST, format!("undecodable request: {error}"))
    }
}

impl From<HandleError> for Failure {
    fn from(error: HandleError) -> Self {
        let status = match error {
            // Both pass: the client may try again.
            HandleError::Unavailable | HandleError::Busy => Status::UNAVAILABLE,
            HandleError::FrameTooLarge { .. } => Status::INTERNAL_ERROR,
        };
        Failure::new(status, error.to_string())
    }
}

impl From<RoomError> for Failure {
    fn from(error: RoomError) -> Self {
        match error {
            RoomError::Refused(refusal) => Failure::new(refusal.status, refusal.text),
            other => Failure::new(other.status(), other.to_string()),
        }
    }
}

impl From<TimerError> for Failure {
    fn from(error: TimerError) -> Self {
        Failure::new(Status::INTERNAL_ERROR, error.to_string())
    }
}

impl From<Failure> for Reply {
    fn from(failure: Failure) -> Self {
        Reply::error(failure.status, failure.text)
    }
}

/// Decodes `payload` as `Req`; a payload that is not one is `bad_request`.
pub fn decode<Req: prost::Message + Default>(payload: &[u8]) -> Result<Req, Failure> {
    Ok(Req::decode(payload)?)
}

fn reply<Resp: prost::Message>(answer: Result<Resp, Failure>) -> Reply {
    match answer {
        Ok(response) => Reply::ok(response.encode_to_vec()),
        Err(failure) => failure.into(),
    }
}

/// Runs a typed async request handler: decodes the payload, awaits `handler`, and
/// encodes its reply, or answers its failure's status.
pub async fn request<Req, Resp, Fut>(payload: Bytes, handler: impl FnOnce(Req) -> Fut) -> Reply
where
    Req: prost::Message + Default,
    Resp: prost::Message,
    Fut: Future<Output = Result<Resp, Failure>>,
{
    match decode(&payload) {
        Ok(request) => reply(handler(request).await),
        Err(failure) => failure.into(),
    }
}

/// [`request`] for a handler that never waits (for `Service::request_now`).
pub fn request_now<Req, Resp>(
    payload: &Bytes,
    handler: impl FnOnce(Req) -> Result<Resp, Failure>,
) -> Reply
where
    Req: prost::Message + Default,
    Resp: prost::Message,
{
    reply(decode(payload).and_then(handler))
}

/// Runs a typed async notify handler; its status is what `Service::notify` returns.
pub async fn notify<Req, Fut>(payload: Bytes, handler: impl FnOnce(Req) -> Fut) -> Status
where
    Req: prost::Message + Default,
    Fut: Future<Output = Result<(), Failure>>,
{
    match decode(&payload) {
        Ok(request) => match handler(request).await {
            Ok(()) => Status::OK,
            Err(failure) => failure.status,
        },
        Err(failure) => failure.status,
    }
}

#[cfg(test)]
mod tests {
    use prost::Message as _;

    use super::*;

    /// A prost message written by hand (the runtime has no .proto of its own).
    #[derive(Clone, PartialEq, prost::Message)]
    struct Named {
        #[prost(string, tag = "1")]
        name: String,
    }

    fn now<T>(future: impl Future<Output = T>) -> T {
        let mut future = std::pin::pin!(future);
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        match future.as_mut().poll(&mut cx) {
            std::task::Poll::Ready(value) => value,
            std::task::Poll::Pending => panic!("the test handlers never wait"),
        }
    }

    async fn greet(request: Named) -> Result<Named, Failure> {
        if request.name.is_empty() {
            return Err(Failure::new(Status(1003), "a name, please"));
        }
        Ok(Named {
            name: format!("hello {}", request.name),
        })
    }

    #[test]
    fn a_typed_handler_gets_its_decoded_request_and_its_reply_is_encoded() {
        let payload = Bytes::from(Named { name: "ada".into() }.encode_to_vec());
        let answer = now(request(payload, greet));
        assert_eq!(answer.status, Status::OK);
        assert_eq!(decode::<Named>(&answer.payload).unwrap().name, "hello ada");
    }

    #[test]
    fn failures_and_undecodable_payloads_become_statuses() {
        let empty = Bytes::from(Named::default().encode_to_vec());
        let answer = now(request(empty, greet));
        assert_eq!(answer, Reply::error(Status(1003), "a name, please"));
        let garbage = Bytes::from_static(&[0xff, 0xff, 0xff]);
        assert_eq!(
            now(request(garbage.clone(), greet)).status,
            Status::BAD_REQUEST
        );
        assert_eq!(
            now(notify(garbage, |_: Named| async { Ok(()) })),
            Status::BAD_REQUEST
        );
        let refused = RoomError::Refused(crate::room::Refusal::new(Status(1010), "full"));
        assert_eq!(Failure::from(refused), Failure::new(Status(1010), "full"));
        assert_eq!(
            Failure::from(HandleError::Unavailable).status,
            Status::UNAVAILABLE
        );
    }

    #[test]
    fn the_fast_path_answers_without_a_future() {
        let payload = Bytes::from(Named { name: "bo".into() }.encode_to_vec());
        let answer = request_now(&payload, |r: Named| -> Result<Named, Failure> { Ok(r) });
        assert_eq!(decode::<Named>(&answer.payload).unwrap().name, "bo");
    }
}
