//! Finds the address of a job's coordinator Service: the hosts-format file named by
//! `MILLRACE_HOSTS_FILE` first (the local platform's pod runner writes one, since it has no
//! cluster DNS), then DNS. The file is read on every lookup because the pod runner rewrites
//! it as Services come and go.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;

/// The variable naming the hosts file (see docs/pod-runner.md "Services without DNS").
pub const HOSTS_FILE_ENV: &str = "MILLRACE_HOSTS_FILE";

/// The address `name` has in a hosts-format text (`ip name…` lines, `#` comments), if any.
pub fn lookup_in_hosts(text: &str, name: &str) -> Option<IpAddr> {
    text.lines()
        .map(|line| line.split('#').next().unwrap_or_default())
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let ip: IpAddr = fields.next()?.parse().ok()?;
            fields.any(|n| n.eq_ignore_ascii_case(name)).then_some(ip)
        })
        .next()
}

/// Resolves `host:port`, trying the hosts file first. `Err` carries a readable reason.
pub async fn resolve(host: &str, port: u16) -> Result<SocketAddr, String> {
    if let Some(path) = std::env::var_os(HOSTS_FILE_ENV) {
        let path = Path::new(&path);
        match tokio::fs::read_to_string(path).await {
            Ok(text) => {
                if let Some(ip) = lookup_in_hosts(&text, host) {
                    return Ok(SocketAddr::new(ip, port));
                }
            }
            Err(err) => tracing::debug!(%err, path = %path.display(), "hosts file not readable; trying DNS"),
        }
    }
    let mut addresses =
        tokio::net::lookup_host((host, port)).await.map_err(|err| format!("cannot resolve {host}: {err}"))?;
    addresses.next().ok_or_else(|| format!("{host} resolves to no address"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_service_names_in_a_hosts_file() {
        let text = "# written by the pod runner\n127.0.0.1 localhost\n\
                    127.20.0.7 clicks-coordinator.analytics.svc.cluster.local clicks-coordinator.analytics.svc clicks-coordinator.analytics\n\
                    not-an-ip some-name\n";
        assert_eq!(
            lookup_in_hosts(text, "clicks-coordinator.analytics.svc"),
            Some("127.20.0.7".parse().expect("ip"))
        );
        assert_eq!(
            lookup_in_hosts(text, "CLICKS-coordinator.analytics"),
            Some("127.20.0.7".parse().expect("ip"))
        );
        assert_eq!(lookup_in_hosts(text, "clicks-coordinator"), None, "short names are per namespace");
        assert_eq!(lookup_in_hosts(text, "some-name"), None);
    }
}
