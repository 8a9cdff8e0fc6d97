//! The console's pages. maud escapes every `(value)` it interpolates, so text a device or a
//! token supplied (identities, reports, errors) is shown as text, never as markup.

use super::{DevicesQuery, PAGE_SIZE, Session, urlencode};
use crate::authority::Authority;
use crate::inventory::{DeviceDetail, DeviceView};
use crate::revocation::Reason;
use crate::store::{AuditEvent, TokenRecord};
use lanyard_proto::GroupPolicy;
use lanyard_proto::duration::{format, format_approx};
use lanyard_proto::timefmt::rfc3339;
use maud::{DOCTYPE, Markup, html};
use std::time::Duration;
use time::OffsetDateTime;

/// A page as an axum response.
pub struct Page(Markup);

impl axum::response::IntoResponse for Page {
    fn into_response(self) -> axum::response::Response {
        axum::response::Html(self.0.into_string()).into_response()
    }
}

const NAV: [(&str, &str); 6] = [
    ("/", "Overview"),
    ("/devices", "Devices"),
    ("/groups", "Groups"),
    ("/tokens", "Tokens"),
    ("/audit", "Audit"),
    ("/status", "CA status"),
];

fn layout(s: Option<&Session>, title: &str, active: &str, body: Markup) -> Page {
    Page(html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · lanyard-ca" }
                link rel="stylesheet" href="/static/console.css";
            }
            body {
                header {
                    span.brand { "lanyard-ca" }
                    @if let Some(s) = s {
                        nav {
                            @for (href, name) in NAV {
                                a href=(href) class=[(href == active).then_some("active")] { (name) }
                            }
                        }
                        form.logout method="post" action="/logout" {
                            input type="hidden" name="csrf" value=(s.csrf);
                            span.who { (s.admin.name) }
                            button type="submit" { "Sign out" }
                        }
                    }
                }
                main {
                    h1 { (title) }
                    (body)
                }
            }
        }
    })
}

pub fn login(error: Option<&str>) -> Page {
    layout(
        None,
        "Sign in",
        "",
        html! {
            @if let Some(e) = error { p.error role="alert" { (e) } }
            form method="post" action="/login" {
                label for="token" { "Admin token" }
                input #token type="password" name="token" autocomplete="off" required;
                button type="submit" { "Sign in" }
            }
            p.hint { "Make one on the CA's machine with " code { "lanyard-ca admin token --name YOU" } "." }
        },
    )
}

pub fn message(s: &Session, title: &str, text: &str) -> Page {
    layout(Some(s), title, "", html! { p.error role="alert" { (text) } })
}

fn state_badge(state: &str) -> Markup {
    html! { span class={ "badge " (state) } { (state) } }
}

fn ago(now: OffsetDateTime, t: Option<OffsetDateTime>) -> String {
    t.map_or_else(|| "never".to_owned(), |t| format!("{} ago", format_approx(now - t)))
}

/// Renewals due per hour over the next 14 days, as an SVG bar chart. A device's renewal is
/// the one it reported; a device that never checked in is placed by its policy.
fn renewal_chart(
    devices: &[DeviceView],
    now: OffsetDateTime,
    policies: &[(String, GroupPolicy)],
) -> (Markup, u64, usize) {
    const HOURS: usize = 14 * 24;
    let mut per_hour = vec![0u64; HOURS];
    let policy_of =
        |g: &str| policies.iter().find(|(n, _)| n == g).map(|(_, p)| p.clone()).unwrap_or_default();
    for d in devices.iter().filter(|d| d.cert_status != "revoked") {
        let due = d.next_renewal.unwrap_or_else(|| {
            let p = policy_of(&d.group);
            d.not_after
                - time::Duration::seconds(
                    (p.lifetime_secs as f64 * (1.0 - p.renew_fraction)) as i64,
                )
        });
        let h = ((due - now).whole_hours()).max(0) as usize;
        if h < HOURS {
            per_hour[h] += 1;
        }
    }
    let peak = per_hour.iter().copied().max().unwrap_or(0);
    let peak_hour = per_hour.iter().position(|&n| n == peak).unwrap_or(0);
    let (w, h) = (HOURS as f64 * 3.0, 120.0);
    let scale = if peak == 0 { 0.0 } else { (h - 10.0) / peak as f64 };
    let svg = html! {
        svg.chart xmlns="http://www.w3.org/2000/svg" viewBox={ "0 0 " (w) " " (h + 14.0) } role="img" aria-label="Renewals due per hour, next 14 days" {
            @for (i, n) in per_hour.iter().enumerate() {
                @if *n > 0 {
                    rect x=(i as f64 * 3.0) y=(h - *n as f64 * scale) width="2.4" height=(*n as f64 * scale) {
                        title { "+" (i) "h: " (n) " renewals" }
                    }
                }
            }
            @for day in 0..=14 {
                line x1=(day as f64 * 72.0) x2=(day as f64 * 72.0) y1="0" y2=(h) class="grid" {}
                @if day % 2 == 0 && day < 14 {
                    text x=(day as f64 * 72.0 + 2.0) y=(h + 12.0) { "day " (day) }
                }
            }
        }
    };
    (svg, peak, peak_hour)
}

