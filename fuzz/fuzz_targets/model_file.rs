#![no_main]

#[path = "../harness/model.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::model_file(data));
