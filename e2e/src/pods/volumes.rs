//! Volumes without mounts: each volume is materialised as a folder under
//! `<pod>/volumes/<name>/` (ConfigMap, Secret, projected and downwardAPI files written
//! atomically and refreshed in place; emptyDir and unsupported kinds as plain folders;
//! hostPath as the host folder itself), and each volumeMount's `mountPath` becomes a
//! symlink `<pod>/mounts/<mountPath>` → the volume (or its `subPath`).
//!
//! Processes see the host filesystem, so a path like `/etc/config/app.yaml` must be
//! translated: [`MountRewriter`] rewrites args, env values and workingDir that start with a
//! mountPath (or `--flag=<mountPath>…`), and `MILLRACE_MOUNT_PREFIX` tells programs the root.
//!
//! Owns the files under `volumes/` and `mounts/`; fetching the ConfigMaps, Secrets and
//! tokens they come from is [`fetch_sources`].

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::Ipv4Addr;
use std::path::{Component, Path, PathBuf};

use k8s_openapi::api::core::v1::{
    ConfigMap, Container, DownwardAPIVolumeFile, KeyToPath, Pod, Secret, Volume,
};
use kube::{Api, Client};

use super::downward::{self, NodeCapacity};
use super::layout::PodDirs;
use crate::fsutil::{remove_path, write_if_changed};
use crate::identity::{PodIdentity, TokenKey};

const DEFAULT_MODE: i32 = 0o644;
const DEFAULT_TOKEN_SECONDS: i64 = 3600;

