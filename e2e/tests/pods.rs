//! The pod runner against the real local platform (kube-apiserver, kube-controller-manager,
//! millrace-pod-runner): Deployments, ServiceAccount RBAC, restarts, unknown images,
//! Services by name, readiness, env/volumes and graceful deletion.
//!
//! Needs `make up` (or kube.sh up + pod-runner.sh up) and KUBECONFIG; fails with what to do
//! otherwise. Run: `cargo test -p millrace-e2e --features platform --test pods`.

#![cfg(feature = "platform")]

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::{
    TestNamespace, condition, container_status, http_get, is_ready, is_running, phase, platform_client,
    pod_ip, wait_for,
};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret, Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::Api;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use serde_json::json;

const MINUTE: Duration = Duration::from_secs(60);
const HOST_IMAGE: &str = "millrace/host:latest";

async fn running_pods(api: &Api<Pod>, selector: &str, want: usize) -> Result<Vec<Pod>, String> {
    let pods = api.list(&ListParams::default().labels(selector)).await.map_err(|e| e.to_string())?;
    let running: Vec<Pod> = pods
        .items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none() && phase(p) == "Running" && pod_ip(p).is_some())
        .collect();
    if running.len() == want {
        Ok(running)
    } else {
        Err(format!("{} running Pods, want {want}", running.len()))
    }
}

#[tokio::test]
async fn deployment_pods_get_their_own_addresses_scale_to_zero_and_are_garbage_collected() {
    let client = platform_client().await;
    let ns = TestNamespace::new(&client, "deploy").await;
    ns.create::<Deployment>(json!({
        "metadata": {"name": "web"},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{
                    "name": "http",
                    "image": HOST_IMAGE,
                    "command": ["python3", "-u", "-m", "http.server", "--bind", "$(POD_IP)", "8080"]
                }]}
            }
        }
    }))
    .await;
    let pods: Api<Pod> = ns.api();
    let started = Instant::now();
    let running = wait_for("2 running Pods", MINUTE, || running_pods(&pods, "app=web", 2)).await;
    let ips: BTreeSet<String> = running.iter().filter_map(pod_ip).collect();
    assert_eq!(ips.len(), 2, "each Pod has its own address: {ips:?}");
    for ip in &ips {
        assert!(ip.starts_with("127.10."), "Pod address {ip} comes from the pod CIDR");
        wait_for(&format!("HTTP on {ip}:8080"), MINUTE, || async {
            match http_get(&format!("{ip}:8080"), "/").await {
                Ok((200, _)) => Ok(()),
                other => Err(format!("{other:?}")),
            }
        })
        .await;
    }
    eprintln!("2 Pods serving on their own addresses after {:?}", started.elapsed());

    let deployments: Api<Deployment> = ns.api();
    deployments
        .patch("web", &PatchParams::default(), &Patch::Merge(json!({"spec": {"replicas": 0}})))
        .await
        .expect("scale to 0");
    wait_for("no Pods and closed ports after scaling to 0", MINUTE, || async {
        let left =
            pods.list(&ListParams::default().labels("app=web")).await.map_err(|e| e.to_string())?.items.len();
        let mut answering = Vec::new();
        for ip in &ips {
            if http_get(&format!("{ip}:8080"), "/").await.is_ok() {
                answering.push(ip.clone());
            }
        }
        if left == 0 && answering.is_empty() {
            Ok(())
        } else {
            Err(format!("{left} Pods left, still answering: {answering:?}"))
        }
    })
    .await;

    deployments
        .patch("web", &PatchParams::default(), &Patch::Merge(json!({"spec": {"replicas": 2}})))
        .await
        .expect("scale back to 2");
    wait_for("2 running Pods again", MINUTE, || running_pods(&pods, "app=web", 2)).await;
    deployments.delete("web", &DeleteParams::background()).await.expect("delete the Deployment");
    let replica_sets: Api<ReplicaSet> = ns.api();
    wait_for("the controller-manager to garbage-collect the ReplicaSet and Pods", MINUTE, || async {
        let rs = replica_sets.list(&ListParams::default()).await.map_err(|e| e.to_string())?.items.len();
        let left =
            pods.list(&ListParams::default().labels("app=web")).await.map_err(|e| e.to_string())?.items.len();
        if rs == 0 && left == 0 { Ok(()) } else { Err(format!("{rs} ReplicaSets, {left} Pods")) }
    })
    .await;
}

