//! Name resolution without cluster DNS: hosts-format files mapping Service names to the
//! runner's loopback Service addresses (and headless Services to their ready Pods).
//!
//! `<pods-dir>/hosts` lists every Service by its qualified names
//! (`web.ns`, `web.ns.svc`, `web.ns.svc.cluster.local`); `<pods-dir>/<ns>/<pod>/hosts` adds the
//! short names of the Pod's own namespace and the Pod's own hostname, like a Pod's
//! `/etc/hosts` plus DNS search path. Containers find theirs through `MILLRACE_HOSTS_FILE`.
//! Owns rendering (pure) and writing the files (atomically, only when they change).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::ServiceEntry;
use crate::fsutil::write_if_changed;

/// One name the hosts files resolve, relative to its namespace (`web`, or `pod-0.sub` for
/// a Pod behind a headless Service).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostRecord {
    pub ip: Ipv4Addr,
    pub namespace: String,
    pub name: String,
}

/// The Pod a per-Pod file is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodHostsIdentity {
    pub namespace: String,
    pub name: String,
    pub ip: Ipv4Addr,
    pub hostname: String,
    pub subdomain: Option<String>,
}

/// Records for Services with an address and, for headless Services, each ready Pod.
pub fn records(entries: &[ServiceEntry]) -> Vec<HostRecord> {
    let mut out = Vec::new();
    for entry in entries {
        if let Some(ip) = entry.address {
            out.push(HostRecord { ip, namespace: entry.namespace.clone(), name: entry.name.clone() });
        }
        for backend in &entry.headless_backends {
            out.push(HostRecord {
                ip: backend.ip,
                namespace: entry.namespace.clone(),
                name: entry.name.clone(),
            });
            if let Some(hostname) = &backend.hostname {
                out.push(HostRecord {
                    ip: backend.ip,
                    namespace: entry.namespace.clone(),
                    name: format!("{hostname}.{}", entry.name),
                });
            }
        }
    }
    out.sort_by(|a, b| (&a.namespace, &a.name, a.ip).cmp(&(&b.namespace, &b.name, b.ip)));
    out
}

/// The file's text: the global view when `pod` is `None`, else the view from inside `pod`.
pub fn render(records: &[HostRecord], domain: &str, pod: Option<&PodHostsIdentity>) -> String {
    let mut out = String::from(
        "# Written by millrace-pod-runner (docs/pod-runner.md): Service names on the local platform.\n\
         127.0.0.1\tlocalhost\n",
    );
    if let Some(pod) = pod {
        let mut names = vec![pod.hostname.clone()];
        if let Some(sub) = &pod.subdomain {
            names.insert(0, format!("{}.{sub}.{}.svc.{domain}", pod.hostname, pod.namespace));
        }
        let _ = writeln!(out, "{}\t{}", pod.ip, names.join(" "));
    }
    for record in records {
        let qualified = format!("{}.{}", record.name, record.namespace);
        let mut names = vec![format!("{qualified}.svc.{domain}"), format!("{qualified}.svc"), qualified];
        if pod.is_some_and(|p| p.namespace == record.namespace) {
            names.push(record.name.clone());
        }
        let _ = writeln!(out, "{}\t{}", record.ip, names.join(" "));
    }
    out
}

/// Keeps the global and per-Pod hosts files current.
#[derive(Debug)]
pub struct HostsFiles {
    global: PathBuf,
    domain: String,
    state: Mutex<HostsState>,
}

#[derive(Debug, Default)]
struct HostsState {
    records: Vec<HostRecord>,
    pods: HashMap<PathBuf, PodHostsIdentity>,
}

