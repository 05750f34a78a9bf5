//! Large message buffers kept for reuse between messages.
//!
//! A task that sends or receives 1 MB messages in a loop would otherwise get a fresh allocation
//! for every message: glibc serves such sizes with mmap(2), so each message's bytes are first
//! written into pages the kernel has to fault in (one fault per 4 KiB page, a quarter of a
//! direct-route round trip at 1 MB), and a buffer that grows while packing or reassembling is
//! copied again at every doubling. Freed message buffers (send and receive) land here instead
//! and the next large message takes one whose pages are already mapped.
//!
//! The pool is bounded: at most [`MAX_BUFFERS`] buffers and [`MAX_BYTES`] bytes of capacity, and
//! only buffers of at least [`MIN_POOLED`] bytes (small ones are cheap to allocate). A buffer that
//! does not fit is freed as before.

use std::sync::Mutex;

/// Smaller buffers are not worth keeping: malloc serves them from its arenas without faults.
pub const MIN_POOLED: usize = 64 << 10;
/// Buffers kept at most (a ping-pong holds about two per direction).
pub const MAX_BUFFERS: usize = 4;
/// Capacity kept at most, all buffers together.
pub const MAX_BYTES: usize = 80 << 20;

static POOL: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());

/// Returns a buffer to the pool (or frees it if the pool is full or it is too small or large).
/// When the pool is full, a larger buffer replaces the smallest one kept: the largest messages
/// are the ones whose faults cost most.
pub fn put(mut v: Vec<u8>) {
    let cap = v.capacity();
    if !(MIN_POOLED..=MAX_BYTES).contains(&cap) {
        return;
    }
    v.clear();
    let Ok(mut p) = POOL.lock() else { return };
    if p.len() >= MAX_BUFFERS {
        let Some((i, small)) = p.iter().enumerate().min_by_key(|(_, b)| b.capacity()) else {
            return;
        };
        if small.capacity() >= cap {
            return;
        }
        p.swap_remove(i);
    }
    while !p.is_empty() && p.iter().map(Vec::capacity).sum::<usize>() + cap > MAX_BYTES {
        let Some((i, _)) = p.iter().enumerate().min_by_key(|(_, b)| b.capacity()) else {
            break;
        };
        p.swap_remove(i);
    }
    p.push(v);
}

/// The smallest pooled buffer with room for `min` bytes, if any.
pub fn take(min: usize) -> Option<Vec<u8>> {
    if min < MIN_POOLED / 2 {
        return None;
    }
    let mut p = POOL.lock().ok()?;
    let (i, _) = p
        .iter()
        .enumerate()
        .filter(|(_, b)| b.capacity() >= min)
        .min_by_key(|(_, b)| b.capacity())?;
    Some(p.swap_remove(i))
}

/// The largest pooled buffer, for a message whose final size is not known yet.
pub fn take_largest() -> Option<Vec<u8>> {
    let mut p = POOL.lock().ok()?;
    let (i, _) = p.iter().enumerate().max_by_key(|(_, b)| b.capacity())?;
    Some(p.swap_remove(i))
}

/// The buffer source of the library's reassemblers ([`pvm_proto::message::BufferSource`]): a
/// message that arrives whole gets the smallest pooled buffer that holds it; the first of
/// several fragments, when it is a large one (so the message probably is too), gets the largest.
pub fn for_message(first: usize, complete: bool) -> Vec<u8> {
    let v = if complete {
        take(first)
    } else if first >= 2048 {
        take_largest()
    } else {
        None
    };
    v.unwrap_or_default()
}

/// A received body whose buffer is much larger than the message (a small message that took a
/// large pooled buffer): copied into an exact allocation, and the large buffer goes back.
pub fn fit(v: Vec<u8>) -> Vec<u8> {
    if v.capacity() >= MIN_POOLED && v.capacity() > 4 * v.len() + 4096 {
        let exact = v.clone();
        put(v);
        return exact;
    }
    v
}

/// Bytes currently kept (tests).
pub fn kept() -> (usize, usize) {
    POOL.lock()
        .map(|p| (p.len(), p.iter().map(Vec::capacity).sum()))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    // One test: the pool is process-wide, parallel tests would see each other's buffers.
    #[test]
    fn the_pool_stays_bounded_and_hands_out_fitting_buffers() {
        put(Vec::with_capacity(1024)); // too small: freed
        assert_eq!(kept().0, 0);
        for _ in 0..10 {
            put(Vec::with_capacity(1 << 20));
        }
        assert_eq!(kept().0, MAX_BUFFERS);
        put(Vec::with_capacity(MAX_BYTES + 1)); // too large: freed
        assert!(kept().1 <= MAX_BYTES);
        put(Vec::with_capacity(32 << 20));
        put(Vec::with_capacity(32 << 20));
        put(Vec::with_capacity(32 << 20));
        let (n, bytes) = kept();
        assert!(n <= MAX_BUFFERS && bytes <= MAX_BYTES, "{n} buffers, {bytes} bytes");
        let b = take(2 << 20).expect("a 32 MiB buffer fits 2 MiB");
        assert!(b.capacity() >= 2 << 20 && b.is_empty());
        assert!(take(100 << 20).is_none());
        assert!(take(100).is_none(), "small requests are not served from the pool");
        let small = fit({
            let mut v = b;
            v.extend_from_slice(b"abc");
            v
        });
        assert_eq!(small, b"abc");
        assert!(small.capacity() < 4096);
        while take_largest().is_some() {}
        assert_eq!(kept(), (0, 0));
    }
}
