//! The serverless store: one DynamoDB table (key `pk`), so concurrent Lambdas share state.
//!
//! ```text
//! CERT#<serial>     an issued certificate (DER, identity, group, validity, revocation)
//! TOKEN#<sha256>    an enrolment token (hash only); `ttl` lets DynamoDB drop it later
//! CLAIM#<sha256>    a batch claim (hash only): group, identity template, uses and their limit
//! PROVISIONED#<key>  a provisioning done once: `identity:<identity>` through a claim,
//!                   `factory:<sha256>` with a factory certificate (or blocked)
//! FACTORYCA#<id>    a trusted factory CA (DER, group, identity rule)
//! KEY#<identity>#<spki sha256>  the serial that certified a key (no key is certified twice)
//! POLICY#<group>    a group's policy (JSON)
//! COUNTER#<name>    CRL numbers, the revocation generation
//! AUDIT#<ns>#<rnd>  the audit trail
//! DEVICE#<identity> the inventory: a device's last check-in (report as JSON)
//! ```
//!
//! The contract of [`Store`] holds under concurrency through conditional writes: an
//! issuance is one transaction that updates the token only if it is unused and not
//! revoked (a token revocation is conditional on the same), marks the
//! parent superseded only if nothing superseded it yet, claims the key only if it was never
//! certified for the identity, and puts the certificate only if the serial is new; through a
//! batch claim, it also adds one use only below the claim's limit, and through a claim or a
//! factory certificate puts its `PROVISIONED#` only if there is none.

use super::{
    AuditEvent, CertFilter, CertRecord, ClaimRecord, Consumes, DeviceRecord, FactoryCaRecord,
    Provisioned, RecordOutcome, Revocation, RevokeOutcome, Store, TokenFilter, TokenRecord,
    TokenRevokeOutcome, TokenUse,
};
use crate::error::{CaError, Result};
use crate::revocation::Reason;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::{AttributeValue, Put, ReturnValue, TransactWriteItem, Update};
use lanyard_proto::GroupPolicy;
use std::collections::HashMap;
use time::OffsetDateTime;

type Item = HashMap<String, AttributeValue>;

#[derive(Clone)]
pub struct DynamoStore {
    client: Client,
    table: String,
}

impl std::fmt::Debug for DynamoStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DynamoStore({})", self.table)
    }
}

fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}
fn n(v: i64) -> AttributeValue {
    AttributeValue::N(v.to_string())
}
fn get_s(i: &Item, k: &str) -> Option<String> {
    i.get(k).and_then(|v| v.as_s().ok()).cloned()
}
fn get_n(i: &Item, k: &str) -> Option<i64> {
    i.get(k).and_then(|v| v.as_n().ok()).and_then(|v| v.parse().ok())
}
fn token_from(i: &Item) -> Option<TokenRecord> {
    let hash = get_s(i, "pk")?.strip_prefix("TOKEN#")?.to_owned();
    Some(TokenRecord {
        hash,
        identity: get_s(i, "identity").unwrap_or_default(),
        group: get_s(i, "group").unwrap_or_default(),
        created_at: from_ts(get_n(i, "created_at").unwrap_or(0)),
        expires_at: from_ts(get_n(i, "expires_at").unwrap_or(0)),
        used: get_n(i, "used_at").map(|at| TokenUse {
            at: from_ts(at),
            serial: get_s(i, "used_serial").unwrap_or_default(),
            spki_sha256: get_s(i, "used_spki").unwrap_or_default(),
        }),
        revoked_at: get_n(i, "revoked_at").map(from_ts),
    })
}

fn claim_from(i: &Item) -> Option<ClaimRecord> {
    let hash = get_s(i, "pk")?.strip_prefix("CLAIM#")?.to_owned();
    Some(ClaimRecord {
        id: get_s(i, "id").unwrap_or_default(),
        hash,
        group: get_s(i, "group").unwrap_or_default(),
        identity_template: get_s(i, "template").unwrap_or_default(),
        max_uses: get_n(i, "max_uses").unwrap_or(0).max(0) as u64,
        uses: get_n(i, "uses").unwrap_or(0).max(0) as u64,
        created_at: from_ts(get_n(i, "created_at").unwrap_or(0)),
        expires_at: from_ts(get_n(i, "expires_at").unwrap_or(0)),
        revoked_at: get_n(i, "revoked_at").map(from_ts),
    })
}

fn provisioned_item(p: &Provisioned) -> Item {
    let mut u = Item::new();
    u.insert("pk".into(), s(format!("PROVISIONED#{}", p.key)));
    u.insert("identity".into(), s(&p.identity));
    u.insert("source".into(), s(&p.source));
    u.insert("at".into(), n(ts(p.at)));
    u.insert("serial".into(), s(&p.serial));
    u.insert("spki".into(), s(&p.spki_sha256));
    u
}

fn provisioned_from(i: &Item) -> Option<Provisioned> {
    Some(Provisioned {
        key: get_s(i, "pk")?.strip_prefix("PROVISIONED#")?.to_owned(),
        identity: get_s(i, "identity").unwrap_or_default(),
        source: get_s(i, "source").unwrap_or_default(),
        at: from_ts(get_n(i, "at").unwrap_or(0)),
        serial: get_s(i, "serial").unwrap_or_default(),
        spki_sha256: get_s(i, "spki").unwrap_or_default(),
    })
}

