//! The Pod folder `<pods-dir>/<namespace>/<pod>/` and what lives in it:
//!
//! ```text
//! uid               the Pod uid the folder belongs to (a new Pod with the same name starts clean)
//! <container>.log   stdout+stderr of each container (kept after the Pod is deleted)
//! kubeconfig        the ServiceAccount kubeconfig (KUBECONFIG)
//! hosts             the Pod's hosts file (MILLRACE_HOSTS_FILE)
//! mounts/<path>     each volumeMount's mountPath (MILLRACE_MOUNT_PREFIX), linked to its volume
//! volumes/<name>/   materialised volumes (ConfigMap, Secret, projected, emptyDir, …)
//! run/<c>.pid       pid and start time of each running container, for cleanup after a crash
//! ```
//!
//! Owns paths and the folder's lifecycle; writes no content besides `uid`.

use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::fsutil::remove_path;

#[derive(Debug, Clone)]
pub struct PodDirs {
    root: PathBuf,
}

impl PodDirs {
    pub fn new(pods_dir: &Path, namespace: &str, name: &str) -> Self {
        Self { root: pods_dir.join(namespace).join(name) }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn log(&self, container: &str) -> PathBuf {
        self.root.join(format!("{container}.log"))
    }

    pub fn run_dir(&self) -> PathBuf {
        self.root.join("run")
    }

    pub fn pid_file(&self, container: &str) -> PathBuf {
        self.run_dir().join(format!("{container}.pid"))
    }

    pub fn mounts(&self) -> PathBuf {
        self.root.join("mounts")
    }

    pub fn volume(&self, name: &str) -> PathBuf {
        self.root.join("volumes").join(name)
    }

    pub fn kubeconfig(&self) -> PathBuf {
        self.root.join("kubeconfig")
    }

    pub fn hosts(&self) -> PathBuf {
        self.root.join("hosts")
    }

    /// Creates the folder for the Pod `uid`; a folder left by an earlier Pod of the same
    /// name is emptied first (its logs included: they belong to another Pod).
    pub fn prepare(&self, uid: &str) -> io::Result<()> {
        std::fs::create_dir_all(&self.root)?;
        let uid_file = self.root.join("uid");
        let previous = std::fs::read_to_string(&uid_file).ok();
        if previous.as_deref().map(str::trim) != Some(uid) {
            if previous.is_some() {
                for entry in std::fs::read_dir(&self.root)? {
                    remove_path(&entry?.path())?;
                }
            }
            std::fs::write(&uid_file, uid)?;
        }
        std::fs::create_dir_all(self.run_dir())?;
        std::fs::create_dir_all(self.mounts())?;
        Ok(())
    }

    /// After the Pod is gone: drops credentials, volumes and mounts, keeps the logs.
    pub fn clean_after_delete(&self) -> io::Result<()> {
        for path in
            [self.run_dir(), self.mounts(), self.root.join("volumes"), self.kubeconfig(), self.hosts()]
        {
            remove_path(&path)?;
        }
        Ok(())
    }
}

/// Removes folders of deleted Pods (no `run/` left) whose files are all older than
/// `max_age`, and namespace folders left empty. Returns how many Pod folders went.
pub fn prune_deleted(pods_dir: &Path, max_age: Duration) -> usize {
    let cutoff = SystemTime::now().checked_sub(max_age).unwrap_or(SystemTime::UNIX_EPOCH);
    let mut removed = 0;
    let Ok(namespaces) = std::fs::read_dir(pods_dir) else { return 0 };
    for ns in namespaces.flatten().filter(|e| e.file_type().is_ok_and(|t| t.is_dir())) {
        let Ok(pods) = std::fs::read_dir(ns.path()) else { continue };
        for pod in pods.flatten().map(|e| e.path()).filter(|p| p.is_dir()) {
            let newest = std::fs::read_dir(&pod)
                .into_iter()
                .flatten()
                .flatten()
                .filter_map(|f| f.metadata().ok()?.modified().ok())
                .max()
                .unwrap_or(SystemTime::UNIX_EPOCH);
            if !pod.join("run").exists() && newest < cutoff && remove_path(&pod).is_ok() {
                removed += 1;
            }
        }
        // Only succeeds when the namespace folder is empty.
        let _ = std::fs::remove_dir(ns.path());
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_pod_with_the_same_name_starts_clean() {
        let dir = tempfile::tempdir().expect("temp dir");
        let dirs = PodDirs::new(dir.path(), "ns", "p");
        dirs.prepare("uid-1").expect("prepare");
        std::fs::write(dirs.log("c"), "old").expect("log");
        dirs.prepare("uid-1").expect("same pod again");
        assert!(dirs.log("c").exists(), "a resumed Pod keeps its logs");
        dirs.prepare("uid-2").expect("new pod");
        assert!(!dirs.log("c").exists());
        std::fs::write(dirs.log("c"), "new").expect("log");
        std::fs::write(dirs.kubeconfig(), "secret").expect("kubeconfig");
        dirs.clean_after_delete().expect("clean");
        assert!(dirs.log("c").exists() && !dirs.kubeconfig().exists() && !dirs.mounts().exists());

        let live = PodDirs::new(dir.path(), "ns", "live");
        live.prepare("uid-3").expect("live pod");
        assert_eq!(prune_deleted(dir.path(), Duration::from_secs(3600)), 0, "recent logs are kept");
        assert_eq!(prune_deleted(dir.path(), Duration::ZERO), 1, "old folders of deleted Pods go");
        assert!(!dirs.root().exists() && live.root().exists());
    }
}
