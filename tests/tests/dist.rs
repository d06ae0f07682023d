//! `cargo xtask dist`'s binary: static, stripped, and able to trace from a root directory that
//! holds nothing but itself and the kernel's /proc and /sys, as in the `FROM scratch` image.

use std::{
    ffi::CString,
    fs,
    os::unix::{ffi::OsStrExt as _, process::CommandExt as _},
    path::{Path, PathBuf},
    process::Command,
};

use synscope_tests::{require_root, run_ok, synscope_bin};

const PT_DYNAMIC: u32 = 2;
const PT_INTERP: u32 = 3;
const DT_NULL: u64 = 0;
const DT_NEEDED: u64 = 1;
const SHT_SYMTAB: u32 = 2;

#[test]
fn dist_binary_is_static_and_traces_in_an_empty_root() {
    require_root();
    let workspace = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    // The build itself, not a binary left from an earlier one: an unchanged tree makes this a
    // few seconds. Under `cargo test` the outer cargo has released the build directory's lock
    // before it runs the tests, so this nested cargo does not wait for it.
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let built = run_ok(
        Command::new(cargo)
            .args(["xtask", "dist"])
            .current_dir(&workspace),
    );
    print!("{}", String::from_utf8_lossy(&built.stdout));
    let dist = workspace.join("target/dist");
    let binary = dist.join("synscope");
    run_ok(
        Command::new("sha256sum")
            .args(["--check", "--status", "synscope.sha256"])
            .current_dir(&dist),
    );

    let elf = Elf(fs::read(&binary).expect("read the dist binary"));
    assert!(
        elf.segments(PT_INTERP).is_empty(),
        "the dist binary asks for a program interpreter (dynamic loader)"
    );
    let needed = elf.dynamic_tags(DT_NEEDED);
    assert!(
        needed.is_empty(),
        "the dist binary needs {} shared libraries",
        needed.len()
    );
    assert!(
        !elf.has_section(SHT_SYMTAB),
        "the dist binary is not stripped (it has a symbol table)"
    );
    // glibc's own verdict too: "statically linked" for a static PIE, "not a dynamic
    // executable" for a static non-PIE.
    let ldd = Command::new("ldd").arg(&binary).output().expect("run ldd");
    let ldd = format!(
        "{}{}",
        String::from_utf8_lossy(&ldd.stdout),
        String::from_utf8_lossy(&ldd.stderr)
    );
    assert!(
        ldd.contains("statically linked") || ldd.contains("not a dynamic executable"),
        "ldd: {ldd}"
    );

    let root = EmptyRoot::new(&binary);
    let output = root
        .command(&["check"])
        .output()
        .expect("run synscope check");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.starts_with("synscope check: synscope can trace on this machine"),
        "{stdout}"
    );
    // The same kernel, BTF and hooks as the workspace's build (glibc, dynamically linked)
    // finds: musl and the missing root filesystem change nothing synscope relies on.
    let native = run_ok(
        Command::new(synscope_bin())
            .arg("check")
            .env_remove("SYNSCOPE_HOOKS"),
    );
    let native = String::from_utf8_lossy(&native.stdout);
    assert_eq!(
        machine_section(&stdout),
        machine_section(&native),
        "static:\n{stdout}\nnative:\n{native}"
    );
    assert!(
        machine_section(&stdout)
            .iter()
            .any(|l| l.trim_start().starts_with("syn ") && l.contains('/')),
        "{stdout}"
    );
}

/// `synscope check`'s lines before its first blank one: the kernel, its BTF and the hooks
/// chosen per stage (the listeners after them change from run to run).
fn machine_section(check: &str) -> Vec<&str> {
    check.lines().take_while(|l| !l.is_empty()).collect()
}

/// A root directory holding only the binary, and mount points for /proc and /sys. They are
/// mounted in the child's own mount namespace, so they vanish with it however the test ends;
/// dropping this removes the directory.
struct EmptyRoot {
    dir: PathBuf,
}

impl EmptyRoot {
    fn new(binary: &Path) -> Self {
        let root = Self {
            dir: PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("dist-root"),
        };
        // What a killed run left: its mount points are empty on this side.
        root.remove();
        for sub in ["proc", "sys"] {
            fs::create_dir_all(root.dir.join(sub)).expect("create a mount point");
        }
        fs::copy(binary, root.dir.join("synscope")).expect("copy the binary");
        root
    }

