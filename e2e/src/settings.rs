//! Command-line flags (and their environment variables) of `millrace-pod-runner`, and the
//! validated [`Settings`] derived from them. Owns defaults and path resolution only.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;

use crate::ipam::Cidr;

/// Stands in for kubelet, kube-scheduler and kube-proxy on the local platform: registers a
/// Node, binds pending Pods to it and runs their containers as local processes.
#[derive(Debug, Parser)]
#[command(name = "millrace-pod-runner", version)]
pub struct Args {
    /// The admin kubeconfig the runner talks to the API server with.
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: PathBuf,

    /// Name of the Node the runner registers and runs Pods for.
    #[arg(long, default_value = "local")]
    pub node_name: String,

    /// Per-Pod folders (logs, mounts, kubeconfig, hosts file) live here.
    #[arg(long, env = "MILLRACE_PODS_DIR", default_value = ".local/pods")]
    pub pods_dir: PathBuf,

    /// The image → binary table.
    #[arg(long, env = "MILLRACE_POD_IMAGES", default_value = "e2e/pod-images.yaml")]
    pub images: PathBuf,

    /// Where the Millrace binaries named in the image table live [default: $CARGO_TARGET_DIR/debug, else target/debug].
    #[arg(long, env = "MILLRACE_BIN_DIR")]
    pub bin_dir: Option<PathBuf>,

    /// Loopback range Pod addresses come from.
    #[arg(long, default_value = "127.10.0.0/16")]
    pub pod_cidr: String,

    /// Loopback range Service addresses come from.
    #[arg(long, default_value = "127.20.0.0/16")]
    pub service_cidr: String,

    /// DNS suffix used for Service names in the hosts files.
    #[arg(long, default_value = "cluster.local")]
    pub cluster_domain: String,

    /// First container restart delay (doubles on each crash). kubelet uses 10s; locally we want fast feedback.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub restart_backoff_base: Duration,

    /// Longest container restart delay. kubelet uses 300s.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub restart_backoff_cap: Duration,

    /// How often ConfigMap/Secret volumes, tokens and hosts files are refreshed.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub sync_period: Duration,

    /// On SIGTERM, how long containers get before SIGKILL (capped by each Pod's own grace period).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub shutdown_grace: Duration,

    /// Address of /healthz, /readyz and /metrics.
    #[arg(long, env = "MILLRACE_OPS_ADDR", default_value = "127.0.0.1:10250")]
    pub ops_addr: SocketAddr,

    /// Environment variables copied from the runner into every container (besides PATH), comma-separated.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "LANG,LC_ALL,TZ,TMPDIR,PYENV_ROOT,PYENV_VERSION,SSL_CERT_FILE,SSL_CERT_DIR"
    )]
    pub pass_env: Vec<String>,

    /// `pods` capacity reported on the Node.
    #[arg(long, default_value_t = 110)]
    pub max_pods: u32,
}

/// Validated settings with absolute paths.
#[derive(Debug, Clone)]
pub struct Settings {
    pub kubeconfig: PathBuf,
    pub node_name: String,
    pub pods_dir: PathBuf,
    pub images: PathBuf,
    pub bin_dir: PathBuf,
    pub pod_cidr: Cidr,
    pub service_cidr: Cidr,
    pub cluster_domain: String,
    pub restart_backoff_base: Duration,
    pub restart_backoff_cap: Duration,
    pub sync_period: Duration,
    pub shutdown_grace: Duration,
    pub ops_addr: SocketAddr,
    pub pass_env: Vec<String>,
    pub max_pods: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("--{flag}: {source}")]
    Cidr { flag: &'static str, source: crate::ipam::IpamError },
    #[error("--pod-cidr {pods} and --service-cidr {services} overlap")]
    Overlap { pods: Cidr, services: Cidr },
    #[error("the current directory: {0}")]
    Cwd(std::io::Error),
}

impl Settings {
    pub fn from_args(args: Args) -> Result<Self, SettingsError> {
        let cwd = std::env::current_dir().map_err(SettingsError::Cwd)?;
        let pod_cidr: Cidr =
            args.pod_cidr.parse().map_err(|source| SettingsError::Cidr { flag: "pod-cidr", source })?;
        let service_cidr: Cidr = args
            .service_cidr
            .parse()
            .map_err(|source| SettingsError::Cidr { flag: "service-cidr", source })?;
        if pod_cidr.overlaps(&service_cidr) {
            return Err(SettingsError::Overlap { pods: pod_cidr, services: service_cidr });
        }
        let bin_dir = args.bin_dir.unwrap_or_else(|| match std::env::var_os("CARGO_TARGET_DIR") {
            Some(dir) => PathBuf::from(dir).join("debug"),
            None => PathBuf::from("target/debug"),
        });
        Ok(Self {
            kubeconfig: absolute(&cwd, &args.kubeconfig),
            node_name: args.node_name,
            pods_dir: absolute(&cwd, &args.pods_dir),
            images: absolute(&cwd, &args.images),
            bin_dir: absolute(&cwd, &bin_dir),
            pod_cidr,
            service_cidr,
            cluster_domain: args.cluster_domain.trim_matches('.').to_string(),
            restart_backoff_base: args.restart_backoff_base,
            restart_backoff_cap: args.restart_backoff_cap,
            sync_period: args.sync_period.max(Duration::from_millis(200)),
            shutdown_grace: args.shutdown_grace,
            ops_addr: args.ops_addr,
            pass_env: args.pass_env.into_iter().filter(|name| !name.is_empty()).collect(),
            max_pods: args.max_pods,
        })
    }
}

fn absolute(cwd: &Path, path: &Path) -> PathBuf {
    if path.is_absolute() { path.to_path_buf() } else { cwd.join(path) }
}

/// `250ms`, `1s`, `1.5s`, `2m`, or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| !(c.is_ascii_digit() || c == '.')) {
        Some(at) => text.split_at(at),
        None => (text, "s"),
    };
    let value: f64 =
        number.parse().map_err(|_| format!("invalid duration {text:?}: expected e.g. 500ms, 1s, 2m"))?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        _ => return Err(format!("invalid duration unit in {text:?}: use ms, s, m or h")),
    };
    Duration::try_from_secs_f64(seconds).map_err(|err| format!("invalid duration {text:?}: {err}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("1s"), Ok(Duration::from_secs(1)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("3d").is_err());
    }

    #[test]
    fn defaults_parse() {
        let args =
            Args::try_parse_from(["millrace-pod-runner", "--kubeconfig", "/k"]).expect("defaults parse");
        let settings = Settings::from_args(args).expect("defaults are valid");
        assert_eq!(settings.pod_cidr.to_string(), "127.10.0.0/16");
        assert_eq!(settings.restart_backoff_cap, Duration::from_secs(60));
        assert!(settings.pods_dir.is_absolute());
        assert!(settings.pass_env.contains(&"PYENV_ROOT".to_string()));
    }
}
