//! Compiles this crate with `--cfg loom`, so that the `lvs-core` sources it includes leave
//! out their own (std-atomics) unit tests.

fn main() {
    println!("cargo::rustc-cfg=loom");
}
