//! `cargo xtask vm-test`: the integration tests on other kernels, under QEMU (TCG: KVM does not
//! work in these VMs), once per backend.
//!
//! Kernels come from Debian's package registry (newest 6.1 and 6.12 cloud kernels, cached in
//! target/vm). Each VM boots a busybox initramfs that holds the test binaries, synscope and
//! the scenario helper at their paths on this machine, the host tools the tests call (ip, ss,
//! nft, nginx, ab, setpriv) with their libraries, and the kernel's netfilter modules.

use std::{
    collections::BTreeSet,
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use anyhow::{Context as _, anyhow, bail};

use crate::{
    commands::{check, output},
    figures::Figures,
};

/// Debian kernel packages: the newest matching each pattern.
const KERNELS: [&str; 2] = [
    "linux-image-6.1.0-*-cloud-amd64-unsigned",
    "linux-image-6.12.*+deb12-cloud-amd64-unsigned",
];
const BACKENDS: &str = "fentry,kprobe,tracepoint";
/// Host programs the tests run, copied into the VM with their libraries.
const HOST_TOOLS: [&str; 6] = ["ip", "ss", "nft", "nginx", "ab", "setpriv"];
/// Modules the VM has no modprobe to load on demand: sock_diag for TCP (listening sockets'
/// queues and drop counters) and nftables (the drop scenarios).
const MODULES: [&str; 3] = ["inet_diag", "tcp_diag", "nf_tables"];
const VM_TIMEOUT: Duration = Duration::from_secs(25 * 60);

/// Parts of the matrix to run, for working on one cell.
#[derive(Debug, clap::Args)]
pub struct Selection {
    /// Only kernels whose package name contains this.
    #[arg(long)]
    kernel: Option<String>,
    /// Backends, comma-separated.
    #[arg(long, default_value = BACKENDS)]
    backends: String,
    /// Only test binaries whose name contains this.
    #[arg(long)]
    test: Option<String>,
}

impl Default for Selection {
    fn default() -> Self {
        Self {
            kernel: None,
            backends: BACKENDS.to_owned(),
            test: None,
        }
    }
}

pub fn run(root: &Path, selection: &Selection) -> anyhow::Result<()> {
    let work = root.join("target/vm");
    fs::create_dir_all(&work)?;
    for tool in ["qemu-system-x86_64", "busybox", "cpio", "gzip"] {
        which(tool).with_context(|| format!("{tool} is needed: run xtask/setup.sh"))?;
    }
    crate::cargo(
        root,
        &[
            "build",
            "--package",
            "probe-user",
            "--package",
            "synscope-tests",
        ],
    )?;
    let mut tests = test_executables(root)?;
    if let Some(filter) = &selection.test {
        tests.retain(|t| {
            t.file_name()
                .is_some_and(|n| n.to_string_lossy().contains(filter.as_str()))
        });
    }
    let synscope = root.join("target/debug/synscope");
    let mut payload: Vec<PathBuf> = tests.clone();
    payload.push(synscope.clone());
    payload.push(root.join("target/debug/scenario"));
    for tool in HOST_TOOLS {
        payload.push(which(tool)?);
    }

    // The host kernel's cells run natively: its image is not at hand to boot.
    let mut failed = false;
    let mut figures = Figures::default();
    if selection.kernel.as_deref().is_none_or(|k| k == "host") {
        failed |= host_cells(&work, &synscope, &tests, &selection.backends, &mut figures)?;
    }
    let patterns = KERNELS.iter().filter(|p| {
        selection
            .kernel
            .as_ref()
            .is_none_or(|k| p.contains(k.as_str()))
    });
    for pattern in patterns {
        let kernel = fetch_kernel(&work, pattern)?;
        let initrd = build_initramfs(&work, &kernel, &payload, &tests)?;
        let output = boot(&kernel.vmlinuz, &initrd, &synscope, &selection.backends)?;
        // The console may put terminal escapes before a line's start.
        let lines: Vec<&str> = output
            .lines()
            .filter_map(|l| {
                ["VMTEST", "VMFAIL", "VMLOG", "VMFIG"]
                    .iter()
                    .find_map(|tag| l.find(tag).map(|at| &l[at..]))
            })
            .collect();
        let verdicts: Vec<&&str> = lines.iter().filter(|l| l.starts_with("VMTEST")).collect();
        if verdicts.is_empty() {
            println!(
                "{}  no result: {}",
                kernel.release,
                output.lines().rev().take(5).collect::<Vec<_>>().join(" | ")
            );
            failed = true;
        }
        for line in lines {
            if let Some(recorded) = line.strip_prefix("VMFIG ") {
                // release backend name value tolerance
                let mut fields = recorded.splitn(3, ' ');
                if let (Some(release), Some(backend), Some(rest)) =
                    (fields.next(), fields.next(), fields.next())
                {
                    figures.add(release, backend, rest);
                }
            } else if let Some(verdict) = line.strip_prefix("VMTEST ") {
                println!("{verdict}");
                failed |= verdict.contains(" FAIL ");
            } else {
                println!("  {line}");
            }
        }
    }
    failed |= !figures.compare();
    if failed {
        bail!("the kernel matrix has failures");
    }
    Ok(())
}

/// The matrix cells of the running kernel: the same tests, natively, per backend.
fn host_cells(
    work: &Path,
    synscope: &Path,
    tests: &[PathBuf],
    backends: &str,
    figures: &mut Figures,
) -> anyhow::Result<bool> {
    let release = fs::read_to_string("/proc/sys/kernel/osrelease")?
        .trim()
        .to_owned();
    let mut failed = false;
    for backend in backends.split(',') {
        let check = Command::new(synscope)
            .arg("check")
            .env("SYNSCOPE_HOOKS", backend)
            .output()?;
        if !check.status.success() {
            let why = String::from_utf8_lossy(&check.stdout);
            println!(
                "{release} {backend} UNSUPPORTED {}",
                why.lines().next().unwrap_or_default()
            );
            continue;
        }
        let (mut passed, mut failures) = (0, 0);
        let figure_file = work.join(format!("figures.host.{backend}"));
        let _ = fs::remove_file(&figure_file);
        for test in tests {
            let out = Command::new(test)
                .arg("--test-threads=1")
                .env("SYNSCOPE_HOOKS", backend)
                .env("SYNSCOPE_FIGURES", &figure_file)
                .env("SYNSCOPE_BIN", synscope)
                .output()?;
            let text = String::from_utf8_lossy(&out.stdout);
            for line in text
                .lines()
                .filter(|l| l.starts_with("test ") && l.ends_with("FAILED"))
            {
                println!("  VMFAIL {release} {backend}: {line}");
            }
            let result = text
                .lines()
                .rfind(|l| l.starts_with("test result:"))
                .unwrap_or_default();
            passed += crate::count_before(result, " passed");
            failures += crate::count_before(result, " failed") + u64::from(result.is_empty());
        }
        if let Ok(text) = fs::read_to_string(&figure_file) {
            figures.add(&release, backend, &text);
        }
        let verdict = if failures == 0 { "PASS" } else { "FAIL" };
        println!(
            "{release} {backend} {verdict} ({passed} scenarios passed, {failures} failed) (host)"
        );
        failed |= failures > 0;
    }
    Ok(failed)
}

struct Kernel {
    release: String,
    vmlinuz: PathBuf,
    modules: PathBuf,
}

fn fetch_kernel(work: &Path, pattern: &str) -> anyhow::Result<Kernel> {
    let regex = format!(
        "^{}$",
        pattern
            .replace('.', "\\.")
            .replace('*', ".*")
            .replace('+', "\\+")
    );
    let search = output(Command::new("apt-cache").args(["search", "--names-only", &regex]))?;
    let mut names: Vec<&str> = search.lines().filter_map(|l| l.split(' ').next()).collect();
    names.sort_by_key(|name| version_key(name));
    let package = names
        .last()
        .ok_or_else(|| anyhow!("no package matches {pattern} (apt-get update?)"))?;
    let extract = work.join(package);
    if !extract.join("boot").is_dir() {
        let download = work.join("download");
        fs::create_dir_all(&download)?;
        check(
            Command::new("apt-get")
                .args(["download", package])
                .current_dir(&download),
        )?;
        let deb = fs::read_dir(&download)?
            .flatten()
            .map(|e| e.path())
            .find(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with(&format!("{package}_")))
            })
            .ok_or_else(|| anyhow!("apt-get download left no {package}"))?;
        check(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&extract))?;
    }
    let vmlinuz = fs::read_dir(extract.join("boot"))?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz-"))
        })
        .ok_or_else(|| anyhow!("{package} has no vmlinuz"))?;
    let release = vmlinuz
        .file_name()
        .unwrap()
        .to_string_lossy()
        .trim_start_matches("vmlinuz-")
        .to_owned();
    // The package leaves modules.dep to depmod at install time.
    if !extract
        .join("lib/modules")
        .join(&release)
        .join("modules.dep")
        .exists()
    {
        check(Command::new("depmod").arg("-b").arg(&extract).arg(&release))?;
    }
    Ok(Kernel {
        modules: extract.join("lib/modules").join(&release),
        vmlinuz,
        release,
    })
}