/// Lists Pods with the Pod's own kubeconfig (JSON, written by the runner) once a second.
const LIST_PODS_SCRIPT: &str = r#"
import base64, json, os, ssl, time, urllib.request, urllib.error
cfg = json.load(open(os.environ["KUBECONFIG"]))
cluster = cfg["clusters"][0]["cluster"]
token = cfg["users"][0]["user"]["token"]
ctx = ssl.create_default_context()
if "certificate-authority-data" in cluster:
    ctx.load_verify_locations(cadata=base64.b64decode(cluster["certificate-authority-data"]).decode())
else:
    ctx.load_verify_locations(cafile=cluster["certificate-authority"])
url = cluster["server"] + "/api/v1/namespaces/" + os.environ["POD_NAMESPACE"] + "/pods"
while True:
    req = urllib.request.Request(url, headers={"Authorization": "Bearer " + token})
    try:
        with urllib.request.urlopen(req, context=ctx, timeout=5) as resp:
            print("LIST", resp.status, flush=True)
    except urllib.error.HTTPError as err:
        print("LIST", err.code, json.loads(err.read()).get("message"), flush=True)
    time.sleep(1)
"#;

#[tokio::test]
async fn a_pod_acts_as_its_service_account_and_rbac_applies() {
    let client = platform_client().await;
    let ns = TestNamespace::new(&client, "rbac").await;
    ns.create::<ServiceAccount>(json!({"metadata": {"name": "reader"}})).await;
    ns.create::<Pod>(json!({
        "metadata": {"name": "lister"},
        "spec": {
            "serviceAccountName": "reader",
            "containers": [{"name": "main", "image": HOST_IMAGE, "command": ["python3", "-u", "-c", LIST_PODS_SCRIPT]}]
        }
    }))
    .await;
    let user = format!("system:serviceaccount:{}:reader", ns.name);
    let log = ns.wait_for_log("lister", "main", "LIST 403", MINUTE).await;
    assert!(log.contains(&user), "the API server saw the ServiceAccount, not the runner's admin: {log}");
    assert!(!log.contains("LIST 200"), "no access before the Role exists: {log}");

    ns.create::<Role>(json!({
        "metadata": {"name": "pod-reader"},
        "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]}]
    }))
    .await;
    ns.create::<RoleBinding>(json!({
        "metadata": {"name": "reader-reads-pods"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "pod-reader"},
        "subjects": [{"kind": "ServiceAccount", "name": "reader", "namespace": ns.name}]
    }))
    .await;
    ns.wait_for_log("lister", "main", "LIST 200", MINUTE).await;
}

