//! Both 16-byte fragment headers: parse succeeds exactly when 16 bytes are present (and the
//! stream length is within the cap), and re-emits to the input with the never-read bytes zeroed.
#![no_main]
use libfuzzer_sys::fuzz_target;
use pvm_proto::frag::{DatagramHeader, StreamFragHeader, HEADER_LEN};

const CAP: u32 = 1 << 20;

fuzz_target!(|data: &[u8]| {
    let mut expect = [0u8; HEADER_LEN];
    if data.len() >= HEADER_LEN {
        expect[..13].copy_from_slice(&data[..13]);
    }
    match StreamFragHeader::parse(data, CAP) {
        Ok(h) => {
            assert!(data.len() >= HEADER_LEN && h.len <= CAP);
            assert_eq!(h.to_bytes(), expect);
        }
        Err(e) => {
            let len = data.get(8..12).map(|b| u32::from_be_bytes(b.try_into().unwrap()));
            assert!(data.len() < HEADER_LEN || len.unwrap() > CAP, "{e}");
        }
    }
    match DatagramHeader::parse(data) {
        Ok(h) => assert_eq!(h.to_bytes(), expect),
        Err(_) => assert!(data.len() < HEADER_LEN),
    }
});
