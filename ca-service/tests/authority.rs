//! The conformance suite (tests/conformance) on the embedded SQLite store.

mod conformance;

use lanyard_ca::store::sqlite::SqliteStore;
use std::sync::Arc;

macro_rules! on_sqlite {
    ($($case:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $case() {
                let store = Arc::new(SqliteStore::in_memory().expect("store"));
                conformance::$case(conformance::ca_with(store)).await;
            }
        )*
    };
}

on_sqlite!(
    enrol_retry_with_same_key_gets_same_certificate,
    failed_attempts_do_not_burn_the_token,
    token_binding_expiry_and_unknown,
    policy_decides_lifetime_and_keys,
    renewal_rules,
    foreign_certificate_is_refused,
    crl_lists_revocations_and_changes_number,
    concurrent_enrolments_issue_once,
    a_certificate_renews_once,
    revocation_follows_the_lineage,
    revoke_identity_revokes_every_live_certificate,
    key_reuse_is_refused,
    reads_before_signing_match_the_single_reads,
    superseded_parents_retire,
    refusals_carry_codes,
    tokens_are_listed_and_revoked_before_use,
    a_token_is_revoked_or_used_never_both,
    checkins_fill_the_inventory,
    a_batch_claim_enrols_each_identity_once_and_no_more_than_its_uses,
    a_claim_is_never_used_beyond_its_uses,
    factory_certificates_enrol_once_each,
);
