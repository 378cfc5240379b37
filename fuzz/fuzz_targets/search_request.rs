#![no_main]

#[path = "../harness/serve.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::search_request(data));
