//! Finding the coordinator: `host:port`, the host looked up first in the hosts-format file
//! named by `MILLRACE_HOSTS_FILE` (the local pod runner's Services without DNS; short names
//! and FQDNs), then through DNS.

/// The `ip:port` to connect to for `host_port`.
pub async fn resolve(host_port: &str) -> Result<String, String> {
    let (host, port) = host_port.rsplit_once(':').ok_or_else(|| format!("{host_port:?} is not host:port"))?;
    if let Ok(path) = std::env::var("MILLRACE_HOSTS_FILE")
        && let Ok(text) = tokio::fs::read_to_string(&path).await
        && let Some(ip) = lookup(&text, host)
    {
        return Ok(format!("{ip}:{port}"));
    }
    let mut found =
        tokio::net::lookup_host(host_port).await.map_err(|e| format!("cannot resolve {host}: {e}"))?;
    found.next().map(|addr| addr.to_string()).ok_or_else(|| format!("{host} has no address"))
}

/// The address `host` has in a hosts-format text (`ip name name…`, `#` comments).
fn lookup(hosts: &str, host: &str) -> Option<String> {
    hosts.lines().find_map(|line| {
        let line = line.split('#').next().unwrap_or("");
        let mut fields = line.split_whitespace();
        let ip = fields.next()?;
        fields.any(|name| name == host).then(|| ip.to_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::lookup;

    #[test]
    fn names_are_found_by_any_alias() {
        let hosts = "# comment\n127.20.0.5 job-coordinator.ns.svc.cluster.local job-coordinator.ns.svc job-coordinator\n";
        assert_eq!(lookup(hosts, "job-coordinator").as_deref(), Some("127.20.0.5"));
        assert_eq!(lookup(hosts, "job-coordinator.ns.svc").as_deref(), Some("127.20.0.5"));
        assert_eq!(lookup(hosts, "other"), None);
    }
}
