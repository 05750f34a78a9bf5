//! The pvmd <-> pvmd reliable datagram protocol (wire.md §5), as a state machine without I/O.
//!
//! Each daemon owns one [`Endpoint`]. The daemon's shell feeds it what arrives on its UDP
//! socket ([`Endpoint::handle_datagram`]), what it wants to send ([`Endpoint::send_message`],
//! [`Endpoint::send_frag`] for task fragments relayed without reassembly, [`Endpoint::send_fin`],
//! [`Endpoint::send_finack`]) and the passing of time ([`Endpoint::handle_timeout`]); then it
//! drains [`Endpoint::poll_transmit`] onto the socket and [`Endpoint::poll_event`] into its
//! dispatcher, and sleeps until [`Endpoint::poll_timeout`]. Time is a [`Time`] passed in; the
//! endpoint reads no clock. [`sim`] joins several endpoints through a seeded faulty network.
//!
//! All timers and limits are in [`consts`] under their legacy names.
//!
//! # What the legacy daemon does, and where this follows it
//!
//! Read in the 3.4.4 sources (`pvmd.c`: `netinput()`, `netoutput()`, `pkt_to_host()`,
//! `fin_to_host()`, `finack_to_host()`, `work()`, `pvmbailout()`; `host.c`: `hd_new()`;
//! `ddpro.c`: `dm_startack()`, `dm_delhost()`; the ddpro section of `pvmproto.h`) and checked
//! against the captures in `tests/vectors/dd_*.hex`:
//!
//! - Per link `txseq` and `rxseq` start at 1 and step modulo 65536; "before" is `SEQLESSTHAN`
//!   ([`seq::less_than`]). DAT and FIN take a sequence number; ACK and FIN|ACK carry 0.
//! - Every DAT or FIN received, duplicates included, is answered by its own 16-byte ACK
//!   (dst = the peer pvmd, src = own pvmd, seq 0, ack = seq). The captures' ACKs are
//!   reproduced byte for byte. ACKs go out after pending first sends and before any
//!   retransmission (the 2001 fix to the output queue order).
//! - Received data goes through a reordering queue and is handed on only when its seq equals
//!   `rxseq`; anything before `rxseq` or already queued is a duplicate, acknowledged and dropped.
//!   A FIN is acknowledged but does not advance `rxseq` (it never enters the reordering queue).
//! - A packet entering the window gets `rta = 2 * rtt`, `rtt` starting at 1 s. After each send
//!   the packet is due again after `rta`, `rto` accumulates `rta`, and `rta` doubles while its
//!   whole-second part is below `DDMAXRTT` (so 2, 4, 8, 16, 16, ... s, or 2.25, 4.5, 9, 9, ...).
//!   When a packet falls due after at least `DDMINRETRIES` sends with `rto` of at least
//!   `DDMINTIMEOUT` whole seconds, its host is dead: with the initial rtt that is the 15th due
//!   time, 190 s after the first send, after 14 sends.
//! - RTT samples come only from DAT packets acknowledged after exactly one send:
//!   `rtt = (clamp(sample) + 3 rtt) / 4` in microseconds, a sample below 1 µs counting as 1 ms
//!   and above 9 s as 9 s.
//! - Keepalive: every `DDPINGTIME` the next host index after the last one pinged (wrapping,
//!   pvmd' excluded, own index included) gets a `DM_NULL` (XDR, ctx 0, wid 0, empty) unless it
//!   is ourselves or has packets waiting for the window; either way that turn is used up. The
//!   timer re-arms from the moment it fired.
//! - A FIN goes to the head of the output queue and bypasses the window (it is added to the
//!   in-flight set even when that is full). Its ACK makes the sender queue a FIN|ACK, also at the
//!   head; this is why the capture shows the FIN|ACK to pvmd' ahead of the ACK of its
//!   DM_STARTACK. A FIN|ACK is sent once, never retried; once sent to a host other than pvmd'
//!   (host 0) that host is deleted.
//! - FIN|ACK received: from the master it means halt ([`Event::Halt`]); from anyone else that
//!   host is gone ([`Event::PeerLost`] with [`LinkLoss::PeerFinAck`]); pvmd' keeps its table
//!   slot. A halting daemon sends FIN|ACK once to every other host, highest index first
//!   ([`Endpoint::bailout_datagrams`]).
//! - Source check: the host index of the src tid (task or pvmd) must be in the host table and
//!   the UDP source address and port must equal the recorded ones. Before that, a first fragment
//!   shorter than a message header is dropped.
//! - Sending: fragments are cut to `min(own mtu, peer mtu) - 16` bytes, 32 less for the first
//!   (which carries the message header); SOM stays on the first piece, EOM on the last.
//! - Transient `sendto()` failures (EINTR, ENOBUFS, ENOMEM) retry the datagram after
//!   `DDERRRETRY` without counting a send ([`Endpoint::transmit_failed`]); any other error
//!   makes the legacy daemon bail out, which is the shell's business.
//!
//! Measured against the installed 3.4.6 pvmd (ignored tests `interop_*` in `tests/ddp_sim.rs`,
//! run in a private network namespace with `--ignored`): with this endpoint as host 2, the
//! legacy master adds it (DM_SLCONF, DM_HTUPD, our DM_HTUPDACK, DM_HTCOMMIT), sends every data
//! packet once (it accepts our ACKs), acknowledges our retry of a lost packet, and deletes it
//! with FIN (seq 4, right after data seq 3, so bypassing the window) and FIN|ACK, which we take
//! as halt. To a host that never answers it sent at 0, 1.99, 5.99, 14.0, 30.0, 46.0, ... 174.1 s
//! and logged "timed out sending to 10.77.0.2 after 14, 190.000000" at 190 s, matching this
//! model's 0, 2, 6, 14, 30, 46, ... 174 s and give-up at 190 s.
//!
//! # Differences from the legacy daemon, deliberate
//!
//! - Out-of-window data (seq `window` or more ahead of `rxseq`) is dropped **unacknowledged**
//!   with an event; the C daemon acknowledged and kept any future seq without bound. A correct
//!   peer never sends such a packet (the sender's window is anchored at its oldest
//!   unacknowledged packet), so this only changes what an attacker or a broken peer gets.
//! - Queues are capped ([`EndpointConfig`]): waiting packets per peer, pending ACKs, a
//!   reassembled message, undrained events. Over the last cap input is refused unacknowledged so
//!   the sender retries ([`Event::Overflow`]).
//! - A datagram longer than the own mtu is dropped; the C daemon's `recvfrom()` silently
//!   truncated it to its buffer and processed the prefix.
//! - Timers fire at `now >= deadline`; the C loop used `deadline < now`.
//! - First sends of new packets leave immediately. The C daemon appended them to one global
//!   time-ordered queue behind any retry that was not yet due, so a host with a pending retry
//!   could delay first sends to other hosts by up to 16 s.
//! - With a window above 1 the window is anchored at the oldest unacknowledged packet and
//!   refills completely on each ACK; the C code (only ever run with `nopax = 1`) counted
//!   packets in flight and moved one packet per ACK. With window 1 both are the same.
//! - Delivery decisions that need the task and multicast tables (dropping datagrams for other
//!   hosts, dropping whole messages from tasks other than the scheduler) are left to the daemon:
//!   pvmd-bound data arrives as [`Event::Message`] with its `src`, the rest as [`Event::Packet`].
//!
//! # Findings against wire.md
//!
//! - Data packets without FFACK may carry a stale non-zero ack field (captured pkt 26: seq 4,
//!   ack 3, flags 0x07). Receivers ignore it; this endpoint writes 0 there.
//! - wire.md §5.3 says EINTR/ENOBUFS/ENOMEM "bail the pvmd"; the source does the opposite: those
//!   three are retried after `DDERRRETRY`, every other `sendto()` error bails out.
//! - The keepalive "skipping itself and hosts with queued output" skips the turn, it does not
//!   move on to the next host; and "queued output" means packets waiting for the window, not
//!   the one in flight.

pub mod consts;
mod endpoint;
pub mod seq;
pub mod sim;
mod time;

pub use endpoint::{
    DropReason, Dropped, Endpoint, EndpointConfig, Event, LinkLoss, LinkStats, Message, Packet, PeerConfig, PeerError,
    PeerInfo, SendError, Transmit, RTT_BUCKETS_US,
};
pub use time::Time;