#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    #[error("MountVolume.SetUp failed for volume {volume:?}: configmap {name:?} not found")]
    ConfigMapNotFound { volume: String, name: String },
    #[error("MountVolume.SetUp failed for volume {volume:?}: secret {name:?} not found")]
    SecretNotFound { volume: String, name: String },
    #[error(
        "MountVolume.SetUp failed for volume {volume:?}: references non-existent key {key:?} of {kind} {name:?}"
    )]
    MissingKey { volume: String, kind: &'static str, name: String, key: String },
    #[error("volume {volume:?}: {message}")]
    Invalid { volume: String, message: String },
    #[error("volumeMount {mount_path:?} of container {container:?}: {message}")]
    Mount { container: String, mount_path: String, message: String },
    #[error("volume {volume:?}: {source}")]
    Downward { volume: String, source: downward::DownwardError },
    #[error("volume {volume:?}: {source}")]
    Token { volume: String, source: Box<crate::identity::IdentityError> },
    #[error("reading {kind} {name:?}: {source}")]
    Fetch { kind: &'static str, name: String, source: Box<kube::Error> },
    #[error("writing {path}: {source}")]
    Io { path: String, source: std::io::Error },
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> VolumeError + '_ {
    move |source| VolumeError::Io { path: path.display().to_string(), source }
}

/// `/etc/config/` → `/etc/config`; refuses relative paths and `..`.
pub fn normalize_mount_path(path: &str) -> Result<String, String> {
    if !path.starts_with('/') {
        return Err("mountPath must be absolute".into());
    }
    let mut parts = Vec::new();
    for component in Path::new(path).components() {
        match component {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(part) => parts.push(part.to_string_lossy().into_owned()),
            Component::ParentDir | Component::Prefix(_) => {
                return Err("mountPath must not contain '..'".into());
            }
        }
    }
    Ok(format!("/{}", parts.join("/")))
}

/// A path inside a volume (`items[].path`, `subPath`): relative, without `..`.
fn relative_path(path: &str) -> Option<PathBuf> {
    let path = Path::new(path);
    let ok = !path.as_os_str().is_empty()
        && path.components().all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
    ok.then(|| path.to_path_buf())
}

/// Translates container paths under a mountPath into the Pod folder.
#[derive(Debug, Clone)]
pub struct MountRewriter {
    root: PathBuf,
    /// Normalised mountPaths, longest first so nested mounts win.
    paths: Vec<String>,
}

impl MountRewriter {
    pub fn new(root: &Path, mount_paths: impl IntoIterator<Item = String>) -> Self {
        let mut paths: Vec<String> = mount_paths
            .into_iter()
            .filter_map(|p| normalize_mount_path(&p).ok())
            .filter(|p| p != "/")
            .collect();
        paths.sort_by_key(|p| std::cmp::Reverse(p.len()));
        paths.dedup();
        Self { root: root.to_path_buf(), paths }
    }

    pub fn for_container(root: &Path, container: &Container) -> Self {
        Self::new(root, container.volume_mounts.iter().flatten().map(|m| m.mount_path.clone()))
    }

    /// `value` with a leading mountPath (or one right after `--flag=`) moved under the root.
    pub fn rewrite(&self, value: &str) -> String {
        if let Some(rewritten) = self.rewrite_path(value) {
            return rewritten;
        }
        if let Some((flag, rest)) = value.split_once('=')
            && flag.starts_with('-')
            && let Some(rewritten) = self.rewrite_path(rest)
        {
            return format!("{flag}={rewritten}");
        }
        value.to_string()
    }

    fn rewrite_path(&self, value: &str) -> Option<String> {
        let under_mount = self.paths.iter().any(|p| {
            value.strip_prefix(p.as_str()).is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
        });
        under_mount.then(|| format!("{}{value}", self.root.display()))
    }

    pub fn covers(&self, value: &str) -> bool {
        self.rewrite_path(value).is_some()
    }
}

/// ConfigMaps, Secrets and tokens the Pod's volumes read, fetched once per sync.
#[derive(Debug, Default)]
pub struct VolumeSources {
    pub config_maps: BTreeMap<String, ConfigMap>,
    pub secrets: BTreeMap<String, Secret>,
    pub tokens: HashMap<TokenKey, String>,
}

pub async fn fetch_sources(
    client: &Client,
    pod: &Pod,
    identity: &mut PodIdentity,
) -> Result<VolumeSources, VolumeError> {
    let namespace = pod.metadata.namespace.clone().unwrap_or_default();
    let mut config_maps = BTreeSet::new();
    let mut secrets = BTreeSet::new();
    let mut tokens = Vec::new();
    for volume in pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()) {
        if let Some(cm) = &volume.config_map {
            config_maps.insert(cm.name.clone());
        }
        if let Some(name) = volume.secret.as_ref().and_then(|s| s.secret_name.clone()) {
            secrets.insert(name);
        }
        for source in volume.projected.iter().flat_map(|p| p.sources.iter().flatten()) {
            if let Some(cm) = &source.config_map {
                config_maps.insert(cm.name.clone());
            }
            if let Some(secret) = &source.secret {
                secrets.insert(secret.name.clone());
            }
            if let Some(token) = &source.service_account_token {
                tokens.push(token_key(token.audience.clone(), token.expiration_seconds));
            }
        }
    }
    let mut sources = VolumeSources::default();
    let cm_api: Api<ConfigMap> = Api::namespaced(client.clone(), &namespace);
    for name in config_maps {
        if let Some(cm) = cm_api.get_opt(&name).await.map_err(|source| VolumeError::Fetch {
            kind: "ConfigMap",
            name: name.clone(),
            source: Box::new(source),
        })? {
            sources.config_maps.insert(name, cm);
        }
    }
    let secret_api: Api<Secret> = Api::namespaced(client.clone(), &namespace);
    for name in secrets {
        if let Some(secret) = secret_api.get_opt(&name).await.map_err(|source| VolumeError::Fetch {
            kind: "Secret",
            name: name.clone(),
            source: Box::new(source),
        })? {
            sources.secrets.insert(name, secret);
        }
    }
    for key in tokens {
        let token = identity.token(client, &key).await.map_err(|source| VolumeError::Token {
            volume: "serviceAccountToken".into(),
            source: Box::new(source),
        })?;
        sources.tokens.insert(key, token);
    }
    Ok(sources)
}

