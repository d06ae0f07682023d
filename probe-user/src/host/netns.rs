//! Network namespaces of the machine, and running code inside one of them.
//!
//! A namespace is found through any process living in it (/proc/PID/ns/net) or a name given
//! by `ip netns add` (/run/netns/NAME). Code that must see a namespace's own view (/proc/net,
//! net sysctls, sock_diag) runs on a short-lived thread that joined it: setns() changes only
//! the calling thread.

use std::{
    collections::BTreeMap,
    fs::{self, File},
    os::{fd::AsRawFd as _, unix::fs::MetadataExt as _},
    path::PathBuf,
};

use anyhow::{Context as _, anyhow};

const NAMED_NETNS_DIRS: [&str; 2] = ["/run/netns", "/var/run/netns"];

/// A handle on a network namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Netns {
    /// Inode number: how the kernel programs and reports identify the namespace.
    pub inode: u32,
    /// A file that refers to it.
    pub path: PathBuf,
}

/// Every network namespace that has a process or a name, by inode.
pub fn all() -> BTreeMap<u32, Netns> {
    let mut found = BTreeMap::new();
    let mut add = |path: PathBuf| {
        if let Ok(meta) = fs::metadata(&path) {
            let inode = meta.ino() as u32;
            found.entry(inode).or_insert(Netns { inode, path });
        }
    };
    add(PathBuf::from("/proc/self/ns/net"));
    for dir in NAMED_NETNS_DIRS {
        if let Ok(entries) = fs::read_dir(dir) {
            entries.flatten().for_each(|e| add(e.path()));
        }
    }
    if let Ok(entries) = fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let is_pid = entry
                .file_name()
                .to_str()
                .is_some_and(|s| s.bytes().all(|b| b.is_ascii_digit()));
            if is_pid {
                add(entry.path().join("ns/net"));
            }
        }
    }
    found
}

impl Netns {
    /// Runs `work` on a thread that has joined this namespace.
    pub fn run_in<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
    ) -> anyhow::Result<T> {
        let handle = File::open(&self.path)
            .with_context(|| format!("cannot open network namespace {}", self.path.display()))?;
        let thread = std::thread::spawn(move || -> anyhow::Result<T> {
            // SAFETY: setns on a valid namespace fd affects only this thread.
            if unsafe { libc::setns(handle.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                return Err(std::io::Error::last_os_error())
                    .context("setns into a network namespace");
            }
            work()
        });
        thread
            .join()
            .map_err(|_| anyhow!("a namespace worker thread panicked"))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_current_namespace() {
        let own = fs::metadata("/proc/self/ns/net").unwrap().ino() as u32;
        assert!(all().contains_key(&own));
    }
}