/// Sorts kernel package names by their numeric parts.
fn version_key(name: &str) -> Vec<u64> {
    name.split(|c: char| !c.is_ascii_digit())
        .filter_map(|n| n.parse().ok())
        .collect()
}

fn test_executables(root: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let json = output(
        Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args([
                "test",
                "--package",
                "synscope-tests",
                "--no-run",
                "--message-format=json",
            ])
            .current_dir(root),
    )?;
    let mut tests = Vec::new();
    for line in json.lines() {
        let Ok(message) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let is_test = message["target"]["kind"]
            .as_array()
            .is_some_and(|k| k.iter().any(|k| k == "test"));
        if is_test && let Some(path) = message["executable"].as_str() {
            tests.push(PathBuf::from(path));
        }
    }
    if tests.is_empty() {
        bail!("cargo built no integration test executables");
    }
    Ok(tests)
}

fn build_initramfs(
    work: &Path,
    kernel: &Kernel,
    payload: &[PathBuf],
    tests: &[PathBuf],
) -> anyhow::Result<PathBuf> {
    let stage = work.join(format!("initramfs-{}", kernel.release));
    let _ = fs::remove_dir_all(&stage);
    for dir in [
        "bin", "sbin", "proc", "sys", "dev", "tmp", "run", "etc", "modules", "vmtests", "var/lib",
        "var/log", "root",
    ] {
        fs::create_dir_all(stage.join(dir))?;
    }
    // busybox for the coreutils; real tools where the tests need them, and the host's sh:
    // busybox's own shell runs its applets (its `ip` has no netns) before anything on PATH.
    let busybox = which("busybox")?;
    fs::copy(&busybox, stage.join("bin/busybox"))?;
    let host_tools: Vec<&str> = HOST_TOOLS.iter().copied().chain(["sh"]).collect();
    for applet in output(Command::new(&busybox).arg("--list"))?.lines() {
        if !host_tools.contains(&applet) {
            let _ = std::os::unix::fs::symlink("busybox", stage.join("bin").join(applet));
        }
    }
    let mut copied = BTreeSet::new();
    for file in payload {
        copy_with_libraries(&stage, file, &mut copied)?;
    }
    let shell = which("sh")?;
    copy_with_libraries(&stage, &shell, &mut copied)?;
    fs::copy(&shell, stage.join("bin/sh"))?;
    fs::write(
        stage.join("etc/passwd"),
        "root:x:0:0::/root:/bin/sh\nnobody:x:65534:65534::/:/bin/false\n",
    )?;
    fs::write(stage.join("etc/group"), "root:x:0:\nnogroup:x:65534:\n")?;
    let list: Vec<String> = tests.iter().map(|t| t.display().to_string()).collect();
    fs::write(stage.join("vmtests/list"), list.join("\n"))?;
    fs::write(stage.join("init"), include_str!("../vm/init.sh"))?;
    check(Command::new("chmod").arg("755").arg(stage.join("init")))?;
    modules(&stage, kernel)?;

    let initrd = work.join(format!("initramfs-{}.cpio.gz", kernel.release));
    check(
        Command::new("sh")
            .arg("-c")
            .arg(format!(
                "find . | cpio -o -H newc --quiet | gzip -1 > '{}'",
                initrd.display()
            ))
            .current_dir(&stage),
    )?;
    Ok(initrd)
}