fn token_key(audience: Option<String>, expiration_seconds: Option<i64>) -> TokenKey {
    TokenKey {
        audience: audience.filter(|a| !a.is_empty()),
        expiration_seconds: expiration_seconds.unwrap_or(DEFAULT_TOKEN_SECONDS),
    }
}

type Files = BTreeMap<PathBuf, (Vec<u8>, u32)>;

/// Inputs to compute volume contents.
pub struct VolumeContext<'a> {
    pub pod: &'a Pod,
    pub pod_ip: Ipv4Addr,
    pub node: NodeCapacity,
    pub sources: &'a VolumeSources,
}

/// The files a file-backed volume should hold; `None` for folder-like volumes.
pub fn desired_files(volume: &Volume, ctx: &VolumeContext<'_>) -> Result<Option<Files>, VolumeError> {
    let name = &volume.name;
    let mut files = Files::new();
    if let Some(cm) = &volume.config_map {
        let default_mode = cm.default_mode.unwrap_or(DEFAULT_MODE);
        add_config_map(&mut files, name, &cm.name, cm.items.as_deref(), cm.optional, default_mode, ctx)?;
    } else if let Some(secret) = &volume.secret {
        let secret_name = secret.secret_name.clone().unwrap_or_default();
        let default_mode = secret.default_mode.unwrap_or(DEFAULT_MODE);
        add_secret(
            &mut files,
            name,
            &secret_name,
            secret.items.as_deref(),
            secret.optional,
            default_mode,
            ctx,
        )?;
    } else if let Some(projected) = &volume.projected {
        let default_mode = projected.default_mode.unwrap_or(DEFAULT_MODE);
        for source in projected.sources.iter().flatten() {
            if let Some(cm) = &source.config_map {
                add_config_map(
                    &mut files,
                    name,
                    &cm.name,
                    cm.items.as_deref(),
                    cm.optional,
                    default_mode,
                    ctx,
                )?;
            }
            if let Some(secret) = &source.secret {
                add_secret(
                    &mut files,
                    name,
                    &secret.name,
                    secret.items.as_deref(),
                    secret.optional,
                    default_mode,
                    ctx,
                )?;
            }
            if let Some(downward) = &source.downward_api {
                add_downward(&mut files, name, downward.items.as_deref(), default_mode, ctx)?;
            }
            if let Some(token) = &source.service_account_token {
                let key = token_key(token.audience.clone(), token.expiration_seconds);
                let value = ctx.sources.tokens.get(&key).cloned().unwrap_or_default();
                let path = item_path(name, &token.path)?;
                files.insert(path, (value.into_bytes(), mode(default_mode)));
            }
        }
    } else if let Some(downward) = &volume.downward_api {
        add_downward(
            &mut files,
            name,
            downward.items.as_deref(),
            downward.default_mode.unwrap_or(DEFAULT_MODE),
            ctx,
        )?;
    } else {
        return Ok(None);
    }
    Ok(Some(files))
}

fn mode(mode: i32) -> u32 {
    u32::try_from(mode).unwrap_or(0o644) & 0o7777
}

fn item_path(volume: &str, path: &str) -> Result<PathBuf, VolumeError> {
    relative_path(path).ok_or_else(|| VolumeError::Invalid {
        volume: volume.to_string(),
        message: format!("path {path:?} must be relative and must not contain '..'"),
    })
}

/// Where a volume's keys come from, for error messages.
struct KeySource<'a> {
    volume: &'a str,
    kind: &'static str,
    name: &'a str,
    optional: bool,
}

fn add_items(
    files: &mut Files,
    source: &KeySource<'_>,
    data: &BTreeMap<String, Vec<u8>>,
    items: Option<&[KeyToPath]>,
    default_mode: i32,
) -> Result<(), VolumeError> {
    let volume = source.volume;
    match items {
        None => {
            for (key, value) in data {
                files.insert(item_path(volume, key)?, (value.clone(), mode(default_mode)));
            }
        }
        Some(items) => {
            for item in items {
                match data.get(&item.key) {
                    Some(value) => {
                        files.insert(
                            item_path(volume, &item.path)?,
                            (value.clone(), mode(item.mode.unwrap_or(default_mode))),
                        );
                    }
                    None if source.optional => {}
                    None => {
                        return Err(VolumeError::MissingKey {
                            volume: volume.to_string(),
                            kind: source.kind,
                            name: source.name.to_string(),
                            key: item.key.clone(),
                        });
                    }
                }
            }
        }
    }
    Ok(())
}