fn factory_ca_from(i: &Item) -> Option<FactoryCaRecord> {
    Some(FactoryCaRecord {
        id: get_s(i, "pk")?.strip_prefix("FACTORYCA#")?.to_owned(),
        group: get_s(i, "group").unwrap_or_default(),
        subject: get_s(i, "subject").unwrap_or_default(),
        der: i.get("der").and_then(|v| v.as_b().ok()).map(|b| b.as_ref().to_vec())?,
        identity_from: get_s(i, "identity_from")?.parse().ok()?,
        identity_template: get_s(i, "template"),
        added_at: from_ts(get_n(i, "added_at").unwrap_or(0)),
    })
}

fn device_from(i: &Item) -> Option<DeviceRecord> {
    Some(DeviceRecord {
        identity: get_s(i, "pk")?.strip_prefix("DEVICE#")?.to_owned(),
        group: get_s(i, "group").unwrap_or_default(),
        last_seen: from_ts(get_n(i, "last_seen").unwrap_or(0)),
        serial: get_s(i, "serial").unwrap_or_default(),
        cert_status: get_s(i, "cert_status").unwrap_or_default(),
        remote: get_s(i, "remote"),
        // A report that no longer parses (written by a newer CA) shows as empty.
        report: serde_json::from_str(&get_s(i, "report").unwrap_or_default()).unwrap_or_default(),
    })
}

fn ts(t: OffsetDateTime) -> i64 {
    t.unix_timestamp()
}
fn from_ts(v: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(v).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}
fn err(op: &str, e: impl std::fmt::Display) -> CaError {
    CaError::Storage(format!("DynamoDB {op}: {e}"))
}

/// Throttling becomes 503 + Retry-After, so agents back off instead of failing hard.
fn sdk_err<E, R>(op: &str, e: aws_sdk_dynamodb::error::SdkError<E, R>) -> CaError
where
    E: std::error::Error + aws_sdk_dynamodb::error::ProvideErrorMetadata + 'static,
    R: std::fmt::Debug,
{
    let code = e.as_service_error().and_then(|s| s.code()).unwrap_or_default().to_owned();
    if code.contains("Throttl")
        || code == "ProvisionedThroughputExceededException"
        || code == "RequestLimitExceeded"
    {
        tracing::warn!(op, code = %code, "DynamoDB throttled; answering 503 busy");
        return busy(format!("DynamoDB {op} throttled"));
    }
    // A single write that met a transaction in progress on the same item: the SDK does not
    // retry it, the device may.
    if code == "TransactionConflictException" {
        tracing::warn!(op, "DynamoDB write conflicted with a transaction; answering 503 busy");
        return busy(format!("DynamoDB {op} conflicted with a concurrent transaction"));
    }
    let detail = aws_sdk_dynamodb::error::DisplayErrorContext(&e).to_string();
    err(op, detail)
}

/// `503 busy`, with a `Retry-After` of 5 to 9 s so that the devices a throttled moment
/// refused do not all come back in the same second.
fn busy(reason: String) -> CaError {
    CaError::Unavailable { reason, retry_after_secs: 5 + rand::random_range(0..5u64) }
}

/// Cancellation reasons of a transaction that another writer or DynamoDB's capacity
/// stopped, rather than one of its conditions: worth retrying later.
const TRANSIENT_CANCELLATIONS: [&str; 4] = [
    "TransactionConflict",
    "ThrottlingError",
    "ProvisionedThroughputExceeded",
    "RequestLimitExceeded",
];

/// What a failed `TransactWriteItems` means: `Ok(codes)` when a condition failed (the
/// cancellation code of every item, in order); `503 busy` when the transaction was
/// cancelled by a conflicting transaction or by throttling; otherwise a storage error.
fn transact_failure<R: std::fmt::Debug>(
    e: aws_sdk_dynamodb::error::SdkError<
        aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError,
        R,
    >,
) -> Result<Vec<String>> {
    use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
    if let Some(TransactWriteItemsError::TransactionCanceledException(c)) = e.as_service_error() {
        let codes: Vec<String> = c
            .cancellation_reasons()
            .iter()
            .map(|r| r.code().unwrap_or("None").to_owned())
            .collect();
        if codes.iter().any(|c| c == "ConditionalCheckFailed") {
            return Ok(codes);
        }
        if let Some(code) = codes.iter().find(|c| TRANSIENT_CANCELLATIONS.contains(&c.as_str())) {
            tracing::warn!(code = %code, "DynamoDB transaction cancelled; answering 503 busy");
            return Err(busy(format!("DynamoDB transaction cancelled ({code})")));
        }
    }
    if let Some(TransactWriteItemsError::TransactionInProgressException(_)) = e.as_service_error() {
        return Err(busy("DynamoDB transaction in progress".into()));
    }
    Err(sdk_err("TransactWriteItems", e))
}