/// Copies `file` to the same path under `stage`, with the shared libraries `ldd` names.
fn copy_with_libraries(
    stage: &Path,
    file: &Path,
    copied: &mut BTreeSet<PathBuf>,
) -> anyhow::Result<()> {
    let mut files = vec![file.to_path_buf()];
    if let Ok(ldd) = output(Command::new("ldd").arg(file)) {
        for line in ldd.lines() {
            let path = line
                .split("=>")
                .nth(1)
                .unwrap_or(line)
                .split_whitespace()
                .next()
                .unwrap_or_default();
            if path.starts_with('/') {
                files.push(PathBuf::from(path));
            }
        }
    }
    for file in files {
        if !copied.insert(file.clone()) {
            continue;
        }
        let target = stage.join(file.strip_prefix("/").unwrap_or(&file));
        fs::create_dir_all(target.parent().unwrap())?;
        fs::copy(&file, &target).with_context(|| format!("copy {}", file.display()))?;
    }
    Ok(())
}

/// Decompressed modules and their load order, from the kernel's modules.dep.
fn modules(stage: &Path, kernel: &Kernel) -> anyhow::Result<()> {
    let deps = fs::read_to_string(kernel.modules.join("modules.dep")).context("modules.dep")?;
    let mut order: Vec<String> = Vec::new();
    for wanted in MODULES {
        let line = deps.lines().find(|l| {
            let path = l.split(':').next().unwrap_or_default();
            Path::new(path)
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(&format!("{wanted}.ko")))
        });
        let Some(line) = line else {
            continue; // built in
        };
        let (module, needs) = line.split_once(':').unwrap_or((line, ""));
        // modules.dep lists dependencies deepest last: load them in reverse, then the module.
        for path in needs.split_whitespace().rev().chain([module]) {
            let source = kernel.modules.join(path);
            let name = Path::new(path)
                .file_name()
                .unwrap()
                .to_string_lossy()
                .into_owned();
            let plain = name
                .trim_end_matches(".xz")
                .trim_end_matches(".zst")
                .to_owned();
            if order.contains(&plain) {
                continue;
            }
            let target = stage.join("modules").join(&plain);
            if name.ends_with(".xz") {
                check(Command::new("sh").arg("-c").arg(format!(
                    "xz -dc '{}' > '{}'",
                    source.display(),
                    target.display()
                )))?;
            } else if name.ends_with(".zst") {
                check(Command::new("sh").arg("-c").arg(format!(
                    "zstd -dcq '{}' > '{}'",
                    source.display(),
                    target.display()
                )))?;
            } else {
                fs::copy(&source, &target)?;
            }
            order.push(plain);
        }
    }
    fs::write(stage.join("modules/order"), order.join("\n"))?;
    Ok(())
}

fn boot(vmlinuz: &Path, initrd: &Path, synscope: &Path, backends: &str) -> anyhow::Result<String> {
    let append = format!(
        "console=ttyS0 panic=-1 quiet BACKENDS={backends} SYNSCOPE_BIN={}",
        synscope.display()
    );
    let child = Command::new("timeout")
        .arg(VM_TIMEOUT.as_secs().to_string())
        .args([
            "qemu-system-x86_64",
            "-accel",
            "tcg",
            "-cpu",
            "max",
            "-smp",
            "2",
            "-m",
            "2048",
        ])
        .args(["-nographic", "-no-reboot", "-kernel"])
        .arg(vmlinuz)
        .arg("-initrd")
        .arg(initrd)
        .args(["-append", &append])
        .stdin(Stdio::null())
        .output()
        .context("cannot start qemu")?;
    Ok(String::from_utf8_lossy(&child.stdout).into_owned())
}

fn which(tool: &str) -> anyhow::Result<PathBuf> {
    let path = output(Command::new("sh").args(["-c", &format!("command -v {tool}")]))?;
    let path = path.trim();
    if path.is_empty() {
        bail!("{tool} not found");
    }
    Ok(fs::canonicalize(path)?)
}