fn add_config_map(
    files: &mut Files,
    volume: &str,
    name: &str,
    items: Option<&[KeyToPath]>,
    optional: Option<bool>,
    default_mode: i32,
    ctx: &VolumeContext<'_>,
) -> Result<(), VolumeError> {
    let optional = optional == Some(true);
    let Some(cm) = ctx.sources.config_maps.get(name) else {
        return if optional {
            Ok(())
        } else {
            Err(VolumeError::ConfigMapNotFound { volume: volume.to_string(), name: name.to_string() })
        };
    };
    let mut data: BTreeMap<String, Vec<u8>> =
        cm.data.iter().flatten().map(|(k, v)| (k.clone(), v.clone().into_bytes())).collect();
    data.extend(cm.binary_data.iter().flatten().map(|(k, v)| (k.clone(), v.0.clone())));
    add_items(files, &KeySource { volume, kind: "ConfigMap", name, optional }, &data, items, default_mode)
}

fn add_secret(
    files: &mut Files,
    volume: &str,
    name: &str,
    items: Option<&[KeyToPath]>,
    optional: Option<bool>,
    default_mode: i32,
    ctx: &VolumeContext<'_>,
) -> Result<(), VolumeError> {
    let optional = optional == Some(true);
    let Some(secret) = ctx.sources.secrets.get(name) else {
        return if optional {
            Ok(())
        } else {
            Err(VolumeError::SecretNotFound { volume: volume.to_string(), name: name.to_string() })
        };
    };
    let data: BTreeMap<String, Vec<u8>> =
        secret.data.iter().flatten().map(|(k, v)| (k.clone(), v.0.clone())).collect();
    add_items(files, &KeySource { volume, kind: "Secret", name, optional }, &data, items, default_mode)
}

fn add_downward(
    files: &mut Files,
    volume: &str,
    items: Option<&[DownwardAPIVolumeFile]>,
    default_mode: i32,
    ctx: &VolumeContext<'_>,
) -> Result<(), VolumeError> {
    for item in items.unwrap_or_default() {
        let value = if let Some(field) = &item.field_ref {
            downward::field_value(ctx.pod, ctx.pod_ip, &field.field_path)
        } else if let Some(resource) = &item.resource_field_ref {
            downward::resource_value(ctx.pod, None, resource, ctx.node)
        } else {
            continue;
        }
        .map_err(|source| VolumeError::Downward { volume: volume.to_string(), source })?;
        files.insert(
            item_path(volume, &item.path)?,
            (value.into_bytes(), mode(item.mode.unwrap_or(default_mode))),
        );
    }
    Ok(())
}

/// The Pod's volumes on disk.
#[derive(Debug)]
pub struct VolumeManager {
    dirs: PodDirs,
    /// Files written per volume, so a key removed from a ConfigMap disappears from disk.
    written: HashMap<String, BTreeSet<PathBuf>>,
}

impl VolumeManager {
    pub fn new(dirs: PodDirs) -> Self {
        Self { dirs, written: HashMap::new() }
    }

    /// First setup: clears file-backed volumes left by an earlier run, writes every volume
    /// and links every mount.
    pub fn setup(&mut self, ctx: &VolumeContext<'_>) -> Result<(), VolumeError> {
        for volume in volumes(ctx.pod) {
            if volume.config_map.is_some()
                || volume.secret.is_some()
                || volume.projected.is_some()
                || volume.downward_api.is_some()
            {
                let dir = self.dirs.volume(&volume.name);
                remove_path(&dir).map_err(io_error(&dir))?;
            }
        }
        self.written.clear();
        self.sync(ctx)?;
        self.link_mounts(ctx.pod)
    }

