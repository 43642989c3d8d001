//! Feeds arbitrary bytes to the control protocol's request parser: it must
//! accept or reject every input without panicking, and what it accepts
//! must encode back to a request that parses to the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lightwhale::control::Request;

fuzz_target!(|data: &[u8]| {
    if let Ok(request) = serde_json::from_slice::<Request>(data) {
        let encoded = serde_json::to_vec(&request).expect("a parsed request encodes");
        let decoded: Request = serde_json::from_slice(&encoded).expect("an encoded request parses");
        assert_eq!(decoded, request);
    }
});
