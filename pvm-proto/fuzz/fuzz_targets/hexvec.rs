//! The hex vector format: any text parses or errs without panicking, and what parses renders
//! back to text that parses to the same frames.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(file) = pvm_proto::hexvec::parse(text) {
        let again = pvm_proto::hexvec::parse(&pvm_proto::hexvec::render(&file)).expect("rendered text parses");
        // Line numbers may move (blank lines are not kept); everything else must survive.
        let key = |f: &pvm_proto::hexvec::VectorFile| {
            let frames: Vec<_> = f.frames.iter().map(|fr| (fr.label.clone(), fr.bytes.clone())).collect();
            (f.description.clone(), frames)
        };
        assert_eq!(key(&again), key(&file));
    }
    let _ = pvm_proto::hexvec::parse_bytes(text);
});