pub fn overview(
    s: &Session,
    devices: &[DeviceView],
    now: OffsetDateTime,
    policies: &[(String, GroupPolicy)],
) -> Page {
    let count = |st: &str| devices.iter().filter(|d| d.state == st).count();
    let failing: Vec<&DeviceView> = devices.iter().filter(|d| d.failing).collect();
    let stale = devices
        .iter()
        .filter(|d| d.last_seen.unwrap_or(d.enrolled_at) < now - time::Duration::DAY)
        .count();
    let (chart, peak, peak_hour) = renewal_chart(devices, now, policies);
    layout(
        Some(s),
        "Overview",
        "/",
        html! {
            section.cards {
                div.card { div.n { (devices.len()) } div { "devices" } }
                @for st in ["valid", "renewing", "enrolled", "expired", "revoked"] {
                    a.card href={ "/devices?state=" (st) } { div.n { (count(st)) } div { (st) } }
                }
                a.card.warn href="/devices?failing=1" { div.n { (failing.len()) } div { "failing" } }
                div.card { div.n { (stale) } div { "not seen for 24 h" } }
            }
            h2 { "Renewals due per hour, next 14 days" }
            p.hint { "Peak " (peak) " in one hour (+" (peak_hour) " h)." }
            (chart)
            h2 { "Current failures" }
            @if failing.is_empty() {
                p { "No device reports a failing renewal." }
            } @else {
                table {
                    thead { tr { th { "Device" } th { "Code" } th { "Failures" } th { "Last error" } th { "Last seen" } } }
                    tbody {
                        @for d in failing.iter().take(20) {
                            tr {
                                td { a href={ "/devices/" (urlencode(&d.identity)) } { (d.identity) } }
                                td { code { (d.last_error_code.as_deref().unwrap_or("-")) } }
                                td { (d.consecutive_failures) }
                                td { (d.last_error.as_deref().unwrap_or("-")) }
                                td { (ago(now, d.last_seen)) }
                            }
                        }
                    }
                }
            }
        },
    )
}

fn query_string(q: &DevicesQuery, sort: Option<&str>, page: Option<usize>) -> String {
    let mut parts = Vec::new();
    let desc = match sort {
        // Clicking the column already sorted ascending sorts it descending.
        Some(col) => q.sort == col && q.desc.is_empty(),
        None => !q.desc.is_empty(),
    };
    for (k, v) in
        [("q", q.q.as_str()), ("state", &q.state), ("group", &q.group), ("failing", &q.failing)]
    {
        if !v.is_empty() {
            parts.push(format!("{k}={}", urlencode(v)));
        }
    }
    let sort = sort.unwrap_or(&q.sort);
    if !sort.is_empty() {
        parts.push(format!("sort={}", urlencode(sort)));
    }
    if desc {
        parts.push("desc=1".into());
    }
    if let Some(p) = page.filter(|p| *p > 0) {
        parts.push(format!("page={p}"));
    }
    format!("/devices?{}", parts.join("&"))
}