fn cert_item(c: &CertRecord) -> Item {
    let mut i = Item::new();
    i.insert("pk".into(), s(format!("CERT#{}", c.serial)));
    i.insert("serial".into(), s(&c.serial));
    i.insert("identity".into(), s(&c.identity));
    i.insert("group".into(), s(&c.group));
    i.insert("not_before".into(), n(ts(c.not_before)));
    i.insert("not_after".into(), n(ts(c.not_after)));
    i.insert("issued_at".into(), n(ts(c.issued_at)));
    i.insert("spki_sha256".into(), s(&c.spki_sha256));
    i.insert("der".into(), AttributeValue::B(Blob::new(c.der.clone())));
    if let Some(r) = &c.parent_serial {
        i.insert("renewed_from".into(), s(r));
    }
    i
}

fn key_pk(identity: &str, spki_sha256: &str) -> String {
    format!("KEY#{identity}#{spki_sha256}")
}

fn cert_from(i: &Item) -> Option<CertRecord> {
    let revocation = get_n(i, "revoked_at").map(|at| Revocation {
        at: from_ts(at),
        reason: get_s(i, "revoke_reason")
            .and_then(|r| r.parse().ok())
            .unwrap_or(Reason::Unspecified),
    });
    Some(CertRecord {
        serial: get_s(i, "serial")?,
        identity: get_s(i, "identity")?,
        group: get_s(i, "group")?,
        not_before: from_ts(get_n(i, "not_before")?),
        not_after: from_ts(get_n(i, "not_after")?),
        issued_at: from_ts(get_n(i, "issued_at")?),
        spki_sha256: get_s(i, "spki_sha256")?,
        der: i.get("der").and_then(|v| v.as_b().ok()).map(|b| b.as_ref().to_vec())?,
        parent_serial: get_s(i, "renewed_from"),
        superseded_by: get_s(i, "superseded_by"),
        superseded_at: get_n(i, "superseded_at").map(from_ts),
        revocation,
    })
}

fn audit_item(e: &AuditEvent) -> Item {
    let mut rnd = [0u8; 6];
    rand::fill(&mut rnd);
    let mut i = Item::new();
    i.insert(
        "pk".into(),
        s(format!("AUDIT#{:020}#{}", e.at.unix_timestamp_nanos(), hex::encode(rnd))),
    );
    i.insert("at".into(), n(ts(e.at)));
    i.insert("actor".into(), s(&e.actor));
    i.insert("action".into(), s(&e.action));
    i.insert("subject".into(), s(&e.subject));
    i.insert("detail".into(), s(&e.detail));
    if let Some(r) = &e.remote {
        i.insert("remote".into(), s(r));
    }
    i
}

