//! Leader election through a `coordination.k8s.io/v1` Lease, so that two operator replicas
//! never reconcile at once: the holder renews the Lease well within its duration; another
//! replica takes it over only once it has expired. A leader that cannot renew in time stops
//! reconciling (the process exits and is restarted as a candidate).
//!
//! The decision is pure ([`may_acquire`]); this module does no reconciling of its own.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::Api;
use kube::api::PostParams;

/// One candidate's handle on the Lease.
pub struct LeaseLock {
    api: Api<Lease>,
    name: String,
    identity: String,
    duration: Duration,
}

/// Whether `identity` may hold a Lease whose spec is `spec` at `now`: it already holds it,
/// nobody does, or the holder let it expire.
pub fn may_acquire(spec: &LeaseSpec, identity: &str, now: Timestamp) -> bool {
    match spec.holder_identity.as_deref() {
        None | Some("") => true,
        Some(holder) if holder == identity => true,
        Some(_) => match (&spec.renew_time, spec.lease_duration_seconds) {
            (Some(renewed), Some(seconds)) => renewed.0 + SignedDuration::from_secs(i64::from(seconds)) < now,
            _ => true,
        },
    }
}

fn is_conflict(err: &kube::Error) -> bool {
    matches!(err, kube::Error::Api(status) if status.code == 409)
}

impl LeaseLock {
    pub fn new(api: Api<Lease>, name: String, identity: String, duration: Duration) -> Self {
        Self { api, name, identity, duration }
    }

    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// How long a held Lease stays valid without renewal.
    pub fn duration(&self) -> Duration {
        self.duration
    }

    /// Takes or renews the Lease. `Ok(false)`: someone else holds it (or won a race).
    pub async fn try_acquire_or_renew(&self) -> Result<bool, kube::Error> {
        let now = Timestamp::now();
        let seconds = i32::try_from(self.duration.as_secs()).unwrap_or(i32::MAX);
        let Some(existing) = self.api.get_opt(&self.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta { name: Some(self.name.clone()), ..ObjectMeta::default() },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.identity.clone()),
                    lease_duration_seconds: Some(seconds),
                    acquire_time: Some(MicroTime(now)),
                    renew_time: Some(MicroTime(now)),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(err) if is_conflict(&err) => Ok(false),
                Err(err) => Err(err),
            };
        };
        let spec = existing.spec.clone().unwrap_or_default();
        if !may_acquire(&spec, &self.identity, now) {
            return Ok(false);
        }
        let renewing = spec.holder_identity.as_deref() == Some(self.identity.as_str());
        let transitions = spec.lease_transitions.unwrap_or(0);
        let lease = Lease {
            // Carries the resourceVersion, so a concurrent taker makes this a 409, not a double leader.
            metadata: existing.metadata.clone(),
            spec: Some(LeaseSpec {
                holder_identity: Some(self.identity.clone()),
                lease_duration_seconds: Some(seconds),
                acquire_time: if renewing { spec.acquire_time.clone() } else { Some(MicroTime(now)) },
                renew_time: Some(MicroTime(now)),
                lease_transitions: Some(if renewing { transitions } else { transitions + 1 }),
                ..spec
            }),
        };
        match self.api.replace(&self.name, &PostParams::default(), &lease).await {
            Ok(_) => Ok(true),
            Err(err) if is_conflict(&err) => Ok(false),
            Err(err) => Err(err),
        }
    }

    /// Gives the Lease up at shutdown so a standby takes over without waiting for expiry.
    pub async fn release(&self) -> Result<(), kube::Error> {
        let Some(mut existing) = self.api.get_opt(&self.name).await? else { return Ok(()) };
        let Some(spec) = existing.spec.as_mut() else { return Ok(()) };
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        match self.api.replace(&self.name, &PostParams::default(), &existing).await {
            Ok(_) => Ok(()),
            Err(err) if is_conflict(&err) => Ok(()),
            Err(err) => Err(err),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held_by(holder: &str, renewed: &str, seconds: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(holder.into()),
            renew_time: Some(MicroTime(renewed.parse().expect("timestamp"))),
            lease_duration_seconds: Some(seconds),
            ..LeaseSpec::default()
        }
    }

    #[test]
    fn a_live_lease_of_another_holder_is_respected_until_it_expires() {
        let spec = held_by("a", "2026-11-25T12:00:00Z", 15);
        assert!(!may_acquire(&spec, "b", "2026-11-25T12:00:10Z".parse().expect("ts")));
        assert!(may_acquire(&spec, "b", "2026-11-25T12:00:16Z".parse().expect("ts")));
        assert!(may_acquire(&spec, "a", "2026-11-25T12:00:10Z".parse().expect("ts")), "the holder renews");
        assert!(may_acquire(&LeaseSpec::default(), "b", "2026-11-25T12:00:10Z".parse().expect("ts")));
    }
}