    /// Brings file-backed volumes up to date (only changed files are rewritten).
    pub fn sync(&mut self, ctx: &VolumeContext<'_>) -> Result<(), VolumeError> {
        for volume in volumes(ctx.pod) {
            let dir = self.volume_dir(volume);
            match desired_files(volume, ctx)? {
                Some(files) => {
                    std::fs::create_dir_all(&dir).map_err(io_error(&dir))?;
                    let previous = self.written.remove(&volume.name).unwrap_or_default();
                    for stale in previous.iter().filter(|p| !files.contains_key(*p)) {
                        let path = dir.join(stale);
                        remove_path(&path).map_err(io_error(&path))?;
                    }
                    for (relative, (content, mode)) in &files {
                        let path = dir.join(relative);
                        if write_if_changed(&path, content, *mode).map_err(io_error(&path))?
                            && !previous.is_empty()
                        {
                            tracing::info!(volume = %volume.name, file = %relative.display(), "volume file updated");
                        }
                    }
                    self.written.insert(volume.name.clone(), files.into_keys().collect());
                }
                None => {
                    if let Some(host) = &volume.host_path {
                        if matches!(host.type_.as_deref(), Some("DirectoryOrCreate")) {
                            std::fs::create_dir_all(&dir).map_err(io_error(&dir))?;
                        }
                    } else {
                        if volume.persistent_volume_claim.is_some() || volume.empty_dir.is_none() {
                            tracing::debug!(volume = %volume.name, "volume kind without local support: using a plain folder");
                        }
                        std::fs::create_dir_all(&dir).map_err(io_error(&dir))?;
                    }
                }
            }
        }
        Ok(())
    }

    fn volume_dir(&self, volume: &Volume) -> PathBuf {
        match &volume.host_path {
            Some(host) => PathBuf::from(&host.path),
            None => self.dirs.volume(&volume.name),
        }
    }

    /// Links `mounts/<mountPath>` → volume (or subPath) for every container.
    pub fn link_mounts(&self, pod: &Pod) -> Result<(), VolumeError> {
        let by_name: HashMap<&str, &Volume> = volumes(pod).map(|v| (v.name.as_str(), v)).collect();
        let mut links: BTreeMap<String, (PathBuf, String)> = BTreeMap::new();
        let spec = pod.spec.as_ref();
        let containers =
            spec.iter().flat_map(|s| s.init_containers.iter().flatten().chain(s.containers.iter()));
        for container in containers {
            for mount in container.volume_mounts.iter().flatten() {
                let fail = |message: String| VolumeError::Mount {
                    container: container.name.clone(),
                    mount_path: mount.mount_path.clone(),
                    message,
                };
                let mount_path = normalize_mount_path(&mount.mount_path).map_err(fail)?;
                if mount_path == "/" {
                    return Err(fail("mounting at / is not supported by the pod runner".into()));
                }
                if mount.sub_path_expr.as_deref().is_some_and(|e| !e.is_empty()) {
                    return Err(fail("subPathExpr is not supported by the pod runner".into()));
                }
                let volume = by_name
                    .get(mount.name.as_str())
                    .ok_or_else(|| fail(format!("no volume named {:?}", mount.name)))?;
                let mut target = self.volume_dir(volume);
                if let Some(sub) = mount.sub_path.as_deref().filter(|s| !s.is_empty()) {
                    let sub = relative_path(sub).ok_or_else(|| fail(format!("invalid subPath {sub:?}")))?;
                    target = target.join(sub);
                    if !target.exists() {
                        std::fs::create_dir_all(&target).map_err(io_error(&target))?;
                    }
                }
                match links.get(&mount_path) {
                    Some((existing, _)) if existing != &target => {
                        return Err(fail(format!(
                            "another container mounts a different volume at the same path; the pod runner has one mount folder per Pod ({})",
                            self.dirs.mounts().display()
                        )));
                    }
                    _ => {
                        links.insert(mount_path, (target, container.name.clone()));
                    }
                }
            }
        }
        // Parents before children, so a nested mount lands inside its parent's volume.
        let mut ordered: Vec<(String, PathBuf)> =
            links.into_iter().map(|(path, (target, _))| (path, target)).collect();
        ordered.sort_by_key(|(path, _)| path.matches('/').count());
        for (mount_path, target) in ordered {
            let link = self.dirs.mounts().join(mount_path.trim_start_matches('/'));
            ensure_symlink(&link, &target)?;
        }
        Ok(())
    }
}

