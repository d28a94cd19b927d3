//! podproxy: the Pod's front door. This crate holds, so far, the request-shaping core that the
//! server is built on: route matching ([`route`]), path normalization before routing
//! ([`normalize`]), and the forwarding headers ([`forward`]). The listener, upstream pool,
//! access log, admin and drain come next (issue "podproxy"); until then no binary is shipped.

pub mod forward;
pub mod normalize;
pub mod route;
