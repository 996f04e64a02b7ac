//! From a container spec to a process launch: the image table decides the program,
//! `command`/`args` are `$(VAR)`-expanded and their mount paths rewritten, the environment
//! is built (reading the ConfigMaps and Secrets it references), and the working directory
//! is placed. Errors carry the waiting reason kubelet would show.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{ConfigMap, Container, Secret};
use kube::Api;

use super::env::{self, EnvInputs};
use super::probes::{ExecContext, find_on_path};
use super::process::Launch;
use super::runtime::PodRuntime;
use super::volumes::MountRewriter;
use crate::images::{ImageError, ImageTarget};

#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error(transparent)]
    Image(#[from] ImageError),
    /// Env or config references that cannot be resolved (kubelet: CreateContainerConfigError).
    #[error("{0}")]
    Config(String),
    /// The container spec cannot be run as given (kubelet: CreateContainerError).
    #[error("{0}")]
    Create(String),
    /// The program cannot be started (the runtime reports a terminated StartError).
    #[error("{0}")]
    Start(String),
}

impl LaunchError {
    pub fn reason(&self) -> &'static str {
        match self {
            LaunchError::Image(_) => "ErrImagePull",
            LaunchError::Config(_) => "CreateContainerConfigError",
            LaunchError::Create(_) => "CreateContainerError",
            LaunchError::Start(_) => "StartError",
        }
    }
}

/// A container ready to spawn, plus what probes need to run inside it.
pub struct PreparedContainer {
    pub launch: Launch,
    pub exec: Arc<ExecContext>,
    pub image_id: String,
}

pub async fn prepare(rt: &PodRuntime, container: &Container) -> Result<PreparedContainer, LaunchError> {
    let image = container.image.clone().unwrap_or_default();
    if image.is_empty() {
        return Err(LaunchError::Create("container has no image".into()));
    }
    let target = rt.ctx.images.resolve(&image)?;
    let pod = rt.pod();
    let (config_maps, secrets) = fetch_env_sources(rt, container).await?;
    let base = rt.base_env();
    let enable_links = pod.spec.as_ref().and_then(|s| s.enable_service_links).unwrap_or(true);
    let service_env = rt.ctx.network.service_env(&rt.namespace, enable_links);
    let built = env::build_env(&EnvInputs {
        pod: &pod,
        container,
        pod_ip: rt.ip,
        node: rt.ctx.node,
        base: &base,
        service_env: &service_env,
        config_maps: &config_maps,
        secrets: &secrets,
    })
    .map_err(|err| LaunchError::Config(err.to_string()))?;

    let rewriter = MountRewriter::for_container(&rt.dirs.mounts(), container);
    // The runner's own values are host paths already; only the container's are rewritten.
    let base_values: HashMap<&str, &str> = base.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let env: Vec<(String, String)> = built
        .into_iter()
        .map(|(k, v)| {
            let value =
                if base_values.get(k.as_str()) == Some(&v.as_str()) { v } else { rewriter.rewrite(&v) };
            (k, value)
        })
        .collect();
    let lookup: HashMap<&str, &str> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let expand =
        |s: &String| rewriter.rewrite(&env::expand(s, |name| lookup.get(name).map(|v| v.to_string())));
    let command: Vec<String> = container.command.iter().flatten().map(expand).collect();
    let args: Vec<String> = container.args.iter().flatten().map(expand).collect();
    let path_var = lookup.get("PATH").map(|p| p.to_string()).unwrap_or_else(|| rt.ctx.path_var.clone());

    let (program, program_args, image_binary, image_id) = match target {
        ImageTarget::Binary { path, name } => {
            let rest = match command.split_first() {
                Some((first, rest)) => {
                    let given = Path::new(first)
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default();
                    if given != name {
                        return Err(LaunchError::Create(format!(
                            "command[0] {first:?} does not match image {image:?}, whose binary is {name:?} (see {})",
                            rt.ctx.images.path().display()
                        )));
                    }
                    rest.to_vec()
                }
                None => Vec::new(),
            };
            let image_id = format!("file://{}", path.display());
            (path.clone(), [rest, args].concat(), Some((name, path)), image_id)
        }
        ImageTarget::Host => {
            let Some((first, rest)) = command.split_first() else {
                return Err(LaunchError::Create(format!(
                    "image {image:?} runs commands from the host and has no entrypoint: set the container's command"
                )));
            };
            let program = if first.contains('/') {
                PathBuf::from(first)
            } else {
                find_on_path(first, &path_var).ok_or_else(|| {
                    LaunchError::Start(format!("exec: {first:?}: executable file not found in $PATH"))
                })?
            };
            let image_id = format!("host://{}", program.display());
            (program, [rest.to_vec(), args].concat(), None, image_id)
        }
    };

    let cwd = working_dir(rt, container, &rewriter).map_err(LaunchError::Create)?;
    let launch = Launch {
        program,
        args: program_args,
        env: env.clone(),
        cwd: cwd.clone(),
        log: rt.dirs.log(&container.name),
        pid_file: rt.dirs.pid_file(&container.name),
    };
    let exec = Arc::new(ExecContext { env, cwd, rewriter, image_binary, path_var });
    Ok(PreparedContainer { launch, exec, image_id })
}

/// `workingDir` under a mount → the mount folder; an existing host folder → itself; any
/// other path → created under the Pod's mount root; unset → the Pod folder.
fn working_dir(rt: &PodRuntime, container: &Container, rewriter: &MountRewriter) -> Result<PathBuf, String> {
    let Some(dir) = container.working_dir.as_deref().filter(|d| !d.is_empty()) else {
        return Ok(rt.dirs.root().to_path_buf());
    };
    if rewriter.covers(dir) {
        return Ok(PathBuf::from(rewriter.rewrite(dir)));
    }
    if Path::new(dir).is_dir() {
        return Ok(PathBuf::from(dir));
    }
    let inside = rt.dirs.mounts().join(dir.trim_start_matches('/'));
    std::fs::create_dir_all(&inside)
        .map_err(|err| format!("creating workingDir {}: {err}", inside.display()))?;
    Ok(inside)
}

async fn fetch_env_sources(
    rt: &PodRuntime,
    container: &Container,
) -> Result<(BTreeMap<String, ConfigMap>, BTreeMap<String, Secret>), LaunchError> {
    let (cm_names, secret_names) = env::referenced_objects(container);
    let fetch_error = |kind: &str, name: &str, err: kube::Error| {
        LaunchError::Config(format!("reading {kind} {name:?}: {err}"))
    };
    let mut config_maps = BTreeMap::new();
    let cm_api: Api<ConfigMap> = Api::namespaced(rt.ctx.client.clone(), &rt.namespace);
    for name in cm_names {
        if let Some(cm) = cm_api.get_opt(&name).await.map_err(|err| fetch_error("ConfigMap", &name, err))? {
            config_maps.insert(name, cm);
        }
    }
    let mut secrets = BTreeMap::new();
    let secret_api: Api<Secret> = Api::namespaced(rt.ctx.client.clone(), &rt.namespace);
    for name in secret_names {
        if let Some(secret) =
            secret_api.get_opt(&name).await.map_err(|err| fetch_error("Secret", &name, err))?
        {
            secrets.insert(name, secret);
        }
    }
    Ok((config_maps, secrets))
}