#[tokio::test]
async fn crashing_containers_restart_and_unknown_images_say_why() {
    let client = platform_client().await;
    let ns = TestNamespace::new(&client, "restart").await;
    ns.create::<Pod>(json!({
        "metadata": {"name": "crasher"},
        "spec": {"containers": [{"name": "main", "image": HOST_IMAGE, "command": ["sh", "-c", "echo crashing; exit 3"]}]}
    }))
    .await;
    ns.create::<Pod>(json!({
        "metadata": {"name": "ghost"},
        "spec": {"containers": [{"name": "main", "image": "registry.invalid/nope:1"}]}
    }))
    .await;

    let pod = ns
        .wait_for_pod("crasher", "restartCount ≥ 2 after exit code 3", MINUTE, |pod| {
            container_status(pod, "main").is_some_and(|c| {
                let last_exit =
                    c.last_state.as_ref().and_then(|s| s.terminated.as_ref()).map(|t| t.exit_code);
                c.restart_count >= 2 && last_exit == Some(3)
            })
        })
        .await;
    assert_eq!(phase(&pod), "Running", "restartPolicy Always keeps the Pod Running while it crash-loops");
    assert!(ns.log("crasher", "main").matches("crashing").count() >= 2, "each run appends to the log");

    let pod = ns
        .wait_for_pod("ghost", "an image pull error", MINUTE, |pod| {
            container_status(pod, "main")
                .and_then(|c| c.state.as_ref()?.waiting.as_ref()?.reason.clone())
                .is_some_and(|r| r == "ErrImagePull" || r == "ImagePullBackOff")
        })
        .await;
    let message = container_status(&pod, "main")
        .and_then(|c| c.state.as_ref()?.waiting.as_ref()?.message.clone())
        .unwrap_or_default();
    assert!(message.contains("registry.invalid/nope:1"), "the message names the image: {message}");
    assert!(message.contains("pod-images.yaml"), "the message names the image table: {message}");
    assert_eq!(phase(&pod), "Pending");
}

/// Resolves the Service through MILLRACE_HOSTS_FILE and through WEB_SERVICE_HOST, fetches a
/// file from the server behind it each way.
const CLIENT_SCRIPT: &str = r##"
import os, time, urllib.request
def resolve(name):
    for line in open(os.environ["MILLRACE_HOSTS_FILE"]):
        fields = line.split("#")[0].split()
        if len(fields) > 1 and name in fields[1:]:
            return fields[0]
    raise LookupError(name)
ns = os.environ["POD_NAMESPACE"]
targets = {
    "VIA-HOSTS": lambda: resolve("web") + ":80",
    "VIA-FQDN": lambda: resolve("web." + ns + ".svc.cluster.local") + ":80",
    "VIA-ENV": lambda: os.environ["WEB_SERVICE_HOST"] + ":" + os.environ["WEB_SERVICE_PORT"],
}
done = set()
deadline = time.time() + 60
while len(done) < len(targets) and time.time() < deadline:
    for label, target in targets.items():
        if label in done:
            continue
        try:
            with urllib.request.urlopen("http://" + target() + "/hello.txt", timeout=3) as resp:
                print(label, resp.status, resp.read().decode().strip(), flush=True)
                done.add(label)
        except Exception as err:
            print(label, "error", err, flush=True)
    time.sleep(0.5)
"##;