pub fn devices(
    s: &Session,
    q: &DevicesQuery,
    rows: &[&DeviceView],
    total: usize,
    groups: &[&str],
) -> Page {
    let pages = total.div_ceil(PAGE_SIZE).max(1);
    let page = q.page.min(pages - 1);
    let first = if total == 0 { 0 } else { page * PAGE_SIZE + 1 };
    let now_col = |col: &str, label: &str| {
        html! {
            th { a href=(query_string(q, Some(col), None)) { (label) @if q.sort == col { @if q.desc.is_empty() { " ▲" } @else { " ▼" } } } }
        }
    };
    layout(
        Some(s),
        "Devices",
        "/devices",
        html! {
            form.filters method="get" action="/devices" {
                input type="search" name="q" value=(q.q) placeholder="identity or serial" aria-label="Search";
                select name="state" aria-label="State" {
                    option value="" { "any state" }
                    @for st in ["valid", "renewing", "enrolled", "expired", "revoked"] {
                        option value=(st) selected[q.state == st] { (st) }
                    }
                }
                select name="group" aria-label="Group" {
                    option value="" { "any group" }
                    @for g in groups { option value=(g) selected[q.group == *g] { (g) } }
                }
                label { input type="checkbox" name="failing" value="1" checked[!q.failing.is_empty()]; " failing only" }
                button type="submit" { "Filter" }
            }
            p.hint { (first) "–" (first + rows.len().saturating_sub(1).min(total)) " of " (total) " devices" }
            table.devices {
                thead { tr {
                    (now_col("identity", "Identity")) (now_col("group", "Group")) (now_col("state", "State"))
                    (now_col("last_seen", "Last seen")) (now_col("version", "Agent")) (now_col("not_after", "Not after"))
                    th { "Last error" }
                } }
                tbody {
                    @for d in rows {
                        tr {
                            td { a href={ "/devices/" (urlencode(&d.identity)) } { (d.identity) } }
                            td { (d.group) }
                            td { (state_badge(&d.state)) }
                            td { (d.last_seen.map(rfc3339).unwrap_or_else(|| "never".into())) }
                            td { (d.agent_version.as_deref().unwrap_or("-")) }
                            td { (rfc3339(d.not_after)) }
                            td { @if d.failing { code { (d.last_error_code.as_deref().unwrap_or("?")) } " × " (d.consecutive_failures) } @else { "-" } }
                        }
                    }
                }
            }
            nav.pager {
                @if page > 0 { a rel="prev" href=(query_string(q, None, Some(page - 1))) { "← Previous" } }
                span { "page " (page + 1) " of " (pages) }
                @if page + 1 < pages { a rel="next" href=(query_string(q, None, Some(page + 1))) { "Next →" } }
            }
        },
    )
}

pub fn device(s: &Session, d: &DeviceDetail, now: OffsetDateTime, error: Option<&str>) -> Page {
    let v = &d.device;
    let live = d.lineage.iter().any(|c| c.revocation.is_none() && c.not_after > now);
    layout(
        Some(s),
        &v.identity,
        "/devices",
        html! {
            dl.facts {
                dt { "State" } dd { (state_badge(&v.state)) " certificate " code { (v.serial) } " (" (v.cert_status) ")" }
                dt { "Group" } dd { (v.group) }
                dt { "Not after" } dd { (rfc3339(v.not_after)) }
                dt { "Enrolled" } dd { (rfc3339(v.enrolled_at)) }
                dt { "Last seen" } dd { (ago(now, v.last_seen)) @if let Some(r) = &d.remote { " from " (r) } }
                @if let Some(r) = &d.report {
                    dt { "Agent" } dd { (r.agent_version) " on " (r.os) " (" (r.arch) "), key in " (r.store) }
                    dt { "Policy" } dd {
                        code { (r.policy_version.as_deref().unwrap_or("-")) } " from " (r.policy_source)
                        @if v.policy_current == Some(false) { " " span.badge.expired { "not the group's current policy" } }
                    }
                    dt { "Next renewal" } dd { (r.next_renewal.map(rfc3339).unwrap_or_else(|| "-".into())) }
                    dt { "Failures" } dd {
                        (r.consecutive_failures)
                        @if let Some(c) = &r.last_error_code { " · " code { (c) } }
                        @if let Some(e) = &r.last_error { " · " (e) }
                    }
                    @for route in &r.routes {
                        dt { "Route " (route.name) } dd { (route.requests) " requests, " (route.errors) " errors, last status " (route.last_status.map(|s| s.to_string()).unwrap_or_else(|| "-".into())) }
                    }
                }
            }
            h2 { "Certificates" }
            table {
                thead { tr { th { "Serial" } th { "Issued" } th { "Not after" } th { "Status" } th { "Renewed from" } } }
                tbody {
                    @for c in &d.lineage {
                        tr {
                            td { code { (c.serial) } }
                            td { (rfc3339(c.issued_at)) }
                            td { (rfc3339(c.not_after)) }
                            td {
                                (crate::inventory::cert_status(c, now))
                                @if let Some(r) = &c.revocation { " (" (r.reason.name()) ", " (rfc3339(r.at)) ")" }
                            }
                            td { code { (c.parent_serial.as_deref().unwrap_or("-")) } }
                        }
                    }
                }
            }
            h2 { "Revoke" }
            @if let Some(e) = error { p.error role="alert" { (e) } }
            @if live {
                form.revoke method="post" action={ "/devices/" (urlencode(&v.identity)) "/revoke" } {
                    input type="hidden" name="csrf" value=(s.csrf);
                    label for="reason" { "Reason" }
                    select #reason name="reason" {
                        @for r in Reason::ALL.iter().filter(|r| **r != Reason::CaCompromise && **r != Reason::AaCompromise) {
                            option value=(r.name()) selected[*r == Reason::KeyCompromise] { (r.name()) }
                        }
                    }
                    label { input type="checkbox" name="confirm" value="yes"; " Revoke every live certificate of " strong { (v.identity) } " (cannot be undone; the device needs a new token)" }
                    button.danger type="submit" { "Revoke" }
                }
            } @else {
                p { "No live certificate to revoke." }
            }
            h2 { "Audit" }
            (audit_table(&d.audit))
        },
    )
}

