//! A group's renewal policy: set by a fleet manager at the CA, served at `/v1/policy`,
//! followed by every agent of the group (or overridden by a local file where the
//! operator chooses).
//!
//! A policy is validated once, when it is built ([`GroupPolicy::validate`]); code that
//! holds a `GroupPolicy` from [`GroupPolicy::validated`] may rely on its invariants.

use crate::KeyAlgorithm;
use serde::{Deserialize, Serialize};
use std::time::Duration;
use time::OffsetDateTime;

/// Shortest certificate lifetime a policy may set. Below this, clock skew between device
/// and edge eats a visible share of the lifetime.
pub const MIN_LIFETIME: Duration = Duration::from_secs(5 * 60);
/// Longest lifetime: the CA/Browser Forum ceiling, far above what a device needs.
pub const MAX_LIFETIME: Duration = Duration::from_secs(397 * 86_400);

/// Renewal policy of one group. JSON durations are whole seconds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GroupPolicy {
    /// Validity of issued certificates.
    pub lifetime_secs: u64,
    /// Fraction of the lifetime after which the agent renews (2/3 by default, like step).
    pub renew_fraction: f64,
    /// Jitter, as a fraction of the lifetime, subtracted at random from the renewal point
    /// so that a fleet enrolled together does not renew together.
    pub jitter_fraction: f64,
    /// Key algorithms accepted in CSRs; the first is the one agents generate.
    pub key_algorithms: Vec<KeyAlgorithm>,
    /// Backoff after a failed renewal starts here...
    pub retry_floor_secs: u64,
    /// ...doubles per failure, and never exceeds this.
    pub retry_cap_secs: u64,
    /// How long after expiry a certificate may still authenticate its own renewal, so a
    /// device that was offline through its expiry recovers without a new token. 0 = never.
    pub expired_grace_secs: u64,
    /// How long a renewed certificate stays valid beside its successor before the CA
    /// revokes it as `superseded` (sooner, once the successor is used), so that one
    /// certificate per device stays live.
    pub superseded_grace_secs: u64,
    /// "Rotate everything issued before T": certificates issued before this instant are
    /// due for renewal now.
    #[serde(with = "time::serde::rfc3339::option", skip_serializing_if = "Option::is_none")]
    pub rotate_issued_before: Option<OffsetDateTime>,
}

impl Default for GroupPolicy {
    fn default() -> Self {
        GroupPolicy {
            lifetime_secs: 7 * 86_400,
            renew_fraction: 2.0 / 3.0,
            jitter_fraction: 0.05,
            key_algorithms: vec![KeyAlgorithm::EcdsaP256, KeyAlgorithm::EcdsaP384],
            retry_floor_secs: 10,
            retry_cap_secs: 15 * 60,
            expired_grace_secs: 3 * 86_400,
            superseded_grace_secs: 3600,
            rotate_issued_before: None,
        }
    }
}

/// A policy value out of range. The message names the field and the allowed range.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid policy: {field} {problem}")]
pub struct PolicyError {
    pub field: &'static str,
    pub problem: String,
}

fn bad(field: &'static str, problem: impl Into<String>) -> PolicyError {
    PolicyError { field, problem: problem.into() }
}

impl GroupPolicy {
    pub fn lifetime(&self) -> Duration {
        Duration::from_secs(self.lifetime_secs)
    }
    pub fn retry_floor(&self) -> Duration {
        Duration::from_secs(self.retry_floor_secs)
    }
    pub fn retry_cap(&self) -> Duration {
        Duration::from_secs(self.retry_cap_secs)
    }
    pub fn expired_grace(&self) -> Duration {
        Duration::from_secs(self.expired_grace_secs)
    }
    /// The superseded grace in force: never longer than the lifetime.
    pub fn superseded_grace(&self) -> Duration {
        Duration::from_secs(self.superseded_grace_secs).min(self.lifetime())
    }
    /// The algorithm agents of this group generate.
    pub fn preferred_key(&self) -> KeyAlgorithm {
        self.key_algorithms.first().copied().unwrap_or(KeyAlgorithm::EcdsaP256)
    }