impl DynamoStore {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        DynamoStore { client, table: table.into() }
    }

    pub fn table(&self) -> &str {
        &self.table
    }

    async fn get(&self, pk: String) -> Result<Option<Item>> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", s(pk))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| sdk_err("GetItem", e))?;
        Ok(out.item)
    }

    async fn scan_prefix(&self, prefix: &str) -> Result<Vec<Item>> {
        let mut items = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let out = self
                .client
                .scan()
                .table_name(&self.table)
                .filter_expression("begins_with(pk, :p)")
                .expression_attribute_values(":p", s(prefix))
                .consistent_read(true)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| sdk_err("Scan", e))?;
            items.extend(out.items.unwrap_or_default());
            match out.last_evaluated_key {
                Some(k) if !k.is_empty() => start = Some(k),
                _ => break,
            }
        }
        Ok(items)
    }

    fn put_tx(&self, i: Item, condition: Option<&str>) -> Result<TransactWriteItem> {
        let p = Put::builder()
            .table_name(&self.table)
            .set_item(Some(i))
            .set_condition_expression(condition.map(str::to_owned))
            .build()
            .map_err(|e| err("build", e))?;
        Ok(TransactWriteItem::builder().put(p).build())
    }

    fn update_tx(
        &self,
        pk: String,
        expr: &str,
        condition: &str,
        vals: Vec<(&str, AttributeValue)>,
    ) -> Result<TransactWriteItem> {
        let u = Update::builder()
            .table_name(&self.table)
            .key("pk", s(pk))
            .update_expression(expr)
            .condition_expression(condition)
            .set_expression_attribute_values(Some(
                vals.into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
            ))
            .build()
            .map_err(|e| err("build", e))?;
        Ok(TransactWriteItem::builder().update(u).build())
    }

    /// Runs a transaction; `Ok(Err(codes))` when a condition failed (codes per item).
    async fn transact(
        &self,
        items: Vec<TransactWriteItem>,
    ) -> Result<std::result::Result<(), Vec<String>>> {
        match self.client.transact_write_items().set_transact_items(Some(items)).send().await {
            Ok(_) => Ok(Ok(())),
            Err(e) => transact_failure(e).map(Err),
        }
    }

    /// `bump` as a transaction item (no condition).
    fn bump_tx(&self, name: &str) -> Result<TransactWriteItem> {
        let u = Update::builder()
            .table_name(&self.table)
            .key("pk", s(format!("COUNTER#{name}")))
            .update_expression("ADD #v :one")
            .expression_attribute_names("#v", "value")
            .expression_attribute_values(":one", n(1))
            .build()
            .map_err(|e| err("build", e))?;
        Ok(TransactWriteItem::builder().update(u).build())
    }

    async fn bump(&self, name: &str) -> Result<u64> {
        let out = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(format!("COUNTER#{name}")))
            .update_expression("ADD #v :one")
            .expression_attribute_names("#v", "value")
            .expression_attribute_values(":one", n(1))
            .return_values(ReturnValue::UpdatedNew)
            .send()
            .await
            .map_err(|e| sdk_err("UpdateItem", e))?;
        Ok(out.attributes.as_ref().and_then(|a| get_n(a, "value")).unwrap_or(0).max(0) as u64)
    }

    /// Stores a value under a key of the CA's own (`CA#...`): its certificates and settings.
    pub async fn put_meta(&self, key: &str, value: &[u8]) -> Result<()> {
        self.client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(format!("CA#{key}")))
            .item("value", AttributeValue::B(Blob::new(value.to_vec())))
            .send()
            .await
            .map_err(|e| sdk_err("PutItem", e))?;
        Ok(())
    }

    /// Stores a value under `CA#key` only if there is none: `false` when one exists (the
    /// condition failed), so that of two writers exactly one wins.
    pub async fn put_meta_new(&self, key: &str, value: &[u8]) -> Result<bool> {
        let r = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(format!("CA#{key}")))
            .item("value", AttributeValue::B(Blob::new(value.to_vec())))
            .condition_expression("attribute_not_exists(pk)")
            .send()
            .await;
        match r {
            Ok(_) => Ok(true),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|e| e.is_conditional_check_failed_exception()) =>
            {
                Ok(false)
            }
            Err(e) => Err(sdk_err("PutItem", e)),
        }
    }

    /// Replaces the value under `CA#key` only if it still is `expected`, and writes the
    /// `with` items (`CA#name`) in the same transaction: `false` when another writer changed
    /// `key` first (the condition failed) and nothing was written, so that of two
    /// read-modify-write cycles exactly one commits, with its own `with` items.
    pub async fn replace_meta(
        &self,
        key: &str,
        value: &[u8],
        expected: &[u8],
        with: &[(String, Vec<u8>)],
    ) -> Result<bool> {
        let blob = |v: &[u8]| AttributeValue::B(Blob::new(v.to_vec()));
        let put = |k: &str, v: &[u8]| {
            Put::builder()
                .table_name(&self.table)
                .item("pk", s(format!("CA#{k}")))
                .item("value", blob(v))
        };
        let mut items = vec![
            TransactWriteItem::builder()
                .put(
                    put(key, value)
                        .condition_expression("#v = :expected")
                        .expression_attribute_names("#v", "value")
                        .expression_attribute_values(":expected", blob(expected))
                        .build()
                        .map_err(|e| err("build", e))?,
                )
                .build(),
        ];
        for (k, v) in with {
            items.push(
                TransactWriteItem::builder()
                    .put(put(k, v).build().map_err(|e| err("build", e))?)
                    .build(),
            );
        }
        Ok(self.transact(items).await?.is_ok())
    }

    /// Removes `CA#key` (nothing when it does not exist).
    pub async fn delete_meta(&self, key: &str) -> Result<()> {
        self.client
            .delete_item()
            .table_name(&self.table)
            .key("pk", s(format!("CA#{key}")))
            .send()
            .await
            .map_err(|e| sdk_err("DeleteItem", e))?;
        Ok(())
    }

    pub async fn get_meta(&self, key: &str) -> Result<Option<Vec<u8>>> {
        Ok(self
            .get(format!("CA#{key}"))
            .await?
            .and_then(|i| i.get("value").and_then(|v| v.as_b().ok()).map(|b| b.as_ref().to_vec())))
    }
}

#[async_trait::async_trait]
impl Store for DynamoStore {
    async fn put_token(&self, t: TokenRecord, audit: AuditEvent) -> Result<()> {
        let mut i = Item::new();
        i.insert("pk".into(), s(format!("TOKEN#{}", t.hash)));
        i.insert("identity".into(), s(&t.identity));
        i.insert("group".into(), s(&t.group));
        i.insert("created_at".into(), n(ts(t.created_at)));
        i.insert("expires_at".into(), n(ts(t.expires_at)));
        // DynamoDB's TTL removes spent tokens 30 days after they expire.
        i.insert("ttl".into(), n(ts(t.expires_at) + 30 * 86_400));
        let r = self
            .transact(vec![
                self.put_tx(i, Some("attribute_not_exists(pk)"))?,
                self.put_tx(audit_item(&audit), None)?,
            ])
            .await?;
        r.map_err(|_| CaError::Storage("token hash collision".into()))
    }

    async fn token(&self, hash: &str) -> Result<Option<TokenRecord>> {
        Ok(self.get(format!("TOKEN#{hash}")).await?.as_ref().and_then(token_from))
    }

    async fn tokens(&self, filter: TokenFilter) -> Result<Vec<TokenRecord>> {
        let mut v: Vec<TokenRecord> = self
            .scan_prefix("TOKEN#")
            .await?
            .iter()
            .filter_map(token_from)
            .filter(|t| filter.matches(t))
            .collect();
        v.sort_by(|a, b| (a.created_at, &a.identity).cmp(&(b.created_at, &b.identity)));
        Ok(v)
    }

