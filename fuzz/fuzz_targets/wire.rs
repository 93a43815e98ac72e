//! Fuzz the `wire` header views: parse an arbitrary frame through every view and assert the
//! invariants in `lvs_dataplane::wire::fuzzing::check_frame` (payloads inside their buffers,
//! lengths consistent, filled checksums verify, incremental updates equal full recomputes).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    lvs_dataplane::wire::fuzzing::check_frame(data);
});
