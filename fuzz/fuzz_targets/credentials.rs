//! The pairing store's file readers (current and OpenClaw's older formats) must never panic,
//! and whatever they accept must survive the rewrite in the current format: written back and
//! read again, it is the same data, in the current format.
#![no_main]

use clawfort::pairing::format::{parse_allow_list, parse_requests, Format};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok((list, _)) = parse_allow_list(data) {
        let written = serde_json::to_vec(&list).expect("an allow-list serialises");
        let again = parse_allow_list(&written).expect("a rewritten allow-list reads back");
        assert_eq!(again, (list, Format::Current));
    }
    if let Ok((requests, _)) = parse_requests(data) {
        let written = serde_json::to_vec(&serde_json::json!({ "version": 1, "requests": requests }))
            .expect("requests serialise");
        let again = parse_requests(&written).expect("rewritten requests read back");
        assert_eq!(again, (requests, Format::Current));
    }
});