    async fn revoke_token(
        &self,
        hash: &str,
        at: OffsetDateTime,
        audit: AuditEvent,
    ) -> Result<TokenRevokeOutcome> {
        let upd = self.update_tx(
            format!("TOKEN#{hash}"),
            "SET revoked_at = :at",
            "attribute_exists(pk) AND attribute_not_exists(used_at) AND attribute_not_exists(revoked_at)",
            vec![(":at", n(ts(at)))],
        )?;
        match self.transact(vec![upd, self.put_tx(audit_item(&audit), None)?]).await? {
            Ok(()) => Ok(TokenRevokeOutcome::Revoked),
            Err(_) => Ok(match self.token(hash).await? {
                None => TokenRevokeOutcome::NotFound,
                Some(TokenRecord { used: Some(u), .. }) => TokenRevokeOutcome::Used(u),
                Some(TokenRecord { revoked_at: Some(at), .. }) => {
                    TokenRevokeOutcome::AlreadyRevoked(at)
                }
                Some(_) => {
                    return Err(CaError::Storage(
                        "token revocation failed without a reason".into(),
                    ));
                }
            }),
        }
    }

    async fn record_issuance(
        &self,
        cert: CertRecord,
        consumes: Consumes,
        audit: AuditEvent,
    ) -> Result<RecordOutcome> {
        // Which transaction item stands for which condition, to read cancellation reasons.
        let mut items = Vec::new();
        let mut token_at = None;
        let mut parent_at = None;
        let (mut claim_at, mut provisioned_at) = (None, None);
        if let Consumes::Claim(hash) = &consumes {
            claim_at = Some(items.len());
            items.push(self.update_tx(
                format!("CLAIM#{hash}"),
                "SET uses = uses + :one",
                "attribute_exists(pk) AND uses < max_uses AND attribute_not_exists(revoked_at)",
                vec![(":one", n(1))],
            )?);
        }
        if let Some(p) = consumes.provisioned(&cert) {
            provisioned_at = Some(items.len());
            items.push(self.put_tx(provisioned_item(&p), Some("attribute_not_exists(pk)"))?);
        }
        if let Consumes::Token(hash) = &consumes {
            token_at = Some(items.len());
            items.push(self.update_tx(
                format!("TOKEN#{hash}"),
                "SET used_at = :at, used_serial = :serial, used_spki = :spki",
                "attribute_exists(pk) AND attribute_not_exists(used_at) AND attribute_not_exists(revoked_at)",
                vec![
                    (":at", n(ts(cert.issued_at))),
                    (":serial", s(&cert.serial)),
                    (":spki", s(&cert.spki_sha256)),
                ],
            )?);
        }
        if let Some(parent) = &cert.parent_serial {
            parent_at = Some(items.len());
            items.push(self.update_tx(
                format!("CERT#{parent}"),
                "SET superseded_by = :child, superseded_at = :at",
                "attribute_exists(pk) AND attribute_not_exists(superseded_by)",
                vec![(":child", s(&cert.serial)), (":at", n(ts(cert.issued_at)))],
            )?);
        }
        let key_at = items.len();
        let mut key = Item::new();
        key.insert("pk".into(), s(key_pk(&cert.identity, &cert.spki_sha256)));
        key.insert("serial".into(), s(&cert.serial));
        items.push(self.put_tx(key, Some("attribute_not_exists(pk)"))?);
        items.push(self.put_tx(cert_item(&cert), Some("attribute_not_exists(pk)"))?);
        items.push(self.put_tx(audit_item(&audit), None)?);
        let codes = match self.transact(items).await? {
            Ok(()) => return Ok(RecordOutcome::Recorded),
            Err(codes) => codes,
        };
        let failed = |at: Option<usize>| {
            at.and_then(|i| codes.get(i)).is_some_and(|c| c == "ConditionalCheckFailed")
        };
        if failed(token_at) {
            return Ok(RecordOutcome::TokenAlreadyUsed);
        }
        if failed(claim_at) {
            return Ok(RecordOutcome::ClaimUnavailable);
        }
        if failed(provisioned_at) {
            return Ok(RecordOutcome::AlreadyProvisioned);
        }
        if failed(parent_at) {
            let parent = cert.parent_serial.as_deref().unwrap_or_default();
            return match self.cert(parent).await?.and_then(|p| p.superseded_by) {
                Some(child) => Ok(RecordOutcome::ParentAlreadyRenewed { child }),
                None => {
                    Err(CaError::Storage(format!("parent certificate {parent} is not recorded")))
                }
            };
        }
        if failed(Some(key_at)) {
            return match self.cert_by_key(&cert.identity, &cert.spki_sha256).await? {
                Some(serial) => Ok(RecordOutcome::KeyReused { serial }),
                None => Err(CaError::Storage("key claim failed without an owner".into())),
            };
        }
        Err(CaError::Storage(format!("issuance not recorded: {}", codes.join(", "))))
    }

    async fn put_claim(&self, k: ClaimRecord, audit: AuditEvent) -> Result<()> {
        let max = i64::try_from(k.max_uses).map_err(CaError::encoding("claim uses"))?;
        let mut i = Item::new();
        i.insert("pk".into(), s(format!("CLAIM#{}", k.hash)));
        i.insert("id".into(), s(&k.id));
        i.insert("group".into(), s(&k.group));
        i.insert("template".into(), s(&k.identity_template));
        i.insert("max_uses".into(), n(max));
        i.insert("uses".into(), n(0));
        i.insert("created_at".into(), n(ts(k.created_at)));
        i.insert("expires_at".into(), n(ts(k.expires_at)));
        let r = self
            .transact(vec![
                self.put_tx(i, Some("attribute_not_exists(pk)"))?,
                self.put_tx(audit_item(&audit), None)?,
            ])
            .await?;
        r.map_err(|_| CaError::Storage("claim hash collision".into()))
    }

