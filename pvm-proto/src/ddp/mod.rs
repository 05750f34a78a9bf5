//! The pvmd <-> pvmd reliable datagram protocol (wire.md §5), as a state machine without I/O.
//!
//! TODO: module docs (written at the end).

pub mod consts;
mod endpoint;
pub mod seq;
pub mod sim;
mod time;

pub use endpoint::{
    DropReason, Dropped, Endpoint, EndpointConfig, Event, LinkLoss, Message, Packet, PeerConfig, PeerError, PeerInfo,
    SendError, Transmit,
};
pub use time::Time;
