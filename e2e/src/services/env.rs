//! kubelet-style Service environment variables (`<SVC>_SERVICE_HOST`, `<SVC>_SERVICE_PORT`,
//! `<SVC>_SERVICE_PORT_<NAME>` and the docker-link `<SVC>_PORT_*` family), with the
//! runner's loopback Service addresses in place of cluster IPs. Pure.

use super::ServiceEntry;

/// How a container reaches the API server (the `kubernetes` Service's variables).
#[derive(Debug, Clone)]
pub struct ApiServerAddress {
    pub host: String,
    pub port: u16,
}

/// The variables for a Pod in `namespace`: its namespace's Services when `enable_links`
/// (the Pod's `enableServiceLinks`, default true) and always the API server's.
pub fn service_env(
    entries: &[ServiceEntry],
    namespace: &str,
    enable_links: bool,
    apiserver: &ApiServerAddress,
) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let master_port = [("https".to_string(), i32::from(apiserver.port), "TCP".to_string())];
    push_service(&mut out, "kubernetes", &apiserver.host, &master_port);
    if enable_links {
        let mut local: Vec<&ServiceEntry> =
            entries.iter().filter(|e| e.namespace == namespace && e.address.is_some()).collect();
        local.sort_by(|a, b| a.name.cmp(&b.name));
        for entry in local {
            if namespace == "default" && entry.name == "kubernetes" {
                continue;
            }
            let Some(address) = entry.address else { continue };
            let ports: Vec<(String, i32, String)> = entry
                .ports
                .iter()
                .map(|p| {
                    (
                        p.name.clone().unwrap_or_default(),
                        p.port,
                        p.protocol.clone().unwrap_or_else(|| "TCP".into()),
                    )
                })
                .collect();
            push_service(&mut out, &entry.name, &address.to_string(), &ports);
        }
    }
    out
}

fn push_service(out: &mut Vec<(String, String)>, name: &str, host: &str, ports: &[(String, i32, String)]) {
    let Some((_, first_port, _)) = ports.first() else { return };
    let prefix = env_name(name);
    out.push((format!("{prefix}_SERVICE_HOST"), host.to_string()));
    out.push((format!("{prefix}_SERVICE_PORT"), first_port.to_string()));
    for (port_name, port, _) in ports {
        if !port_name.is_empty() {
            out.push((format!("{prefix}_SERVICE_PORT_{}", env_name(port_name)), port.to_string()));
        }
    }
    for (i, (_, port, protocol)) in ports.iter().enumerate() {
        let lower = protocol.to_lowercase();
        let url = format!("{lower}://{host}:{port}");
        if i == 0 {
            out.push((format!("{prefix}_PORT"), url.clone()));
        }
        let port_prefix = format!("{prefix}_PORT_{port}_{}", protocol.to_uppercase());
        out.push((port_prefix.clone(), url));
        out.push((format!("{port_prefix}_PROTO"), lower));
        out.push((format!("{port_prefix}_PORT"), port.to_string()));
        out.push((format!("{port_prefix}_ADDR"), host.to_string()));
    }
}

/// `my-svc` → `MY_SVC`, as kubelet names Service variables.
pub fn env_name(name: &str) -> String {
    name.to_uppercase().replace('-', "_")
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ServicePort;
    use std::collections::BTreeMap;
    use std::net::Ipv4Addr;

    fn entry(namespace: &str, name: &str, address: Option<Ipv4Addr>) -> ServiceEntry {
        ServiceEntry {
            namespace: namespace.into(),
            name: name.into(),
            address,
            ports: vec![
                ServicePort { port: 80, name: Some("http".into()), ..Default::default() },
                ServicePort { port: 9090, name: Some("metrics-port".into()), ..Default::default() },
            ],
            selector: BTreeMap::new(),
            headless_backends: Vec::new(),
            node_ports: Vec::new(),
        }
    }

    #[test]
    fn variables_follow_kubelet_naming() {
        let entries = vec![
            entry("ns", "coord-api", Some(Ipv4Addr::new(127, 20, 0, 5))),
            entry("other", "elsewhere", Some(Ipv4Addr::new(127, 20, 0, 6))),
            entry("ns", "headless", None),
        ];
        let api = ApiServerAddress { host: "127.0.0.1".into(), port: 16443 };
        let env: BTreeMap<String, String> = service_env(&entries, "ns", true, &api).into_iter().collect();
        assert_eq!(env["COORD_API_SERVICE_HOST"], "127.20.0.5");
        assert_eq!(env["COORD_API_SERVICE_PORT"], "80");
        assert_eq!(env["COORD_API_SERVICE_PORT_HTTP"], "80");
        assert_eq!(env["COORD_API_SERVICE_PORT_METRICS_PORT"], "9090");
        assert_eq!(env["COORD_API_PORT"], "tcp://127.20.0.5:80");
        assert_eq!(env["COORD_API_PORT_9090_TCP_ADDR"], "127.20.0.5");
        assert_eq!(env["KUBERNETES_SERVICE_HOST"], "127.0.0.1");
        assert_eq!(env["KUBERNETES_SERVICE_PORT"], "16443");
        assert!(!env.contains_key("ELSEWHERE_SERVICE_HOST"));
        assert!(!env.contains_key("HEADLESS_SERVICE_HOST"));

        let without_links: BTreeMap<String, String> =
            service_env(&entries, "ns", false, &api).into_iter().collect();
        assert!(without_links.contains_key("KUBERNETES_SERVICE_HOST"));
        assert!(!without_links.contains_key("COORD_API_SERVICE_HOST"));
    }
}