fn volumes(pod: &Pod) -> impl Iterator<Item = &Volume> {
    pod.spec.iter().flat_map(|s| s.volumes.iter().flatten())
}

fn ensure_symlink(link: &Path, target: &Path) -> Result<(), VolumeError> {
    if let Ok(existing) = std::fs::read_link(link) {
        if existing == target {
            return Ok(());
        }
        std::fs::remove_file(link).map_err(io_error(link))?;
    } else if let Ok(meta) = std::fs::symlink_metadata(link) {
        // A real folder here was only ever created as the parent of another mount.
        if meta.is_dir() && std::fs::read_dir(link).map(|mut d| d.next().is_none()).unwrap_or(false) {
            std::fs::remove_dir(link).map_err(io_error(link))?;
        } else {
            return Err(VolumeError::Io {
                path: link.display().to_string(),
                source: std::io::Error::other("exists and is not a mount link"),
            });
        }
    }
    if let Some(parent) = link.parent() {
        std::fs::create_dir_all(parent).map_err(io_error(parent))?;
    }
    std::os::unix::fs::symlink(target, link).map_err(io_error(link))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;

    #[test]
    fn mount_paths_normalise() {
        assert_eq!(normalize_mount_path("/etc/config/"), Ok("/etc/config".into()));
        assert_eq!(normalize_mount_path("/etc//config"), Ok("/etc/config".into()));
        assert!(normalize_mount_path("etc").is_err());
        assert!(normalize_mount_path("/etc/../x").is_err());
    }

    #[test]
    fn values_under_a_mount_path_are_rewritten() {
        let rewriter = MountRewriter::new(
            Path::new("/pods/ns/p/mounts"),
            ["/etc/config".to_string(), "/etc/config/nested/".to_string(), "/data".to_string()],
        );
        assert_eq!(rewriter.rewrite("/etc/config"), "/pods/ns/p/mounts/etc/config");
        assert_eq!(rewriter.rewrite("/etc/config/app.yaml"), "/pods/ns/p/mounts/etc/config/app.yaml");
        assert_eq!(rewriter.rewrite("/etc/config/nested/x"), "/pods/ns/p/mounts/etc/config/nested/x");
        assert_eq!(
            rewriter.rewrite("--config=/etc/config/app.yaml"),
            "--config=/pods/ns/p/mounts/etc/config/app.yaml"
        );
        assert_eq!(rewriter.rewrite("/etc/configuration"), "/etc/configuration");
        assert_eq!(rewriter.rewrite("/database"), "/database");
        assert_eq!(
            rewriter.rewrite("cat /etc/config/x"),
            "cat /etc/config/x",
            "only leading paths are rewritten"
        );
        assert_eq!(
            rewriter.rewrite("KEY=/data/x"),
            "KEY=/data/x",
            "only --flag= values are rewritten after '='"
        );
        assert!(rewriter.covers("/data/file") && !rewriter.covers("/tmp"));
    }

    fn pod() -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "ns", "uid": "u", "labels": {"app": "x"}},
            "spec": {
                "volumes": [
                    {"name": "cfg", "configMap": {"name": "app-config"}},
                    {"name": "picked", "configMap": {"name": "app-config", "items": [{"key": "mode", "path": "sub/mode.txt", "mode": 0o600}]}},
                    {"name": "creds", "secret": {"secretName": "creds"}},
                    {"name": "scratch", "emptyDir": {}},
                    {"name": "info", "projected": {"sources": [
                        {"downwardAPI": {"items": [{"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}}]}},
                        {"serviceAccountToken": {"path": "token"}},
                        {"secret": {"name": "creds", "items": [{"key": "password", "path": "pw"}]}}
                    ]}}
                ],
                "containers": [
                    {"name": "a", "volumeMounts": [
                        {"name": "cfg", "mountPath": "/etc/app"},
                        {"name": "scratch", "mountPath": "/etc/app/scratch"},
                        {"name": "picked", "mountPath": "/etc/mode.txt", "subPath": "sub/mode.txt"},
                        {"name": "info", "mountPath": "/var/run/info"}
                    ]},
                    {"name": "b", "volumeMounts": [{"name": "creds", "mountPath": "/etc/creds"}, {"name": "cfg", "mountPath": "/etc/app"}]}
                ]
            }
        }))
        .expect("valid pod")
    }

    fn sources(greeting: &str) -> VolumeSources {
        let cm: ConfigMap = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "app-config"}, "data": {"greeting": greeting, "mode": "fast"}
        }))
        .expect("valid configmap");
        let secret = Secret {
            data: Some([("password".to_string(), ByteString(b"s3cret".to_vec()))].into()),
            ..Default::default()
        };
        VolumeSources {
            config_maps: [("app-config".to_string(), cm)].into(),
            secrets: [("creds".to_string(), secret)].into(),
            tokens: [(token_key(None, None), "TOKEN".to_string())].into(),
        }
    }

    #[test]
    fn volumes_are_materialised_linked_and_refreshed() {
        let dir = tempfile::tempdir().expect("temp dir");
        let dirs = PodDirs::new(dir.path(), "ns", "p");
        dirs.prepare("u").expect("prepare");
        let pod = pod();
        let node = NodeCapacity { cpus: 2, memory_bytes: 1 << 30 };
        let ip = Ipv4Addr::new(127, 10, 0, 4);
        let mut manager = VolumeManager::new(dirs.clone());
        let first = sources("hello");
        manager.setup(&VolumeContext { pod: &pod, pod_ip: ip, node, sources: &first }).expect("setup");

        let mounts = dirs.mounts();
        let read = |p: &str| std::fs::read_to_string(mounts.join(p)).expect(p);
        assert_eq!(read("etc/app/greeting"), "hello");
        assert_eq!(read("etc/mode.txt"), "fast");
        assert_eq!(read("etc/creds/password"), "s3cret");
        assert_eq!(read("var/run/info/labels"), "app=\"x\"\n");
        assert_eq!(read("var/run/info/token"), "TOKEN");
        assert_eq!(read("var/run/info/pw"), "s3cret");
        std::fs::write(mounts.join("etc/app/scratch/note"), "scribble")
            .expect("emptyDir is writable through its mount");
        assert!(dirs.volume("scratch").join("note").exists());

        let mut second = sources("bonjour");
        if let Some(cm) = second.config_maps.get_mut("app-config")
            && let Some(data) = cm.data.as_mut()
        {
            data.remove("mode");
        }
        let result = manager.sync(&VolumeContext { pod: &pod, pod_ip: ip, node, sources: &second });
        assert!(
            matches!(result, Err(VolumeError::MissingKey { .. })),
            "an item's key disappeared: {result:?}"
        );
        let third = sources("bonjour");
        manager.sync(&VolumeContext { pod: &pod, pod_ip: ip, node, sources: &third }).expect("sync");
        assert_eq!(read("etc/app/greeting"), "bonjour");
    }

    #[test]
    fn missing_required_sources_are_reported() {
        let pod = pod();
        let empty = VolumeSources::default();
        let ctx = VolumeContext {
            pod: &pod,
            pod_ip: Ipv4Addr::LOCALHOST,
            node: NodeCapacity { cpus: 1, memory_bytes: 1 },
            sources: &empty,
        };
        let volumes: Vec<&Volume> = volumes(&pod).collect();
        let err = desired_files(volumes[0], &ctx).expect_err("configmap missing");
        assert!(err.to_string().contains("configmap \"app-config\" not found"), "{err}");
        assert!(desired_files(volumes[3], &ctx).expect("emptyDir").is_none());
    }
}
