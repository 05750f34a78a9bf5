//! The 32-byte message header: re-emits to the input with the uninitialised ranges zeroed.
#![no_main]
use libfuzzer_sys::fuzz_target;
use pvm_proto::mesg::{MsgHeader, HEADER_LEN, UNINITIALISED};

fuzz_target!(|data: &[u8]| {
    match MsgHeader::parse(data) {
        Ok(h) => {
            let mut expect = [0u8; HEADER_LEN];
            expect.copy_from_slice(&data[..HEADER_LEN]);
            for r in UNINITIALISED {
                expect[r].fill(0);
            }
            assert_eq!(h.to_bytes(), expect);
        }
        Err(e) => {
            assert!(data.len() < HEADER_LEN);
            assert_eq!(e.field, "message header");
        }
    }
});
