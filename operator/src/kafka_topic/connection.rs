//! The read phase for what a KafkaTopic references: which Kafka cluster it lives on (the
//! operator's default or the resource's override) and the client properties from the
//! override's Secret. Also keeps one admin client per distinct connection, so a reconcile
//! does not open a new Kafka connection each time.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Client};
use millrace_crds::v1alpha1::KafkaTopic;

use super::error::Error;
use super::plan::cluster_key;
use crate::kafka_admin::KafkaAdmin;

/// A resolved Kafka connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub bootstrap: String,
    /// The cluster's identity for conflict detection (see [`cluster_key`]).
    pub cluster: String,
    pub properties: BTreeMap<String, String>,
    /// Distinguishes clients: same bootstrap with other credentials is another client.
    cache_key: String,
}

/// The cluster a resource points at, without reading any Secret (enough for conflicts).
pub fn cluster_of(topic: &KafkaTopic, default_bootstrap: &str) -> String {
    cluster_key(topic.spec.connection.as_ref().map_or(default_bootstrap, |c| c.bootstrap_servers.as_str()))
}

/// Resolves the connection of `topic`, reading its Secret if it names one.
pub async fn resolve(topic: &KafkaTopic, client: &Client, default_bootstrap: &str) -> Result<Target, Error> {
    let Some(connection) = &topic.spec.connection else {
        return Ok(Target {
            bootstrap: default_bootstrap.to_owned(),
            cluster: cluster_key(default_bootstrap),
            properties: BTreeMap::new(),
            cache_key: format!("default|{default_bootstrap}"),
        });
    };
    let bootstrap = connection.bootstrap_servers.clone();
    let Some(secret_ref) = &connection.secret_ref else {
        return Ok(Target {
            cluster: cluster_key(&bootstrap),
            cache_key: format!("{bootstrap}|"),
            bootstrap,
            properties: BTreeMap::new(),
        });
    };
    let namespace = topic.metadata.namespace.clone().unwrap_or_default();
    let secret_error = |detail: String| Error::ConnectionSecret {
        namespace: namespace.clone(),
        name: secret_ref.name.clone(),
        detail,
    };
    let secret = Api::<Secret>::namespaced(client.clone(), &namespace)
        .get_opt(&secret_ref.name)
        .await
        .map_err(|err| secret_error(format!("cannot read it: {err}")))?
        .ok_or_else(|| secret_error("not found".into()))?;
    let properties = secret_properties(&secret).map_err(secret_error)?;
    let version = secret.metadata.resource_version.clone().unwrap_or_default();
    Ok(Target {
        cluster: cluster_key(&bootstrap),
        cache_key: format!("{bootstrap}|{namespace}/{}@{version}", secret_ref.name),
        bootstrap,
        properties,
    })
}

/// The Secret's keys as librdkafka properties; every value must be UTF-8.
pub fn secret_properties(secret: &Secret) -> Result<BTreeMap<String, String>, String> {
    let mut properties = BTreeMap::new();
    for (key, value) in secret.data.iter().flatten() {
        let text =
            String::from_utf8(value.0.clone()).map_err(|_| format!("key {key:?} is not UTF-8 text"))?;
        properties.insert(key.clone(), text);
    }
    if properties.contains_key("bootstrap.servers") {
        return Err("key bootstrap.servers is not allowed: set spec.connection.bootstrapServers".into());
    }
    Ok(properties)
}

/// Clients unused for this long are dropped (each holds librdkafka threads and sockets).
const IDLE_CLIENT_TTL: Duration = Duration::from_secs(600);

/// One admin client per connection, created on first use, dropped when idle.
#[derive(Default)]
pub struct AdminClients {
    clients: Mutex<HashMap<String, (KafkaAdmin, Instant)>>,
}

impl AdminClients {
    pub fn get(&self, target: &Target) -> Result<KafkaAdmin, Error> {
        // A poisoned lock only means another reconcile panicked mid-insert; the map is still usable.
        let mut clients = self.clients.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = Instant::now();
        clients.retain(|_, (_, used)| now.duration_since(*used) < IDLE_CLIENT_TTL);
        if let Some((admin, used)) = clients.get_mut(&target.cache_key) {
            *used = now;
            return Ok(admin.clone());
        }
        let admin = KafkaAdmin::connect(&target.bootstrap, &target.properties)?;
        // A rotated Secret gets a new key; drop the client of its previous version.
        let prefix = target.cache_key.split('@').next().unwrap_or_default().to_owned();
        clients.retain(|key, _| !(key.contains('@') && key.starts_with(&prefix)));
        clients.insert(target.cache_key.clone(), (admin.clone(), now));
        Ok(admin)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;

    #[test]
    fn secret_keys_become_client_properties() {
        let mut secret = Secret {
            data: Some(BTreeMap::from([
                ("sasl.username".to_owned(), ByteString(b"alice".to_vec())),
                ("security.protocol".to_owned(), ByteString(b"SASL_PLAINTEXT".to_vec())),
            ])),
            ..Secret::default()
        };
        let props = secret_properties(&secret).expect("valid");
        assert_eq!(props.get("sasl.username").map(String::as_str), Some("alice"));

        secret.data = Some(BTreeMap::from([("bootstrap.servers".to_owned(), ByteString(b"x:1".to_vec()))]));
        assert!(secret_properties(&secret).is_err());
        secret.data = Some(BTreeMap::from([("k".to_owned(), ByteString(vec![0xff]))]));
        assert!(secret_properties(&secret).is_err());
    }

    #[test]
    fn the_override_names_the_cluster() {
        let mut topic: KafkaTopic =
            serde_saphyr::from_str(include_str!("../../tests/fixtures/status/new.yaml")).expect("fixture");
        assert_eq!(cluster_of(&topic, "127.0.0.1:9092"), "127.0.0.1:9092");
        topic.spec.connection = Some(millrace_crds::v1alpha1::KafkaConnection {
            bootstrap_servers: "b:9092, A:9092".into(),
            secret_ref: None,
        });
        assert_eq!(cluster_of(&topic, "127.0.0.1:9092"), "a:9092,b:9092");
    }
}