impl HostsFiles {
    pub fn new(pods_dir: &Path, domain: &str) -> Self {
        Self {
            global: pods_dir.join("hosts"),
            domain: domain.to_string(),
            state: Mutex::new(HostsState::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HostsState> {
        match self.state.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Writes `path` for `pod` now and keeps it updated until [`HostsFiles::unregister`].
    pub fn register(&self, path: PathBuf, pod: PodHostsIdentity) -> std::io::Result<()> {
        let mut state = self.lock();
        write_if_changed(&path, render(&state.records, &self.domain, Some(&pod)).as_bytes(), 0o644)?;
        state.pods.insert(path, pod);
        Ok(())
    }

    pub fn unregister(&self, path: &Path) {
        self.lock().pods.remove(path);
    }

    /// Rewrites the files whose content changes with `records`.
    pub fn update(&self, records: Vec<HostRecord>) {
        let mut state = self.lock();
        if let Err(err) =
            write_if_changed(&self.global, render(&records, &self.domain, None).as_bytes(), 0o644)
        {
            tracing::warn!(path = %self.global.display(), %err, "writing the hosts file failed");
        }
        for (path, pod) in &state.pods {
            if let Err(err) =
                write_if_changed(path, render(&records, &self.domain, Some(pod)).as_bytes(), 0o644)
            {
                tracing::warn!(path = %path.display(), %err, "writing a Pod's hosts file failed");
            }
        }
        state.records = records;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::services::HeadlessBackend;
    use std::collections::BTreeMap;

    fn entries() -> Vec<ServiceEntry> {
        let base = |ns: &str, name: &str| ServiceEntry {
            namespace: ns.into(),
            name: name.into(),
            address: None,
            ports: Vec::new(),
            selector: BTreeMap::new(),
            headless_backends: Vec::new(),
            node_ports: Vec::new(),
        };
        vec![
            ServiceEntry { address: Some(Ipv4Addr::new(127, 20, 0, 5)), ..base("jobs", "coord") },
            ServiceEntry { address: Some(Ipv4Addr::new(127, 20, 0, 6)), ..base("other", "db") },
            ServiceEntry {
                headless_backends: vec![HeadlessBackend {
                    ip: Ipv4Addr::new(127, 10, 0, 9),
                    hostname: Some("kafka-0".into()),
                }],
                ..base("jobs", "kafka")
            },
        ]
    }

    #[test]
    fn global_file_has_qualified_names_only() {
        let text = render(&records(&entries()), "cluster.local", None);
        assert!(
            text.contains("127.20.0.5\tcoord.jobs.svc.cluster.local coord.jobs.svc coord.jobs\n"),
            "{text}"
        );
        assert!(text.contains("127.20.0.6\tdb.other.svc.cluster.local db.other.svc db.other\n"), "{text}");
        assert!(text.contains("127.10.0.9\tkafka.jobs.svc.cluster.local"), "{text}");
        assert!(text.contains("127.10.0.9\tkafka-0.kafka.jobs.svc.cluster.local"), "{text}");
    }

    #[test]
    fn pod_file_adds_short_names_for_its_namespace_and_itself() {
        let pod = PodHostsIdentity {
            namespace: "jobs".into(),
            name: "worker-1".into(),
            ip: Ipv4Addr::new(127, 10, 0, 3),
            hostname: "worker-1".into(),
            subdomain: None,
        };
        let text = render(&records(&entries()), "cluster.local", Some(&pod));
        assert!(text.contains("127.10.0.3\tworker-1\n"), "{text}");
        assert!(
            text.contains("127.20.0.5\tcoord.jobs.svc.cluster.local coord.jobs.svc coord.jobs coord\n"),
            "{text}"
        );
        assert!(text.contains("127.20.0.6\tdb.other.svc.cluster.local db.other.svc db.other\n"), "{text}");
    }

    #[test]
    fn files_are_written_and_kept_current() {
        let dir = tempfile::tempdir().expect("temp dir");
        let files = HostsFiles::new(dir.path(), "cluster.local");
        let pod_file = dir.path().join("pod-hosts");
        let pod = PodHostsIdentity {
            namespace: "jobs".into(),
            name: "w".into(),
            ip: Ipv4Addr::new(127, 10, 0, 3),
            hostname: "w".into(),
            subdomain: None,
        };
        files.register(pod_file.clone(), pod).expect("register writes");
        files.update(records(&entries()));
        let text = std::fs::read_to_string(&pod_file).expect("pod file");
        assert!(text.contains(" coord\n"));
        assert!(
            std::fs::read_to_string(dir.path().join("hosts")).expect("global file").contains("coord.jobs")
        );
        files.unregister(&pod_file);
        files.update(Vec::new());
        assert!(
            std::fs::read_to_string(&pod_file).expect("pod file").contains(" coord\n"),
            "unregistered files are left alone"
        );
    }
}
