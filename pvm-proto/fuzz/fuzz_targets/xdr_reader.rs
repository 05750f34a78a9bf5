//! XDR strings: every successful read consumed what the writer produces for the same string,
//! except the pad bytes (garbage allowed on input) and a missing pad at the very end.
#![no_main]
use libfuzzer_sys::fuzz_target;
use pvm_proto::xdr::{pad4, XdrReader, XdrWriter};

fuzz_target!(|data: &[u8]| {
    let mut r = XdrReader::new(data);
    while !r.is_empty() {
        let start = r.position();
        let s = match r.string_bytes("s") {
            Ok(s) => s,
            Err(e) => {
                assert!(e.offset >= start && e.offset <= data.len(), "{e}");
                return;
            }
        };
        let used = &data[start..r.position()];
        let declared = u32::from_be_bytes(used[..4].try_into().unwrap()) as usize;
        if declared == 0 {
            assert!(s.is_empty() && used.len() == 4);
            continue;
        }
        assert_eq!(s.len() + 1, declared);
        let at_end = r.is_empty();
        assert!(used.len() == 4 + pad4(declared) || (at_end && used.len() >= 4 + declared));
        let mut w = XdrWriter::new();
        w.string_bytes(s);
        let mut norm = used.to_vec();
        norm[4 + declared..].fill(0);
        assert_eq!(&w.buf[..norm.len()], &norm[..]);
    }
});