#[tokio::test]
async fn pods_reach_services_by_name_and_env_and_readiness_drives_ready() {
    let client = platform_client().await;
    let ns = TestNamespace::new(&client, "svc").await;
    ns.create::<Pod>(json!({
        "metadata": {"name": "web-0", "labels": {"app": "web"}},
        "spec": {"containers": [{
            "name": "http",
            "image": HOST_IMAGE,
            "command": ["sh", "-c", "echo \"hello from $POD_NAME\" > hello.txt; exec python3 -u -m http.server --bind \"$POD_IP\" 8080"],
            "ports": [{"name": "http", "containerPort": 8080}],
            "readinessProbe": {"httpGet": {"path": "/ready", "port": "http"}, "periodSeconds": 1}
        }]}
    }))
    .await;
    ns.create::<Service>(json!({
        "metadata": {"name": "web"},
        "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}
    }))
    .await;

    // The probe hits /ready, which the server answers 404 until the file exists.
    ns.wait_for_log("web-0", "http", "\"GET /ready HTTP/1.1\" 404", MINUTE).await;
    let pods: Api<Pod> = ns.api();
    let pod = pods.get("web-0").await.expect("server Pod");
    assert!(is_running(&pod, "http"), "the server runs");
    assert_eq!(
        condition(&pod, "Ready").as_deref(),
        Some("False"),
        "a failing readiness probe keeps the Pod unready"
    );
    let folder = common::pods_dir().join(&ns.name).join("web-0");
    std::fs::write(folder.join("ready"), "ok").expect("the server's working directory is its Pod folder");
    ns.wait_for_pod("web-0", "Ready", MINUTE, is_ready).await;

    let services: Api<Service> = ns.api();
    let address = wait_for("the Service's local address", MINUTE, || async {
        let svc = services.get("web").await.map_err(|e| e.to_string())?;
        svc.metadata
            .annotations
            .and_then(|a| a.get("millrace.io/local-address").cloned())
            .ok_or_else(|| "no millrace.io/local-address annotation yet".to_string())
    })
    .await;
    assert!(address.starts_with("127.20."), "Service address {address} comes from the service CIDR");
    let (code, body) =
        http_get(&format!("{address}:80"), "/hello.txt").await.expect("the Service answers the test too");
    assert_eq!((code, body.trim()), (200, "hello from web-0"));
    let hosts = std::fs::read_to_string(common::pods_dir().join("hosts")).expect("global hosts file");
    assert!(hosts.contains(&format!("{address}\tweb.{}.svc.cluster.local", ns.name)), "{hosts}");

    // Created after the Service, so kubelet-style env vars name it.
    ns.create::<Pod>(json!({
        "metadata": {"name": "client"},
        "spec": {
            "restartPolicy": "Never",
            "containers": [{"name": "main", "image": HOST_IMAGE, "command": ["python3", "-u", "-c", CLIENT_SCRIPT]}]
        }
    }))
    .await;
    let log = ns.wait_for_log("client", "main", "VIA-ENV 200", MINUTE).await;
    let log = if log.contains("VIA-HOSTS 200") && log.contains("VIA-FQDN 200") {
        log
    } else {
        ns.wait_for_pod("client", "Succeeded", MINUTE, |p| phase(p) == "Succeeded").await;
        ns.log("client", "main")
    };
    for label in ["VIA-HOSTS", "VIA-FQDN", "VIA-ENV"] {
        assert!(log.contains(&format!("{label} 200 hello from web-0")), "{label} failed: {log}");
    }
}

