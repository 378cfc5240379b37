#![no_main]

#[path = "../harness/search.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::index_file(data));
