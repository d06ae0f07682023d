//! Who an accepting process is beyond its pid: its cgroup, and the Kubernetes pod and
//! container it belongs to when the cgroup path says so.

/// A process's place in the machine.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProcessInfo {
    /// The cgroup path (cgroup v2's, or v1's first hierarchy).
    pub cgroup: String,
    /// Kubernetes pod UID and container ID, when the path carries them.
    pub pod: Option<String>,
    pub container: Option<String>,
}

/// Reads `/proc/PID/cgroup`; None once the process is gone.
pub fn read(pid: u32) -> Option<ProcessInfo> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    let cgroup = cgroup_path(&text)?;
    let (pod, container) = kubernetes_ids(&cgroup);
    Some(ProcessInfo {
        cgroup,
        pod,
        container,
    })
}

/// The path of `/proc/PID/cgroup`'s unified (v2) line `0::PATH`, or else of its first line.
pub fn cgroup_path(text: &str) -> Option<String> {
    let paths: Vec<(&str, &str)> = text
        .lines()
        .filter_map(|line| {
            let mut fields = line.splitn(3, ':');
            let id = fields.next()?;
            let _controllers = fields.next()?;
            Some((id, fields.next()?))
        })
        .collect();
    paths
        .iter()
        .find(|(id, _)| *id == "0")
        .or(paths.first())
        .map(|(_, path)| path.to_string())
}

/// Pod UID and container ID from a kubelet cgroup path, with either cgroup driver:
/// `/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<UID_WITH_UNDERSCORES>.slice/cri-containerd-<ID>.scope`
/// or `/kubepods/burstable/pod<UID>/<ID>`; a container ID alone for Docker's `/docker/<ID>`.
pub fn kubernetes_ids(path: &str) -> (Option<String>, Option<String>) {
    let mut pod = None;
    let mut container = None;
    for part in path.split('/') {
        let part = part.strip_suffix(".slice").unwrap_or(part);
        let part = part.strip_suffix(".scope").unwrap_or(part);
        let uid = match part.strip_prefix("pod") {
            Some(uid) => Some(uid),
            None if part.starts_with("kubepods") => part.find("-pod").map(|at| &part[at + 4..]),
            None => None,
        };
        if let Some(uid) = uid.filter(|uid| uid.len() >= 32) {
            pod = Some(uid.replace('_', "-"));
        }
        let id = part.rsplit(['-', ':']).next().unwrap_or(part);
        if id.len() == 64 && id.chars().all(|c| c.is_ascii_hexdigit()) {
            container = Some(id.to_owned());
        }
    }
    (pod, container)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0";

    #[test]
    fn unified_line_first() {
        let text = "12:cpu,cpuacct:/a\n0::/system.slice/nginx.service\n";
        assert_eq!(
            cgroup_path(text).as_deref(),
            Some("/system.slice/nginx.service")
        );
        assert_eq!(
            cgroup_path("3:memory:/v1only\n").as_deref(),
            Some("/v1only")
        );
        assert_eq!(cgroup_path(""), None);
        assert_eq!(cgroup_path("garbage"), None);
    }

    #[test]
    fn kubelet_paths_with_either_driver() {
        let systemd = format!(
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1b2c3d4e_5f60_4a7b_8c9d_0e1f2a3b4c5d.slice/cri-containerd-{ID}.scope"
        );
        assert_eq!(
            kubernetes_ids(&systemd),
            (
                Some("1b2c3d4e-5f60-4a7b-8c9d-0e1f2a3b4c5d".to_owned()),
                Some(ID.to_owned())
            )
        );
        let cgroupfs = format!("/kubepods/besteffort/pod1b2c3d4e-5f60-4a7b-8c9d-0e1f2a3b4c5d/{ID}");
        assert_eq!(
            kubernetes_ids(&cgroupfs),
            (
                Some("1b2c3d4e-5f60-4a7b-8c9d-0e1f2a3b4c5d".to_owned()),
                Some(ID.to_owned())
            )
        );
        assert_eq!(
            kubernetes_ids(&format!("/docker/{ID}")),
            (None, Some(ID.to_owned()))
        );
        assert_eq!(
            kubernetes_ids("/user.slice/user-0.slice/session-3.scope"),
            (None, None)
        );
    }
}