    async fn claim(&self, hash: &str) -> Result<Option<ClaimRecord>> {
        Ok(self.get(format!("CLAIM#{hash}")).await?.as_ref().and_then(claim_from))
    }

    async fn claims(&self) -> Result<Vec<ClaimRecord>> {
        let mut v: Vec<ClaimRecord> =
            self.scan_prefix("CLAIM#").await?.iter().filter_map(claim_from).collect();
        v.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        Ok(v)
    }

    async fn revoke_claim(
        &self,
        hash: &str,
        at: OffsetDateTime,
        audit: AuditEvent,
    ) -> Result<bool> {
        let upd = self.update_tx(
            format!("CLAIM#{hash}"),
            "SET revoked_at = :at",
            "attribute_exists(pk) AND attribute_not_exists(revoked_at)",
            vec![(":at", n(ts(at)))],
        )?;
        Ok(self.transact(vec![upd, self.put_tx(audit_item(&audit), None)?]).await?.is_ok())
    }

    async fn provisioned(&self, key: &str) -> Result<Option<Provisioned>> {
        Ok(self.get(format!("PROVISIONED#{key}")).await?.as_ref().and_then(provisioned_from))
    }

    async fn reset_provisioned(&self, identity: &str, audit: AuditEvent) -> Result<u64> {
        // Rare (a person's command): a scan finds the identity's records.
        let found: Vec<Provisioned> = self
            .scan_prefix("PROVISIONED#")
            .await?
            .iter()
            .filter_map(provisioned_from)
            .filter(|p| p.identity == identity && p.source != Provisioned::BLOCKED)
            .collect();
        if found.is_empty() {
            return Ok(0);
        }
        let mut items = Vec::new();
        for p in &found {
            let del = aws_sdk_dynamodb::types::Delete::builder()
                .table_name(&self.table)
                .key("pk", s(format!("PROVISIONED#{}", p.key)))
                .build()
                .map_err(|e| err("build", e))?;
            items.push(TransactWriteItem::builder().delete(del).build());
        }
        items.push(self.put_tx(audit_item(&audit), None)?);
        self.transact(items)
            .await?
            .map_err(|c| CaError::Storage(format!("reset not recorded: {}", c.join(", "))))?;
        Ok(found.len() as u64)
    }

    async fn block_factory_cert(
        &self,
        cert_sha256: &str,
        at: OffsetDateTime,
        audit: AuditEvent,
    ) -> Result<()> {
        let p = Provisioned {
            key: Provisioned::factory_key(cert_sha256),
            identity: String::new(),
            source: Provisioned::BLOCKED.to_owned(),
            at,
            serial: String::new(),
            spki_sha256: String::new(),
        };
        let items =
            vec![self.put_tx(provisioned_item(&p), None)?, self.put_tx(audit_item(&audit), None)?];
        self.transact(items)
            .await?
            .map_err(|c| CaError::Storage(format!("block not recorded: {}", c.join(", "))))
    }

    async fn put_factory_ca(&self, f: FactoryCaRecord, audit: AuditEvent) -> Result<()> {
        let mut i = Item::new();
        i.insert("pk".into(), s(format!("FACTORYCA#{}", f.id)));
        i.insert("group".into(), s(&f.group));
        i.insert("subject".into(), s(&f.subject));
        i.insert("der".into(), AttributeValue::B(Blob::new(f.der.clone())));
        i.insert("identity_from".into(), s(f.identity_from.name()));
        if let Some(t) = &f.identity_template {
            i.insert("template".into(), s(t));
        }
        i.insert("added_at".into(), n(ts(f.added_at)));
        let items = vec![self.put_tx(i, None)?, self.put_tx(audit_item(&audit), None)?];
        self.transact(items)
            .await?
            .map_err(|c| CaError::Storage(format!("factory CA not recorded: {}", c.join(", "))))
    }

    async fn factory_cas(&self) -> Result<Vec<FactoryCaRecord>> {
        let mut v: Vec<FactoryCaRecord> =
            self.scan_prefix("FACTORYCA#").await?.iter().filter_map(factory_ca_from).collect();
        v.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(v)
    }

    async fn remove_factory_ca(&self, id: &str, audit: AuditEvent) -> Result<bool> {
        let del = aws_sdk_dynamodb::types::Delete::builder()
            .table_name(&self.table)
            .key("pk", s(format!("FACTORYCA#{id}")))
            .condition_expression("attribute_exists(pk)")
            .build()
            .map_err(|e| err("build", e))?;
        let items = vec![
            TransactWriteItem::builder().delete(del).build(),
            self.put_tx(audit_item(&audit), None)?,
        ];
        Ok(self.transact(items).await?.is_ok())
    }

    async fn cert_by_key(&self, identity: &str, spki_sha256: &str) -> Result<Option<String>> {
        Ok(self.get(key_pk(identity, spki_sha256)).await?.and_then(|i| get_s(&i, "serial")))
    }

