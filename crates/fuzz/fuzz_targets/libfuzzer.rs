//! The coverage-guided entry point: libFuzzer runs the target named by `RAFTKV_FUZZ_TARGET`
//! (built by `scripts/fuzz` with LLVM's sanitizer coverage on the stable toolchain).

#![no_main]

use std::sync::OnceLock;

fn target() -> &'static raftkv_fuzz::Target {
    static TARGET: OnceLock<&'static raftkv_fuzz::Target> = OnceLock::new();
    TARGET.get_or_init(|| {
        let name = std::env::var("RAFTKV_FUZZ_TARGET").unwrap_or_default();
        raftkv_fuzz::find(&name).unwrap_or_else(|| {
            panic!("RAFTKV_FUZZ_TARGET={name:?} names no target (raftkv-fuzz list)")
        })
    })
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| (target().run)(data));