fn audit_table(events: &[AuditEvent]) -> Markup {
    html! {
        table.audit {
            thead { tr { th { "When" } th { "Who" } th { "Action" } th { "Subject" } th { "Detail" } } }
            tbody {
                @for e in events {
                    tr { td { (rfc3339(e.at)) } td { (e.actor) } td { (e.action) } td { code { (e.subject) } } td { (e.detail) } }
                }
            }
        }
    }
}

/// One group on the groups page.
pub struct GroupRow {
    pub group: String,
    pub policy: GroupPolicy,
    pub version: String,
    pub devices: usize,
    pub load: Option<super::Load>,
}

pub fn groups(s: &Session, rows: &[GroupRow], error: Option<(&str, &str)>) -> Page {
    let d = |secs: u64| format(Duration::from_secs(secs));
    layout(
        Some(s),
        "Groups",
        "/groups",
        html! {
            @if let Some((g, msg)) = error { @if !rows.iter().any(|r| r.group == g) { p.error role="alert" { (g) ": " (msg) } } }
            @for r in rows {
                section.group id={ "group-" (r.group) } {
                    h2 { (r.group) " " small { (r.devices) " devices · policy " code { (r.version) } } }
                    @if let Some((g, msg)) = error { @if g == r.group { p.error role="alert" { (msg) } } }
                    form.policy method="post" action={ "/groups/" (urlencode(&r.group)) } {
                        input type="hidden" name="csrf" value=(s.csrf);
                        label { "Lifetime " input name="lifetime" value=(d(r.policy.lifetime_secs)) required; }
                        label { "Renew at fraction " input name="renew_fraction" value=(r.policy.renew_fraction) required; }
                        label { "Jitter fraction " input name="jitter_fraction" value=(r.policy.jitter_fraction) required; }
                        label { "Key algorithms " input name="key_algorithms" value=(r.policy.key_algorithms.iter().map(|k| k.name()).collect::<Vec<_>>().join(", ")) required; }
                        label { "Retry floor " input name="retry_floor" value=(d(r.policy.retry_floor_secs)) required; }
                        label { "Retry cap " input name="retry_cap" value=(d(r.policy.retry_cap_secs)) required; }
                        label { "Expired grace " input name="expired_grace" value=(d(r.policy.expired_grace_secs)) required; }
                        label { "Superseded grace " input name="superseded_grace" value=(d(r.policy.superseded_grace_secs)) required; }
                        button type="submit" { "Save policy" }
                    }
                    @if let Some(l) = &r.load {
                    p.hint {
                        "Renewal load (fleet simulate: " (super::LOAD_DEVICES) " devices over " (l.days) " days): mean "
                        (format!("{:.1}", l.mean_per_hour)) " an hour, peak " (l.peak_per_hour)
                        " per " (super::LOAD_DEVICES) " devices; about "
                        (format!("{:.1}", l.mean_per_hour * r.devices as f64 / f64::from(super::LOAD_DEVICES)))
                        " an hour for this group's " (r.devices) "."
                    }
                }
            }
        }
        p.hint { "Durations as 90s, 15m, 24h, 7d; grace periods take 0 for never. A new group gets its policy with " code { "lanyard-ca policy set --group NAME" } "." }
        },
    )
}

/// What a token form did.
pub enum TokenOutcome {
    /// `(identity, token)`: shown once, never stored; and why a batch stopped early.
    Made(Vec<(String, String)>, Option<String>),
    Error(String),
}

