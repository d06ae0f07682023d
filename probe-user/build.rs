//! Builds the kernel programs (probe-ebpf) for the BPF target and leaves the object in OUT_DIR.
//!
//! The nested cargo's output is shown only when it fails: relayed on success, a hundred
//! `Compiling ...` lines would read as warnings.
//!
//! With `SYNSCOPE_SKIP_EBPF=1` an empty object is written instead, so `cargo check`, clippy and
//! the unit tests work on machines without bpf-linker; such a binary refuses to trace.

use std::{
    env, fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, anyhow, bail};

/// Must match rust-toolchain.toml: bpf-linker has to share rustc's LLVM.
const EBPF_TOOLCHAIN: &str = "1.98.0";
const EBPF_PACKAGE: &str = "probe-ebpf";

fn main() -> anyhow::Result<()> {
    println!("cargo::rerun-if-env-changed=SYNSCOPE_SKIP_EBPF");
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").ok_or_else(|| anyhow!("OUT_DIR not set"))?);
    let object = out_dir.join(EBPF_PACKAGE);
    if env::var("SYNSCOPE_SKIP_EBPF").is_ok_and(|v| v == "1") {
        fs::write(&object, b"").context("writing the empty eBPF object")?;
        return Ok(());
    }
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").context("no manifest")?);
    let ebpf_dir = manifest_dir.join("..").join(EBPF_PACKAGE);
    // The eBPF crate is a build-dependency, which covers its library; its binary's sources
    // need this too.
    println!("cargo::rerun-if-changed={}", ebpf_dir.display());

    let target = match env::var("CARGO_CFG_TARGET_ENDIAN").as_deref() {
        Ok("big") => "bpfeb-unknown-none",
        _ => "bpfel-unknown-none",
    };
    let arch = env::var("CARGO_CFG_TARGET_ARCH").context("no target arch")?;
    // A target directory of its own (the outer cargo holds the workspace's lock), shared by
    // every build of this workspace for one architecture: clippy's, the tests' and the static
    // release binary's builds each run this script with an OUT_DIR of their own, and the
    // programs do not depend on the outer profile or target, only on the architecture. Each
    // would otherwise compile the programs (and core) again, 45 s on two cores.
    let target_dir =
        shared_target_dir(&out_dir, &arch).unwrap_or_else(|| out_dir.join("ebpf-target"));
    let output = Command::new("rustup")
        .args([
            "run",
            EBPF_TOOLCHAIN,
            "cargo",
            "build",
            "--package",
            EBPF_PACKAGE,
        ])
        .args([
            "--bins",
            "--release",
            "--target",
            target,
            "-Z",
            "build-std=core",
        ])
        .arg("--target-dir")
        .arg(&target_dir)
        .current_dir(&ebpf_dir)
        // -Z build-std=core on a stable toolchain, for this nested build only.
        .env("RUSTC_BOOTSTRAP", "1")
        // The programs' architecture (for aya-ebpf's register access) and the BTF the loader
        // needs.
        .env(
            "CARGO_ENCODED_RUSTFLAGS",
            format!("--cfg=bpf_target_arch=\"{arch}\"\x1f-Cdebuginfo=2\x1f-Clink-arg=--btf"),
        )
        // The outer build's compiler settings would pick the host toolchain.
        .env_remove("RUSTC")
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .env_remove("RUSTFLAGS")
        .output()
        .context("cannot run cargo for the eBPF programs (is rustup installed?)")?;
    if !output.status.success() {
        for line in String::from_utf8_lossy(&output.stderr).lines() {
            println!("cargo::warning={line}");
        }
        bail!(
            "building the eBPF programs failed ({}); run xtask/setup.sh if bpf-linker is missing",
            output.status
        );
    }
    let built = target_dir.join(target).join("release").join(EBPF_PACKAGE);
    fs::copy(&built, &object)
        .with_context(|| format!("copying {} to {}", built.display(), object.display()))?;
    Ok(())
}

/// `<target>/ebpf-programs/<arch>`, where `<target>` is the outer build's target directory:
/// OUT_DIR is `<target>/<profile>/build/<unit>/out`, or `<target>/<triple>/<profile>/...` in a
/// build with `--target`.
fn shared_target_dir(out_dir: &Path, arch: &str) -> Option<PathBuf> {
    let build = out_dir.ancestors().nth(2)?;
    if build.file_name()? != "build" {
        return None;
    }
    let above_profile = build.parent()?.parent()?;
    let triple = env::var_os("TARGET")?;
    let target = if above_profile.file_name()? == triple {
        above_profile.parent()?
    } else {
        above_profile
    };
    Some(target.join("ebpf-programs").join(arch))
}
