//! Fuzz the whole packet pipeline: an arbitrary frame goes through a fresh
//! `lvs_dataplane::pipeline_fuzzing::FuzzLab` (services of every forwarding method, v4 and v6,
//! live connections), which asserts the invariants: no panic, every forwarded or answered
//! frame parses with lengths that agree, every checksum verifies when the input's did, and
//! every frame is counted once. Input byte 0 is a control byte (bit 0: fill the frame's
//! checksums before processing; bit 1: also check that a burst of the frame twice
//! processes like two single calls), the rest is the frame.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut lab = lvs_dataplane::pipeline_fuzzing::FuzzLab::new();
    lab.run_input(data);
    if data.first().is_some_and(|c| c & 2 != 0) {
        lvs_dataplane::pipeline_fuzzing::check_burst_equivalence(data);
    }
});