    /// Checks every invariant; the error names the first field out of range.
    pub fn validate(&self) -> Result<(), PolicyError> {
        let lt = self.lifetime();
        if lt < MIN_LIFETIME || lt > MAX_LIFETIME {
            return Err(bad(
                "lifetime",
                format!(
                    "is {}; allowed from {} to {}",
                    crate::duration::format(lt),
                    crate::duration::format(MIN_LIFETIME),
                    crate::duration::format(MAX_LIFETIME)
                ),
            ));
        }
        if !(0.1..=0.95).contains(&self.renew_fraction) {
            return Err(bad(
                "renew_fraction",
                format!("is {}; allowed from 0.1 to 0.95", self.renew_fraction),
            ));
        }
        if !(0.0..=0.5).contains(&self.jitter_fraction) {
            return Err(bad(
                "jitter_fraction",
                format!("is {}; allowed from 0 to 0.5", self.jitter_fraction),
            ));
        }
        if self.renew_fraction - self.jitter_fraction < 0.05 {
            return Err(bad(
                "jitter_fraction",
                "is larger than renew_fraction allows: renewal would start at issuance",
            ));
        }
        if self.key_algorithms.is_empty() {
            return Err(bad(
                "key_algorithms",
                format!("is empty; give one or more of {}", KeyAlgorithm::allowed_names()),
            ));
        }
        if self.retry_floor_secs == 0 {
            return Err(bad("retry_floor", "is 0; a floor of at least 1s stops retry storms"));
        }
        if self.retry_floor_secs > self.retry_cap_secs {
            return Err(bad(
                "retry_floor",
                format!(
                    "({}s) is above retry_cap ({}s)",
                    self.retry_floor_secs, self.retry_cap_secs
                ),
            ));
        }
        // The agents add these to instants: bounded, so no sum can overflow.
        if self.retry_cap_secs > MAX_LIFETIME.as_secs() {
            return Err(bad("retry_cap", "is longer than the longest lifetime"));
        }
        if self.expired_grace() > MAX_LIFETIME {
            return Err(bad("expired_grace", "is longer than the longest lifetime"));
        }
        if self.superseded_grace_secs > MAX_LIFETIME.as_secs() {
            return Err(bad("superseded_grace", "is longer than the longest lifetime"));
        }
        Ok(())
    }

    /// Returns the policy if valid.
    pub fn validated(self) -> Result<Self, PolicyError> {
        self.validate().map(|()| self)
    }
}

/// What `/v1/policy` answers: the group's name and its policy.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PolicyDocument {
    pub group: String,
    pub policy: GroupPolicy,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_valid() {
        assert_eq!(GroupPolicy::default().validate(), Ok(()));
    }

    #[test]
    fn errors_name_the_field() {
        let cases: Vec<(GroupPolicy, &str)> = vec![
            (GroupPolicy { lifetime_secs: 60, ..Default::default() }, "lifetime"),
            (GroupPolicy { renew_fraction: 1.5, ..Default::default() }, "renew_fraction"),
            (GroupPolicy { jitter_fraction: 0.7, ..Default::default() }, "jitter_fraction"),
            (
                GroupPolicy { renew_fraction: 0.2, jitter_fraction: 0.2, ..Default::default() },
                "jitter_fraction",
            ),
            (GroupPolicy { key_algorithms: vec![], ..Default::default() }, "key_algorithms"),
            (GroupPolicy { retry_floor_secs: 0, ..Default::default() }, "retry_floor"),
            (
                GroupPolicy { retry_floor_secs: 100, retry_cap_secs: 10, ..Default::default() },
                "retry_floor",
            ),
            // Ten thousand years: an agent adding it to an instant would overflow.
            (
                GroupPolicy {
                    retry_floor_secs: 315_360_000_000,
                    retry_cap_secs: 315_360_000_000,
                    ..Default::default()
                },
                "retry_cap",
            ),
        ];
        for (p, field) in cases {
            let e = p.validate().unwrap_err();
            assert_eq!(e.field, field, "{e}");
        }
    }

    #[test]
    fn json_rejects_unknown_fields_and_bad_algorithms() {
        assert!(serde_json::from_str::<GroupPolicy>(r#"{"lifetime":1}"#).is_err());
        assert!(serde_json::from_str::<GroupPolicy>(r#"{"key_algorithms":["ed25519"]}"#).is_err());
        let p: GroupPolicy = serde_json::from_str(r#"{"lifetime_secs":3600}"#).unwrap_or_default();
        assert_eq!(p.lifetime_secs, 3600);
        assert_eq!(p.renew_fraction, 2.0 / 3.0);
    }
}
