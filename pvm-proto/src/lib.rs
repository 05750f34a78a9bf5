//! pvm-proto is sans-IO: it reads no socket, clock or environment; bytes and `now` come in as
//! arguments, and bytes to send and the next deadline come out.
//!
//! Layers, bottom up:
//! - [`codes`]: every numeric constant of the PVM 3.4 protocol.
//! - [`tid`]: task identifiers.
//! - [`frag`], [`mesg`]: the 16-byte fragment headers and the 32-byte message header.
//! - [`xdr`]: the XDR primitives protocol bodies are built from.
//!
//! Panic contract: no function in this crate panics on any input. Every `parse` returns a value
//! or a [`ParseError`] naming the field and its byte offset; length fields are checked against
//! the input (or an explicit cap) before anything is allocated.

pub mod body;
pub mod codes;
pub mod ddp;
pub mod dsig;
pub mod encoding;
pub mod error;
pub mod frag;
pub mod hexvec;
pub mod mesg;
pub mod message;
pub mod spin;
pub mod tid;
pub mod vmdesc;
pub mod xdr;

pub use error::{ErrorKind, ParseError};
pub use tid::Tid;
