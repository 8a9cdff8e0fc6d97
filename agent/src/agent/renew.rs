//! Renewal (re-enrolment over mutual TLS, staged key, commit) and the check-in with the CA.

use super::Agent;
use crate::credential::Loaded;
use crate::error::{AgentError, Result};
use crate::est::{EstClient, Trust};
use crate::schedule::{self, Validity};
use crate::state::{self};
use crate::verify::{self, CertInfo};
use lanyard_keystore::Credential;
use lanyard_proto::ProblemCode;
use lanyard_proto::api::CheckinReport;
use lanyard_proto::timefmt::Rfc3339Time;

impl Agent {
    /// Renews now: a new key, a CSR authenticated by the current certificate, checks on
    /// the answer, then an atomic swap in the store. On any failure the current credential
    /// stays as it was.
    pub async fn renew(&self) -> Result<CertInfo> {
        let cur = self.current().ok_or(AgentError::NotEnrolled)?;
        let mut st = self.state();
        // A renewal off schedule (after failures, for a rotation, to fetch a superseded
        // certificate's successor) spreads the next one over the whole interval.
        let validity = Validity::new(cur.info.not_before, cur.info.not_after, st.last_renewal);
        let off_schedule = st.failures > 0
            || st.superseded.is_some()
            || schedule::rotation_applies(&self.effective_policy(), validity, self.clock.now());
        st.renewing_pid = Some(std::process::id());
        self.save_state(&st);
        let result = self.renew_inner(&cur).await;
        let mut st = self.state();
        st.renewing_pid = None;
        let now = self.clock.now();
        match &result {
            Ok(_) => {
                st.failures = 0;
                st.last_failure_at = None;
                st.failure_jitter = 0.0;
                st.retry_not_before = None;
                st.last_error = None;
                st.last_error_code = None;
                st.last_renewal = Some(now);
                st.resync = off_schedule;
                st.revoked = None;
                st.superseded = None;
                self.metrics.renewals.inc();
            }
            Err(e) => {
                st.failures = st.failures.saturating_add(1);
                st.last_failure_at = Some(now);
                // Drawn once per failure and stored: every wake and every `status` sees
                // the same next attempt.
                st.failure_jitter = schedule::failure_jitter();
                st.last_error = Some(e.to_string());
                st.last_error_code = e.code().map(|c| c.as_str().to_owned());
                st.retry_not_before = None;
                // Final refusals (a renewal conflict is also the sign of a copy of this
                // device's key) are in `last_error_code`: the decision needs a new token.
                if let AgentError::Refused { code, message, retry_after, .. } = e {
                    if *code == ProblemCode::Revoked {
                        st.revoked = Some((cur.info.serial.clone(), message.clone()));
                    }
                    st.retry_not_before =
                        retry_after.and_then(|d| time::Duration::try_from(d).ok()).map(|d| now + d);
                }
                if !e.retryable() {
                    // A refusal that will not change: the next attempt starts from a new key.
                    if let Err(e) = self.store.clear_staged() {
                        tracing::warn!(error = %e, "cannot drop the staged renewal key");
                    }
                }
                self.metrics.renewal_failure(e.kind());
            }
        }
        self.save_state(&st);
        // Hooks run once the renewal is committed (credential and state): a slow or
        // failing hook cannot leave a renewal half-recorded.
        if let Ok(info) = &result {
            crate::hooks::run(&self.cfg.hooks, info).await;
        }
        result
    }