    async fn cert(&self, serial: &str) -> Result<Option<CertRecord>> {
        Ok(self.get(format!("CERT#{serial}")).await?.as_ref().and_then(cert_from))
    }

    async fn certs(&self, filter: CertFilter) -> Result<Vec<CertRecord>> {
        let mut v: Vec<CertRecord> = self
            .scan_prefix("CERT#")
            .await?
            .iter()
            .filter_map(cert_from)
            .filter(|c| filter.matches(c))
            .collect();
        v.sort_by(|a, b| (a.issued_at, &a.serial).cmp(&(b.issued_at, &b.serial)));
        Ok(v)
    }

    async fn revoke(
        &self,
        serial: &str,
        rev: Revocation,
        audit: AuditEvent,
    ) -> Result<RevokeOutcome> {
        let Some(existing) = self.cert(serial).await? else { return Ok(RevokeOutcome::NotFound) };
        if let Some(r) = existing.revocation {
            return Ok(RevokeOutcome::AlreadyRevoked(r));
        }
        let upd = self.update_tx(
            format!("CERT#{serial}"),
            "SET revoked_at = :at, revoke_reason = :r",
            "attribute_exists(pk) AND attribute_not_exists(revoked_at)",
            vec![(":at", n(ts(rev.at))), (":r", s(rev.reason.name()))],
        )?;
        // The revocation generation moves in the same transaction: a revocation is never
        // stored without warm handlers learning that their cached CRL is old.
        let items = vec![upd, self.put_tx(audit_item(&audit), None)?, self.bump_tx("revocations")?];
        match self.transact(items).await? {
            Ok(()) => Ok(RevokeOutcome::Revoked),
            Err(_) => match self.cert(serial).await?.and_then(|c| c.revocation) {
                Some(r) => Ok(RevokeOutcome::AlreadyRevoked(r)),
                None => Ok(RevokeOutcome::NotFound),
            },
        }
    }

    async fn revocation_generation(&self) -> Result<u64> {
        Ok(self
            .get("COUNTER#revocations".into())
            .await?
            .and_then(|i| get_n(&i, "value"))
            .unwrap_or(0)
            .max(0) as u64)
    }

    async fn policy(&self, group: &str) -> Result<Option<GroupPolicy>> {
        let Some(i) = self.get(format!("POLICY#{group}")).await? else { return Ok(None) };
        let json = get_s(&i, "json").unwrap_or_default();
        serde_json::from_str(&json)
            .map(Some)
            .map_err(|e| CaError::Storage(format!("policy of group {group:?}: {e}")))
    }

    async fn set_policy(&self, group: &str, policy: GroupPolicy, audit: AuditEvent) -> Result<()> {
        let json = serde_json::to_string(&policy).map_err(|e| CaError::Storage(e.to_string()))?;
        let mut i = Item::new();
        i.insert("pk".into(), s(format!("POLICY#{group}")));
        i.insert("group".into(), s(group));
        i.insert("json".into(), s(json));
        i.insert("updated_at".into(), n(ts(audit.at)));
        self.transact(vec![self.put_tx(i, None)?, self.put_tx(audit_item(&audit), None)?])
            .await?
            .map_err(|c| CaError::Storage(c.join(", ")))
    }

    async fn policies(&self) -> Result<Vec<(String, GroupPolicy)>> {
        let mut v = Vec::new();
        for i in self.scan_prefix("POLICY#").await? {
            let g = get_s(&i, "group").unwrap_or_default();
            let p = serde_json::from_str(&get_s(&i, "json").unwrap_or_default())
                .map_err(|e| CaError::Storage(format!("policy of group {g:?}: {e}")))?;
            v.push((g, p));
        }
        v.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(v)
    }

    async fn next_crl_number(&self, scope: &str) -> Result<u64> {
        self.bump(&format!("crl_number:{scope}")).await
    }

