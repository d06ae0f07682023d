//! Builds the kernel programs (probe-ebpf) for the BPF target and leaves the object in OUT_DIR.
//!
//! With `SYNSCOPE_SKIP_EBPF=1` an empty object is written instead, so `cargo check`, clippy and
//! the unit tests work on machines without bpf-linker; such a binary refuses to trace.

use std::{env, fs, path::PathBuf};

use anyhow::{Context as _, anyhow};
use aya_build::{Package, Toolchain};

/// Must match rust-toolchain.toml: bpf-linker has to share rustc's LLVM.
const EBPF_TOOLCHAIN: &str = "1.98.0";

fn main() -> anyhow::Result<()> {
    println!("cargo::rerun-if-env-changed=SYNSCOPE_SKIP_EBPF");
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").ok_or_else(|| anyhow!("OUT_DIR not set"))?);
    if env::var("SYNSCOPE_SKIP_EBPF").is_ok_and(|v| v == "1") {
        fs::write(out_dir.join("probe-ebpf"), b"").context("writing the empty eBPF object")?;
        return Ok(());
    }
    // -Z build-std=core on a stable toolchain; set here only, so the rest of the build stays
    // on plain stable.
    // SAFETY: build scripts are single-threaded.
    unsafe { env::set_var("RUSTC_BOOTSTRAP", "1") };
    let cargo_metadata::Metadata { packages, .. } = cargo_metadata::MetadataCommand::new()
        .no_deps()
        .exec()
        .context("cargo metadata")?;
    let ebpf = packages
        .iter()
        .find(|p| p.name.as_str() == "probe-ebpf")
        .ok_or_else(|| anyhow!("probe-ebpf package not found"))?;
    let root_dir = ebpf
        .manifest_path
        .parent()
        .ok_or_else(|| anyhow!("probe-ebpf manifest has no parent"))?;
    aya_build::build_ebpf(
        [Package {
            name: ebpf.name.as_str(),
            root_dir: root_dir.as_str(),
            ..Default::default()
        }],
        Toolchain::Custom(EBPF_TOOLCHAIN),
    )
}