    async fn renew_inner(&self, cur: &Loaded) -> Result<CertInfo> {
        let ca_url = self.ca_url()?;
        let client = EstClient::new(
            &ca_url,
            Trust::Roots(self.roots()?),
            cur.client_auth(),
            self.cfg.ca.timeout,
        )?;
        // A renewal interrupted after the CA answered (a crash, a lost answer) left its key
        // staged: the CA answers the same key with the same certificate. Otherwise a new
        // key, staged before the request for the same reason.
        let serial = cur.info.serial.clone();
        let key = match self.in_store(move |s| s.staged(&serial)).await? {
            Some(pkcs8) => {
                tracing::info!(serial = %cur.info.serial, "retrying an interrupted renewal with its staged key");
                self.staged_key(&pkcs8)?
            }
            None => {
                let policy = self.effective_policy();
                // A hardware store makes P-256 keys: the group's choice when it allows one.
                let alg = if self.hardware().is_some()
                    && policy.key_algorithms.contains(&lanyard_proto::KeyAlgorithm::EcdsaP256)
                {
                    lanyard_proto::KeyAlgorithm::EcdsaP256
                } else {
                    policy.preferred_key()
                };
                self.generate_staged(alg, cur.info.serial.clone()).await?
            }
        };
        let csr = key.csr(&cur.info.identity)?;
        let spki = key.spki_der();
        let leaf = client.simplereenroll(&csr, &spki).await?;
        let ca_certs = client.cacerts().await?;
        let (ca_roots, intermediates) = verify::split_ca_certs(&ca_certs);
        let saved = state::roots_path(self.state_dir());
        let pinned = saved.exists();
        let mut anchors =
            if pinned { crate::trust::read_pem_certs(&saved)? } else { ca_roots.clone() };
        let info = verify::issued(
            &leaf,
            &spki,
            Some(&cur.info.identity),
            &anchors,
            &intermediates,
            self.clock.now(),
        )?;
        // A root rotation: the CA sends its new root with a cross-certificate from the old
        // one. Trusted from now on, so the device keeps reaching the CA after the old root
        // expires or leaves.
        let learned = verify::vouched_roots(&anchors, &ca_roots, &intermediates, self.clock.now());
        if pinned && !learned.is_empty() {
            anchors.extend(learned.iter().cloned());
            crate::fsutil::write_atomic(&saved, crate::trust::to_pem(&anchors).as_bytes(), 0o644)?;
            for r in &learned {
                tracing::info!(sha256 = %crate::trust::sha256_hex(r), "trusting the CA's new root, vouched for by a root already trusted");
            }
        }
        let mut chain = vec![leaf];
        chain.extend(verify::issuers_of(&chain[0], &intermediates).iter().map(|c| c.to_vec()));
        let cred = Credential { key: key.stored(), chain_der: chain };
        self.in_store(move |s| s.store(&cred)).await?;
        self.reload()?;
        tracing::info!(identity = %info.identity, serial = %info.serial, previous = %cur.info.serial, not_after = %Rfc3339Time(info.not_after), "renewed");
        Ok(info)
    }

    /// Asks the CA about the current certificate: its policy, and whether it is revoked.
    pub async fn check_in(&self) -> Result<()> {
        let cur = self.current().ok_or(AgentError::NotEnrolled)?;
        let client = EstClient::new(
            &self.ca_url()?,
            Trust::Roots(self.roots()?),
            cur.client_auth(),
            self.cfg.ca.timeout,
        )?;
        let report = self.checkin_report(&cur);
        let answer = match client.checkin(&report).await {
            Ok(Some(s)) => Ok(s),
            Ok(None) => client.certificate_status().await,
            Err(e) => Err(e),
        };
        let mut st = self.state();
        match answer {
            Ok(s) => {
                st.group = Some(s.group);
                // A policy that does not validate (an older or broken CA) is not applied:
                // the last good one stays.
                match s.policy.validated() {
                    Ok(p) => {
                        st.policy = Some(p);
                        st.policy_version = s.policy_version;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "the CA sent a policy that does not validate; keeping the previous one")
                    }
                }
                st.last_checkin = Some(self.clock.now());
                let reason = s.revocation_reason.clone().unwrap_or_else(|| "unspecified".into());
                // Revoked as superseded: the CA renewed this certificate and the answer was
                // never stored here. The next renewal fetches it again with the staged key.
                st.superseded =
                    (s.status == "revoked" && reason == "superseded").then(|| s.serial.clone());
                st.revoked = (s.status == "revoked" && reason != "superseded").then(|| {
                    (
                        s.serial.clone(),
                        format!(
                            "the device certificate {} was revoked ({reason}); enrol again with a new token",
                            s.serial
                        ),
                    )
                });
                self.save_state(&st);
                Ok(())
            }
            Err(AgentError::Refused { code: ProblemCode::Revoked, message, .. }) => {
                st.revoked = Some((cur.info.serial.clone(), message.clone()));
                self.save_state(&st);
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// What the agent tells the CA of itself at check-in: no key, no token.
    fn checkin_report(&self, cur: &Loaded) -> CheckinReport {
        let status = self.status();
        let st = self.state();
        let local = self.local_policy_applies();
        CheckinReport {
            serial: cur.info.serial.clone(),
            state: serde_json::to_value(status.state)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default(),
            next_renewal: status.next_renewal,
            last_error_code: st.last_error_code.clone(),
            last_error: st.last_error.as_ref().map(|e| {
                e.chars()
                    .filter(|c| !c.is_control())
                    .take(lanyard_proto::api::CHECKIN_MAX_TEXT)
                    .collect()
            }),
            consecutive_failures: st.failures,
            agent_version: env!("CARGO_PKG_VERSION").to_owned(),
            os: os_name(),
            arch: std::env::consts::ARCH.to_owned(),
            store: status.store,
            policy_version: if local { None } else { st.policy_version.clone() },
            policy_source: if local { "file" } else { "ca" }.to_owned(),
            routes: self.metrics.route_health(),
        }
    }
}

/// The OS as `/etc/os-release` names it (`PRETTY_NAME`), else Rust's name for it.
fn os_name() -> String {
    std::fs::read_to_string("/etc/os-release")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("PRETTY_NAME=").map(|v| v.trim().trim_matches('"').to_owned())
            })
        })
        .filter(|v| !v.is_empty() && v.len() <= 200)
        .unwrap_or_else(|| std::env::consts::OS.to_owned())
}