    async fn audit(&self, event: AuditEvent) -> Result<()> {
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(audit_item(&event)))
            .send()
            .await
            .map_err(|e| sdk_err("PutItem", e))?;
        Ok(())
    }

    async fn audit_log(&self, limit: usize) -> Result<Vec<AuditEvent>> {
        let mut items = self.scan_prefix("AUDIT#").await?;
        items.sort_by_key(|i| std::cmp::Reverse(get_s(i, "pk")));
        Ok(items
            .iter()
            .take(limit)
            .map(|i| AuditEvent {
                at: from_ts(get_n(i, "at").unwrap_or(0)),
                actor: get_s(i, "actor").unwrap_or_default(),
                action: get_s(i, "action").unwrap_or_default(),
                subject: get_s(i, "subject").unwrap_or_default(),
                detail: get_s(i, "detail").unwrap_or_default(),
                remote: get_s(i, "remote"),
            })
            .collect())
    }

    async fn put_device(&self, d: DeviceRecord) -> Result<()> {
        let report =
            serde_json::to_string(&d.report).map_err(|e| CaError::Storage(e.to_string()))?;
        let mut i = Item::new();
        i.insert("pk".into(), s(format!("DEVICE#{}", d.identity)));
        i.insert("group".into(), s(d.group));
        i.insert("last_seen".into(), n(ts(d.last_seen)));
        i.insert("serial".into(), s(d.serial));
        i.insert("cert_status".into(), s(d.cert_status));
        if let Some(r) = d.remote {
            i.insert("remote".into(), s(r));
        }
        i.insert("report".into(), s(report));
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(i))
            .send()
            .await
            .map_err(|e| sdk_err("PutItem", e))?;
        Ok(())
    }

    async fn device(&self, identity: &str) -> Result<Option<DeviceRecord>> {
        Ok(self.get(format!("DEVICE#{identity}")).await?.as_ref().and_then(device_from))
    }

    async fn devices(&self) -> Result<Vec<DeviceRecord>> {
        let mut v: Vec<DeviceRecord> =
            self.scan_prefix("DEVICE#").await?.iter().filter_map(device_from).collect();
        v.sort_by(|a, b| a.identity.cmp(&b.identity));
        Ok(v)
    }

    async fn forget_devices(&self, before: OffsetDateTime) -> Result<u64> {
        let mut gone = 0;
        for d in self.devices().await?.into_iter().filter(|d| d.last_seen < before) {
            // Only if not seen since the scan: a check-in in between keeps the record.
            let r = self
                .client
                .delete_item()
                .table_name(&self.table)
                .key("pk", s(format!("DEVICE#{}", d.identity)))
                .condition_expression("last_seen < :before")
                .expression_attribute_values(":before", n(ts(before)))
                .send()
                .await;
            match r {
                Ok(_) => gone += 1,
                Err(e)
                    if e.as_service_error()
                        .is_some_and(|e| e.is_conditional_check_failed_exception()) => {}
                Err(e) => return Err(sdk_err("DeleteItem", e)),
            }
        }
        Ok(gone)
    }
}

#[cfg(test)]
mod tests {
    use super::{sdk_err, transact_failure};
    use crate::error::CaError;
    use aws_sdk_dynamodb::error::SdkError;
    use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
    use aws_sdk_dynamodb::types::CancellationReason;
    use aws_sdk_dynamodb::types::error::TransactionCanceledException;
    use lanyard_proto::ProblemCode;

    /// A cancelled transaction as the SDK reports it, with one reason per item. It stands
    /// in for DynamoDB's real cancellation reasons, which moto does not report faithfully
    /// (it has no transaction conflicts or per-item throttling).
    fn cancelled(codes: &[&str]) -> SdkError<TransactWriteItemsError, ()> {
        let mut ex = TransactionCanceledException::builder().message("Transaction cancelled");
        for c in codes {
            ex = ex.cancellation_reasons(CancellationReason::builder().code(*c).build());
        }
        SdkError::service_error(
            TransactWriteItemsError::TransactionCanceledException(ex.build()),
            (),
        )
    }

    #[test]
    fn a_conflict_or_throttling_cancellation_is_busy() {
        for reason in ["TransactionConflict", "ThrottlingError", "ProvisionedThroughputExceeded"] {
            match transact_failure(cancelled(&["None", reason, "None"])) {
                Err(e @ CaError::Unavailable { retry_after_secs, .. }) => {
                    assert_eq!(e.code(), ProblemCode::Busy);
                    assert_eq!(e.status().as_u16(), 503);
                    assert!((5..10).contains(&retry_after_secs), "{retry_after_secs}");
                    assert!(e.to_string().contains(reason), "{e}");
                }
                other => panic!("{reason}: expected 503 busy, got {other:?}"),
            }
        }
    }

    #[test]
    fn a_failed_condition_still_reports_its_codes() {
        // Exactly as before: the caller decides (already renewed, token used, key reused),
        // also when another item of the same transaction conflicted.
        let codes = ["ConditionalCheckFailed", "TransactionConflict", "None"];
        match transact_failure(cancelled(&codes)) {
            Ok(got) => assert_eq!(got, codes),
            Err(e) => panic!("expected the cancellation codes, got {e:?}"),
        }
    }

    /// A single write refused with `TransactionConflictException` (DynamoDB's answer when a
    /// transaction holds the item; moto never gives it) is 503 busy, not a 500.
    #[test]
    fn a_single_write_conflicting_with_a_transaction_is_busy() {
        use aws_sdk_dynamodb::operation::put_item::PutItemError;
        use aws_sdk_dynamodb::types::error::TransactionConflictException;
        let e: SdkError<PutItemError, ()> = SdkError::service_error(
            PutItemError::TransactionConflictException(
                TransactionConflictException::builder()
                    .message("Transaction is ongoing for the item")
                    .meta(
                        aws_sdk_dynamodb::error::ErrorMetadata::builder()
                            .code("TransactionConflictException")
                            .build(),
                    )
                    .build(),
            ),
            (),
        );
        match sdk_err("PutItem", e) {
            e @ CaError::Unavailable { .. } => assert_eq!(e.status().as_u16(), 503),
            other => panic!("expected 503 busy, got {other:?}"),
        }
    }

    #[test]
    fn another_cancellation_is_a_storage_error() {
        match transact_failure(cancelled(&["ValidationError"])) {
            Err(e @ CaError::Storage(_)) => assert_eq!(e.code(), ProblemCode::Internal),
            other => panic!("expected a storage error, got {other:?}"),
        }
    }
}
