use which::which;

/// Rebuild the programs when bpf-linker changes (for example after an LLVM upgrade).
fn main() {
    if let Ok(linker) = which("bpf-linker") {
        println!("cargo:rerun-if-changed={}", linker.display());
    }
}
