//! pvmdump: a PVM 3.4 protocol analyser for pcap/pcapng captures and hex vectors.
//!
//! [`analyse_bytes`] runs a whole capture through an [`Analyser`] and returns its lines; the
//! binary is a thin wrapper around it. See [`analyse`] for which flows are taken as PVM and how
//! they are reassembled.

pub mod analyse;
pub mod capture;
pub mod check;
pub mod decode;
pub mod ip;
pub mod link;
pub mod transport;

pub use analyse::{Analyser, Config, Stats};
pub use capture::CaptureError;

/// Decodes a whole capture held in memory. `hex_stream`: hex vector frames are stream fragments
/// (else UDP payloads). Lines are passed to `out` as they are produced.
pub fn analyse_with(
    bytes: &[u8],
    cfg: Config,
    hex_stream: bool,
    out: &mut dyn FnMut(String),
) -> Result<Stats, CaptureError> {
    let a = std::cell::RefCell::new(Analyser::new(cfg));
    let flush = |a: &mut Analyser, out: &mut dyn FnMut(String)| {
        for l in a.take_lines() {
            out(l);
        }
    };
    let out = std::cell::RefCell::new(out);
    capture::read(
        bytes,
        hex_stream,
        &mut |p| {
            let mut a = a.borrow_mut();
            a.packet(&p);
            flush(&mut a, &mut **out.borrow_mut());
        },
        &mut |e| {
            let mut a = a.borrow_mut();
            a.capture_error(&e);
            flush(&mut a, &mut **out.borrow_mut());
        },
    )?;
    let mut a = a.into_inner();
    a.finish();
    flush(&mut a, &mut **out.borrow_mut());
    Ok(a.stats().clone())
}

/// [`analyse_with`], collecting the lines.
pub fn analyse_bytes(bytes: &[u8], cfg: Config, hex_stream: bool) -> Result<(Vec<String>, Stats), CaptureError> {
    let mut lines = Vec::new();
    let stats = analyse_with(bytes, cfg, hex_stream, &mut |l| lines.push(l))?;
    Ok((lines, stats))
}