pub fn tokens(
    s: &Session,
    list: &[TokenRecord],
    now: OffsetDateTime,
    outcome: Option<&TokenOutcome>,
) -> Page {
    layout(
        Some(s),
        "Tokens",
        "/tokens",
        html! {
            @match outcome {
                Some(TokenOutcome::Error(e)) => p.error role="alert" { (e) },
                Some(TokenOutcome::Made(made, stopped)) => {
                    @if let Some(why) = stopped { p.error role="alert" { (why) } }
                    p.ok { (made.len()) " token(s) made. They are shown once: copy them now (CSV: identity,token)." }
                    pre.tokens { @for (id, t) in made { (id) "," (t) "\n" } }
                },
                None => {},
            }
            form.token method="post" action="/tokens" {
                input type="hidden" name="csrf" value=(s.csrf);
                label { "Identity (or a template with {seq}) " input name="identity" required placeholder="sensor-{seq:04}.fleet.example.com"; }
                label { "Count (templates) " input name="count" inputmode="numeric" placeholder="1"; }
                label { "Group " input name="group" placeholder="default"; }
                label { "Valid for " input name="ttl" placeholder="24h"; }
                button type="submit" { "Create" }
            }
            h2 { "Unused tokens" }
            table {
                thead { tr { th { "ID" } th { "Identity" } th { "Group" } th { "Expires" } } }
                tbody {
                    @for t in list {
                        tr {
                            td { code { (&t.hash[..t.hash.len().min(16)]) } }
                            td { (t.identity) }
                            td { (t.group) }
                            td { (rfc3339(t.expires_at)) " (in " (format_approx(t.expires_at - now)) ")" }
                        }
                    }
                }
            }
        },
    )
}

pub fn audit(s: &Session, events: &[AuditEvent]) -> Page {
    layout(
        Some(s),
        "Audit",
        "/audit",
        html! {
            p.hint { "The latest " (events.len()) " events, newest first (" code { "lanyard-ca audit --limit N" } " for more)." }
            (audit_table(events))
        },
    )
}

fn cert_facts(name: &str, der: &[u8], now: OffsetDateTime) -> Markup {
    use x509_parser::prelude::{FromDer, X509Certificate};
    match X509Certificate::from_der(der) {
        Ok((_, c)) => {
            let not_after = OffsetDateTime::from_unix_timestamp(c.validity().not_after.timestamp())
                .unwrap_or(now);
            html! {
                dt { (name) } dd {
                    (c.subject().to_string()) " · not after " (rfc3339(not_after)) " (in " (format_approx(not_after - now)) ")"
                    " · SHA-256 " code { (crate::ca_dir::fingerprint(der)) }
                }
            }
        }
        Err(e) => html! { dt { (name) } dd.error { "does not parse: " (e.to_string()) } },
    }
}

pub fn status(
    s: &Session,
    auth: &Authority,
    now: OffsetDateTime,
    bundle: Option<Result<String, String>>,
    published: Option<OffsetDateTime>,
) -> Page {
    let crl_age = auth.crl_made_at().map(|t| format_approx(now - t));
    layout(
        Some(s),
        "CA status",
        "/status",
        html! {
            dl.facts {
                (cert_facts("Root", &auth.keys().root_der, now))
                @for r in &auth.keys().retired_roots {
                    (cert_facts(&format!("Root {} (retired)", r.generation), &r.der, now))
                }
                (cert_facts("Issuing CA", &auth.keys().issuing_der, now))
                @for r in &auth.keys().retired {
                    (cert_facts(
                        &format!("Issuing CA {} ({})", r.generation, if r.revoked.is_some() { "revoked" } else { "retired" }),
                        &r.der,
                        now,
                    ))
                }
                dt { "Signer" } dd { (auth.keys().issuing.0.describe()) }
                dt { "CRL" } dd { @match crl_age { Some(a) => { "made " (a) " ago; valid " (format(auth.publication().crl_validity.unsigned_abs())) } None => "not made by this process yet" } }
                dt { "Published" } dd { @match published { Some(t) => { (format_approx(now - t)) " ago" } None => "never (or unreadable: see the log)" } }
                dt { "Bundle" } dd {
                    @match bundle {
                        Some(Ok(t)) => span.ok { (t) },
                        Some(Err(t)) => span.error { (t) },
                        None => "-",
                    }
                }
                @if let Some(a) = auth.admission_stats() {
                    dt { "Pacing" } dd { (format!("{:.1}", a.rate)) " issuances/s; " (a.admitted) " admitted, " (a.refused) " refused busy" }
                }
            }
        },
    )
}
