//! Every timer and limit of the pvmd <-> pvmd datagram protocol, in one place.
//!
//! Names in capitals are the legacy names from `pvmproto.h` (ddpro.h section) and `host.c`;
//! their values are the 3.4.6 ones. The remaining constants are limits this implementation adds
//! so that no input can make it allocate without bound.

use std::time::Duration;

/// Minimum number of times a packet must have been sent before its host may be declared dead.
pub const DDMINRETRIES: u32 = 10;

/// Retry intervals stop doubling once they reach this many whole seconds; also the upper clamp
/// of a round-trip sample.
pub const DDMAXRTT: Duration = Duration::from_secs(9);

/// Minimum accumulated retry time before a host may be declared dead
/// (`DDMINRETRIES * DDMAXRTT * 2` = 180 s).
pub const DDMINTIMEOUT: Duration = Duration::from_secs(DDMINRETRIES as u64 * 9 * 2);

/// Delay before retrying a packet whose `sendto()` failed with a transient error.
pub const DDERRRETRY: Duration = Duration::from_micros(300_000);

/// Interval between keepalive `DM_NULL` messages (one host per interval, round robin).
pub const DDPINGTIME: Duration = Duration::from_secs(60);

/// A freshly started slave that is not configured within this time exits (daemon-level timer;
/// kept here so that every timer of the protocol is listed in one place).
pub const DDBAILTIME: Duration = Duration::from_secs(300);

/// Round-trip estimate of a new host (`hd_new()`: `hd_rtt.tv_sec = 1`).
pub const INITIAL_RTT: Duration = Duration::from_secs(1);

/// Substituted for a round-trip sample below one microsecond (the C code's "XXX const").
pub const ZERO_RTT_SAMPLE: Duration = Duration::from_micros(1000);

/// Packets a peer may have unacknowledged (`nopax`); the legacy pvmd uses 1 (stop-and-wait).
pub const LEGACY_WINDOW: u16 = 1;

/// Largest window this implementation accepts. Must stay far below 32768 so that the legacy
/// half-range sequence comparison remains unambiguous over everything in flight.
pub const MAX_WINDOW: u16 = 4096;

/// Smallest datagram size (header + message header + 1 body byte) for which packetizing makes
/// progress.
pub const MIN_MTU: usize = 16 + 32 + 1;

/// Default cap on packets waiting for the window, per peer (about 16 MB of 4 KB datagrams).
pub const DEFAULT_MAX_SEND_QUEUE: usize = 4096;

/// Default cap on acknowledgements waiting to be sent, all peers together.
pub const DEFAULT_MAX_PENDING_ACKS: usize = 4096;

/// Default cap on a reassembled pvmd-bound message.
pub const DEFAULT_MAX_MESSAGE_LEN: usize = 16 << 20;

/// Default cap on undrained events; beyond it, incoming datagrams are refused unacknowledged so
/// that the sender retransmits them later.
pub const DEFAULT_MAX_EVENTS: usize = 65536;
