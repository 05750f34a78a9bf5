//! Reading whole stream fragments from a task connection.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use pvm_proto::frag::{StreamFragHeader, HEADER_LEN};
use pvm_proto::ParseError;
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncReadExt};

#[derive(Debug, Error)]
pub enum ConnError {
    #[error("read: {0}")]
    Io(#[from] std::io::Error),
    /// The peer closed the stream inside a fragment.
    #[error("end of stream inside a fragment ({have} of {need} bytes)")]
    Truncated { have: usize, need: usize },
    #[error("bad fragment: {0}")]
    Parse(#[from] ParseError),
}

/// Owns the read half of a connection and its buffer; yields one whole fragment at a time.
pub struct FragReader<R> {
    rd: R,
    buf: Vec<u8>,
    /// Largest fragment payload accepted; raised by the daemon once the task has authenticated.
    limit: Arc<AtomicU32>,
}

const READ_CHUNK: usize = 8192;

impl<R: AsyncRead + Unpin> FragReader<R> {
    pub fn new(rd: R, limit: Arc<AtomicU32>) -> Self {
        FragReader {
            rd,
            buf: Vec::with_capacity(READ_CHUNK),
            limit,
        }
    }

    /// Reads until `buf` holds `need` bytes. Returns false on a clean end of stream (nothing
    /// buffered), an error on end of stream with a partial fragment.
    async fn fill(&mut self, need: usize) -> Result<bool, ConnError> {
        while self.buf.len() < need {
            let have = self.buf.len();
            // Read at most what the current fragment still needs plus a chunk, so a huge claimed
            // length never allocates before the bytes actually arrive.
            let want = (need - have).clamp(1, READ_CHUNK);
            self.buf.resize(have + want, 0);
            let n = match self.rd.read(&mut self.buf[have..]).await {
                Ok(n) => n,
                Err(e) => {
                    self.buf.truncate(have);
                    return Err(e.into());
                }
            };
            self.buf.truncate(have + n);
            if n == 0 {
                if have == 0 {
                    return Ok(false);
                }
                return Err(ConnError::Truncated { have, need });
            }
        }
        Ok(true)
    }

    /// The next fragment, or `None` at a clean end of stream.
    pub async fn next(&mut self) -> Result<Option<(StreamFragHeader, Vec<u8>)>, ConnError> {
        if !self.fill(HEADER_LEN).await? {
            return Ok(None);
        }
        let hdr = StreamFragHeader::parse(&self.buf, self.limit.load(Ordering::Relaxed))?;
        let total = HEADER_LEN + hdr.len as usize;
        if !self.fill(total).await? {
            return Err(ConnError::Truncated { have: 0, need: total });
        }
        let payload = self.buf[HEADER_LEN..total].to_vec();
        self.buf.drain(..total);
        Ok(Some((hdr, payload)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pvm_proto::frag::FragFlags;
    use pvm_proto::Tid;

    fn frag(len: u32, fill: u8) -> Vec<u8> {
        let mut v = StreamFragHeader {
            dst: Tid::LOCAL_PVMD,
            src: Tid(-1),
            len,
            flags: FragFlags::SOM | FragFlags::EOM,
        }
        .to_bytes()
        .to_vec();
        v.extend(std::iter::repeat(fill).take(len as usize));
        v
    }

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread().build().unwrap()
    }

    #[test]
    fn whole_fragments_then_clean_eof() {
        rt().block_on(async {
            let mut bytes = frag(5, 1);
            bytes.extend(frag(0, 0));
            bytes.extend(frag(3000, 2));
            let mut r = FragReader::new(&bytes[..], Arc::new(AtomicU32::new(4064)));
            let (h, p) = r.next().await.unwrap().unwrap();
            assert_eq!((h.len, p), (5, vec![1; 5]));
            assert_eq!(r.next().await.unwrap().unwrap().1.len(), 0);
            assert_eq!(r.next().await.unwrap().unwrap().1, vec![2; 3000]);
            assert!(r.next().await.unwrap().is_none());
        });
    }

    #[test]
    fn eof_inside_header_or_payload_is_an_error() {
        rt().block_on(async {
            let bytes = frag(10, 1);
            for cut in [1, 15, 16, 20, 25] {
                let mut r = FragReader::new(&bytes[..cut], Arc::new(AtomicU32::new(4064)));
                assert!(matches!(r.next().await, Err(ConnError::Truncated { .. })), "cut {cut}");
            }
        });
    }

    #[test]
    fn over_limit_length_is_refused_without_reading_it() {
        rt().block_on(async {
            let mut bytes = frag(0, 0);
            bytes[8..12].copy_from_slice(&0xffff_fff0u32.to_be_bytes());
            let mut r = FragReader::new(&bytes[..], Arc::new(AtomicU32::new(4064)));
            assert!(matches!(r.next().await, Err(ConnError::Parse(_))));
        });
    }

    #[test]
    fn byte_by_byte_input() {
        rt().block_on(async {
            let bytes = frag(7, 9);
            let (mut a, b) = tokio::io::duplex(1);
            let writer = tokio::spawn(async move {
                use tokio::io::AsyncWriteExt;
                for x in bytes {
                    a.write_all(&[x]).await.unwrap();
                }
            });
            let mut r = FragReader::new(b, Arc::new(AtomicU32::new(4064)));
            assert_eq!(r.next().await.unwrap().unwrap().1, vec![9; 7]);
            writer.await.unwrap();
            assert!(r.next().await.unwrap().is_none());
        });
    }
}