#[tokio::test]
async fn env_value_from_and_configmap_volumes_reach_the_process() {
    let client = platform_client().await;
    let ns = TestNamespace::new(&client, "env").await;
    ns.create::<ConfigMap>(
        json!({"metadata": {"name": "app-config"}, "data": {"greeting": "hello", "mode": "fast"}}),
    )
    .await;
    ns.create::<Secret>(json!({"metadata": {"name": "creds"}, "stringData": {"password": "s3cret"}})).await;
    let script = r#"
echo "NAME=$MY_NAME"; echo "NAMESPACE=$MY_NAMESPACE"; echo "IP=$MY_IP"; echo "POD_IP=$POD_IP"; echo "TIER=$MY_TIER"
echo "PASSWORD=$PASSWORD"; echo "GREETING=$GREETING"; echo "EXPANDED=$EXPANDED"; echo "CFG_mode=$CFG_mode"
echo "FILE_ARG=$(cat "$1")"; echo "FILE_ENV=$(cat "$CONFIG_FILE")"; echo "FILE_PREFIX=$(cat "$MILLRACE_MOUNT_PREFIX/etc/app/greeting")"
last=""
while true; do
  now="$(cat "$MILLRACE_MOUNT_PREFIX/etc/app/greeting")"
  if [ "$now" != "$last" ]; then echo "GREETING_FILE=$now"; last="$now"; fi
  sleep 0.2
done
"#;
    ns.create::<Pod>(json!({
        "metadata": {"name": "envy", "labels": {"tier": "backend"}},
        "spec": {
            "volumes": [{"name": "config", "configMap": {"name": "app-config"}}],
            "containers": [{
                "name": "main",
                "image": HOST_IMAGE,
                "command": ["sh", "-c", script, "sh", "/etc/app/mode"],
                "env": [
                    {"name": "MY_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                    {"name": "MY_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
                    {"name": "MY_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                    {"name": "MY_TIER", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['tier']"}}},
                    {"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "password"}}},
                    {"name": "GREETING", "valueFrom": {"configMapKeyRef": {"name": "app-config", "key": "greeting"}}},
                    {"name": "MISSING", "valueFrom": {"configMapKeyRef": {"name": "app-config", "key": "nope", "optional": true}}},
                    {"name": "EXPANDED", "value": "$(GREETING)-world"},
                    {"name": "CONFIG_FILE", "value": "/etc/app/mode"}
                ],
                "envFrom": [{"configMapRef": {"name": "app-config"}, "prefix": "CFG_"}],
                "volumeMounts": [{"name": "config", "mountPath": "/etc/app"}]
            }]
        }
    }))
    .await;
    let log = ns.wait_for_log("envy", "main", "GREETING_FILE=hello", MINUTE).await;
    let pod: Pod = ns.api::<Pod>().get("envy").await.expect("Pod");
    let ip = pod_ip(&pod).expect("Pod address");
    for line in [
        "NAME=envy".to_string(),
        format!("NAMESPACE={}", ns.name),
        format!("IP={ip}"),
        format!("POD_IP={ip}"),
        "TIER=backend".into(),
        "PASSWORD=s3cret".into(),
        "GREETING=hello".into(),
        "EXPANDED=hello-world".into(),
        "CFG_mode=fast".into(),
        "FILE_ARG=fast".into(),
        "FILE_ENV=fast".into(),
        "FILE_PREFIX=hello".into(),
    ] {
        assert!(log.lines().any(|l| l == line), "missing {line:?} in: {log}");
    }

    ns.api::<ConfigMap>()
        .patch("app-config", &PatchParams::default(), &Patch::Merge(json!({"data": {"greeting": "bonjour"}})))
        .await
        .expect("update the ConfigMap");
    ns.wait_for_log("envy", "main", "GREETING_FILE=bonjour", MINUTE).await;
}

#[tokio::test]
async fn deleting_a_pod_sends_sigterm_first_and_the_pod_goes_away() {
    let client = platform_client().await;
    let ns = TestNamespace::new(&client, "term").await;
    ns.create::<Pod>(json!({
        "metadata": {"name": "graceful"},
        "spec": {
            "terminationGracePeriodSeconds": 30,
            "containers": [{
                "name": "main",
                "image": HOST_IMAGE,
                "command": ["sh", "-c", "trap 'echo got SIGTERM; exit 0' TERM; echo started; while true; do sleep 0.2; done"]
            }]
        }
    }))
    .await;
    ns.wait_for_log("graceful", "main", "started", MINUTE).await;
    let pod = ns.wait_for_pod("graceful", "running", MINUTE, |p| is_running(p, "main")).await;
    let pid: i32 = container_status(&pod, "main")
        .and_then(|c| c.container_id.as_deref()?.strip_prefix("millrace-pod-runner://")?.parse().ok())
        .expect("containerID names the process");

    let pods: Api<Pod> = ns.api();
    let deleted_at = Instant::now();
    pods.delete("graceful", &DeleteParams::default()).await.expect("delete the Pod");
    wait_for("the Pod to go away", MINUTE, || async {
        match pods.get_opt("graceful").await {
            Ok(None) => Ok(()),
            other => Err(format!("{:?}", other.map(|p| p.map(|p| p.status)))),
        }
    })
    .await;
    let took = deleted_at.elapsed();
    assert!(
        ns.log("graceful", "main").contains("got SIGTERM"),
        "the trap ran: {}",
        ns.log("graceful", "main")
    );
    assert!(
        took < Duration::from_secs(20),
        "the Pod went away when its process exited, not after the 30s grace ({took:?})"
    );
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists(), "process {pid} is gone");
}