    fn remove(&self) {
        // One entry at a time, never recursively: were a mount point still bound, a recursive
        // removal would descend into the machine's /proc and /sys.
        let _ = fs::remove_file(self.dir.join("synscope"));
        for sub in ["proc", "sys"] {
            let _ = fs::remove_dir(self.dir.join(sub));
        }
        let _ = fs::remove_dir(&self.dir);
    }

    /// `/synscope ARGS` chrooted into the directory, with an empty environment.
    fn command(&self, args: &[&str]) -> Command {
        let cstr =
            |path: &Path| CString::new(path.as_os_str().as_bytes()).expect("path without NUL");
        let root = cstr(&self.dir);
        let mounts = [
            (cstr(Path::new("/proc")), cstr(&self.dir.join("proc"))),
            // Recursively: tracefs and securityfs are mounts below /sys.
            (cstr(Path::new("/sys")), cstr(&self.dir.join("sys"))),
        ];
        let mut command = Command::new("/synscope");
        command.args(args).env_clear();
        // SAFETY: between fork and exec the closure makes only system calls, on strings made
        // before the fork.
        unsafe {
            command.pre_exec(move || {
                let fail = |r: libc::c_int| {
                    if r == 0 {
                        Ok(())
                    } else {
                        Err(std::io::Error::last_os_error())
                    }
                };
                fail(libc::unshare(libc::CLONE_NEWNS))?;
                // Private first: the binds must not propagate back into the test's namespace.
                fail(libc::mount(
                    std::ptr::null(),
                    c"/".as_ptr(),
                    std::ptr::null(),
                    libc::MS_REC | libc::MS_PRIVATE,
                    std::ptr::null(),
                ))?;
                for (source, target) in &mounts {
                    fail(libc::mount(
                        source.as_ptr(),
                        target.as_ptr(),
                        std::ptr::null(),
                        libc::MS_BIND | libc::MS_REC,
                        std::ptr::null(),
                    ))?;
                }
                fail(libc::chroot(root.as_ptr()))?;
                fail(libc::chdir(c"/".as_ptr()))
            });
        }
        command
    }
}

impl Drop for EmptyRoot {
    fn drop(&mut self) {
        self.remove();
    }
}

/// The parts of a 64-bit little-endian ELF file the checks read.
struct Elf(Vec<u8>);

impl Elf {
    fn u16(&self, at: usize) -> usize {
        u16::from_le_bytes(self.0[at..at + 2].try_into().unwrap()).into()
    }

    fn u32(&self, at: usize) -> u32 {
        u32::from_le_bytes(self.0[at..at + 4].try_into().unwrap())
    }

    fn u64(&self, at: usize) -> u64 {
        u64::from_le_bytes(self.0[at..at + 8].try_into().unwrap())
    }

    /// Offsets of the file's entries of one table: (table offset, entry size, count) are read
    /// from the ELF header at these positions.
    fn table(&self, offset_at: usize, size_at: usize, count_at: usize) -> Vec<usize> {
        assert_eq!(
            &self.0[..6],
            b"\x7fELF\x02\x01",
            "not a 64-bit little-endian ELF"
        );
        let start = self.u64(offset_at) as usize;
        let (size, count) = (self.u16(size_at), self.u16(count_at));
        (0..count).map(|i| start + i * size).collect()
    }

    /// The (file offset, size) of each program header of type `kind`.
    fn segments(&self, kind: u32) -> Vec<(usize, usize)> {
        self.table(0x20, 0x36, 0x38)
            .into_iter()
            .filter(|&h| self.u32(h) == kind)
            .map(|h| (self.u64(h + 0x08) as usize, self.u64(h + 0x20) as usize))
            .collect()
    }

    /// Values of the dynamic section's entries tagged `tag`.
    fn dynamic_tags(&self, tag: u64) -> Vec<u64> {
        let mut values = Vec::new();
        for (offset, size) in self.segments(PT_DYNAMIC) {
            for entry in (offset..offset + size).step_by(16) {
                match self.u64(entry) {
                    DT_NULL => break,
                    t if t == tag => values.push(self.u64(entry + 8)),
                    _ => {}
                }
            }
        }
        values
    }

    fn has_section(&self, kind: u32) -> bool {
        self.table(0x28, 0x3a, 0x3c)
            .into_iter()
            .any(|h| self.u32(h + 4) == kind)
    }
}
