//! `tern gateway …`: the site's WAN gateway through the admin API of the node that runs it
//! (`GET /v1/wan`, `POST /v1/wan/targets`, `DELETE /v1/wan/targets/{site}`,
//! `POST /v1/wan/targets/{site}/repair`).
use std::fmt::Write as _;
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use hyper::Method;
use serde::de::DeserializeOwned;
use tern_node::admin::WanStatus;
use tern_node::admin::WanTargetSpec;
use tern_node::admin::http::{ErrorBody, WanActionDone};

use crate::admin_client::{AdminClient, Reply, describe_failure};
use crate::cli::{GatewayCommand, GatewaySiteArgs};
use crate::node_host;
use crate::status_cmd::ADMIN_REQUEST_MAX;
use crate::views::Table;

/// Requests to the gateway wait for its answer; the node gives up after its own request
/// timeout (10 s by default) and answers 504, so the CLI waits a little longer to see that.
const ACTION_REQUEST_MAX: Duration = Duration::from_secs(15);

/// Partition ids listed per target at most; the rest are counted.
const REPAIRING_SHOWN_MAX: usize = 8;

pub fn run(command: GatewayCommand) -> anyhow::Result<()> {
    match command {
        GatewayCommand::Status(args) => {
            let client = AdminClient::new(args.admin, ADMIN_REQUEST_MAX);
            let status: WanStatus = node_host::block_on(async {
                let reply = client.request(Method::GET, "/v1/wan").await?;
                decode(&client, "GET", "/v1/wan", &reply)
            })?;
            print!("{}", render_wan(&status));
            Ok(())
        }
        GatewayCommand::AddTarget(args) => {
            let spec = WanTargetSpec {
                site: args.site,
                site_id: args.site_id,
                addr: args.addr.to_string(),
            };
            let body = serde_json::to_vec(&spec).context("encoding the target as JSON")?;
            act(
                &args.admin.admin,
                Method::POST,
                "/v1/wan/targets".to_owned(),
                Some(Bytes::from(body)),
            )
        }
        GatewayCommand::RemoveTarget(GatewaySiteArgs { admin, site }) => act(
            &admin.admin,
            Method::DELETE,
            format!("/v1/wan/targets/{}", path_segment(&site)?),
            None,
        ),
        GatewayCommand::Repair(GatewaySiteArgs { admin, site }) => act(
            &admin.admin,
            Method::POST,
            format!("/v1/wan/targets/{}/repair", path_segment(&site)?),
            None,
        ),
    }
}

/// A site name goes into the URL path as is; anything that is not a DNS label character
/// would change the route (or need escaping the gateway would then refuse anyway).
fn path_segment(site: &str) -> anyhow::Result<&str> {
    if site.is_empty() || !site.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
        bail!("--site must be a site name (letters, digits, '-'), got {site:?}");
    }
    Ok(site)
}

fn act(admin: &str, method: Method, path: String, body: Option<Bytes>) -> anyhow::Result<()> {
    let client = AdminClient::new(admin, ACTION_REQUEST_MAX);
    let done: WanActionDone = node_host::block_on(async {
        let reply = client
            .request_with_body(method.clone(), &path, body)
            .await?;
        decode(&client, method.as_str(), &path, &reply)
    })?;
    println!("{}", describe_done(&done));
    Ok(())
}

/// The 2xx body as `T`; otherwise an error, worded for the operator when the node simply runs
/// no gateway (the usual mistake: `--admin` names another node of the site).
fn decode<T: DeserializeOwned>(
    client: &AdminClient,
    method: &str,
    path: &str,
    reply: &Reply,
) -> anyhow::Result<T> {
    let url = format!("{method} http://{}{path}", client.addr());
    if !reply.status.is_success() {
        let code = serde_json::from_slice::<ErrorBody>(&reply.body)
            .ok()
            .map(|b| b.code);
        if code.as_deref() == Some("no_gateway") {
            bail!(
                "the node at {} runs no WAN gateway (no [wan] section in its config, or the \
                 gateway has not started yet); point --admin at the admin address of the node \
                 whose config has [wan]",
                client.addr()
            );
        }
        bail!("{url}: {}", describe_failure(reply));
    }
    serde_json::from_slice(&reply.body).with_context(|| format!("decoding the JSON of {url}"))
}

fn describe_done(done: &WanActionDone) -> String {
    match done.action.as_str() {
        "add_target" => format!("site {} added as a target", done.site),
        "remove_target" => format!("site {} removed; its backlog is deleted", done.site),
        "repair" => format!("anti-entropy against site {} started", done.site),
        other => format!("{other} of site {}: done", done.site),
    }
}

fn yes_no(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

fn ms(value: Option<u64>) -> String {
    value.map_or_else(|| "-".to_owned(), |v| v.to_string())
}

/// `2 (3, 9)`: how many partitions, then the first few.
fn repairing(partitions: &[u16]) -> String {
    if partitions.is_empty() {
        return "0".to_owned();
    }
    let shown: Vec<String> = partitions
        .iter()
        .take(REPAIRING_SHOWN_MAX)
        .map(u16::to_string)
        .collect();
    let more = if partitions.len() > REPAIRING_SHOWN_MAX {
        ", …"
    } else {
        ""
    };
    format!("{} ({}{more})", partitions.len(), shown.join(", "))
}

/// `6 (counter-merge 4, lww 2)`, or `0`.
fn conflicts(by_resolver: &[(String, u64)]) -> String {
    let total: u64 = by_resolver.iter().map(|(_, n)| n).sum();
    if total == 0 {
        return "0".to_owned();
    }
    let parts: Vec<String> = by_resolver
        .iter()
        .filter(|(_, n)| *n > 0)
        .map(|(name, n)| format!("{name} {n}"))
        .collect();
    format!("{total} ({})", parts.join(", "))
}

/// `tern gateway status`: who the gateway is, one row per target and per source.
pub fn render_wan(status: &WanStatus) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "WAN gateway of site {} (id {})",
        status.site, status.site_id
    );

    let _ = writeln!(out, "\ntargets (this site ships to):");
    if status.targets.is_empty() {
        let _ = writeln!(out, "  none");
    } else {
        let mut table = Table::new(&[
            "SITE",
            "ID",
            "ADDR",
            "CONNECTED",
            "BACKLOG RECORDS",
            "BACKLOG BYTES",
            "SHIPPED",
            "REPAIRING",
            "STATE",
        ]);
        for t in &status.targets {
            let state = match (&t.failure, t.write_blocked) {
                (Some(failure), _) => format!("failed: {failure}"),
                (None, true) => "write-blocked".to_owned(),
                (None, false) => "ok".to_owned(),
            };
            table.row(vec![
                t.site.clone(),
                t.site_id.to_string(),
                t.addr.clone(),
                yes_no(t.connected).to_owned(),
                t.backlog_records.to_string(),
                t.backlog_bytes.to_string(),
                t.shipped_total.to_string(),
                repairing(&t.repairing_partitions),
                state,
            ]);
        }
        out.push_str(&table.render("  "));
    }

    let _ = writeln!(out, "\nsources (this site applies from):");
    if status.sources.is_empty() {
        let _ = writeln!(out, "  none");
    } else {
        let mut table = Table::new(&[
            "SITE",
            "ID",
            "CONNECTED",
            "APPLIED",
            "DUPLICATES",
            "LAG P50 MS",
            "LAG P99 MS",
            "CONFLICTS",
        ]);
        for s in &status.sources {
            table.row(vec![
                s.site.clone(),
                s.site_id.to_string(),
                yes_no(s.connected).to_owned(),
                s.applied_total.to_string(),
                s.duplicates_total.to_string(),
                ms(s.lag_ms_p50),
                ms(s.lag_ms_p99),
                conflicts(&s.conflicts_total),
            ]);
        }
        out.push_str(&table.render("  "));
    }

    let refused: Vec<String> = status
        .refused_total
        .iter()
        .filter(|(_, n)| *n > 0)
        .map(|(reason, n)| format!("{reason} {n}"))
        .collect();
    if !refused.is_empty() {
        let _ = writeln!(out, "\nrefused connections: {}", refused.join(", "));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use tern_node::admin::{WanSourceStatus, WanTargetStatus};

    fn sample() -> WanStatus {
        WanStatus {
            site: "a".into(),
            site_id: 1,
            targets: vec![
                WanTargetStatus {
                    site: "b".into(),
                    site_id: 2,
                    addr: "127.0.0.1:7302".into(),
                    connected: true,
                    backlog_records: 12,
                    backlog_bytes: 3400,
                    shipped_total: 900,
                    repairing_partitions: vec![3, 9],
                    ..WanTargetStatus::default()
                },
                WanTargetStatus {
                    site: "c".into(),
                    site_id: 3,
                    addr: "127.0.0.1:7303".into(),
                    write_blocked: true,
                    ..WanTargetStatus::default()
                },
            ],
            sources: vec![
                WanSourceStatus {
                    site: "b".into(),
                    site_id: 2,
                    connected: true,
                    applied_total: 700,
                    duplicates_total: 5,
                    conflicts_total: vec![("counter-merge".into(), 4), ("lww".into(), 2)],
                    lag_ms_p50: Some(2),
                    lag_ms_p99: Some(17),
                    ..WanSourceStatus::default()
                },
                WanSourceStatus {
                    site: "c".into(),
                    site_id: 3,
                    ..WanSourceStatus::default()
                },
            ],
            refused_total: vec![("unknown_ca".into(), 0), ("unknown_site".into(), 6)],
        }
    }

    #[test]
    fn status_shows_every_target_and_source() {
        let want = "\
WAN gateway of site a (id 1)

targets (this site ships to):
  SITE  ID  ADDR            CONNECTED  BACKLOG RECORDS  BACKLOG BYTES  SHIPPED  REPAIRING  STATE
  b     2   127.0.0.1:7302  yes        12               3400           900      2 (3, 9)   ok
  c     3   127.0.0.1:7303  no         0                0              0        0          write-blocked

sources (this site applies from):
  SITE  ID  CONNECTED  APPLIED  DUPLICATES  LAG P50 MS  LAG P99 MS  CONFLICTS
  b     2   yes        700      5           2           17          6 (counter-merge 4, lww 2)
  c     3   no         0        0           -           -           0

refused connections: unknown_site 6
";
        assert_eq!(render_wan(&sample()), want);
    }

    #[test]
    fn status_lines_for_edge_cases() {
        // (mutation, fragment that must appear)
        type Case = (fn(&mut WanStatus), &'static str);
        let cases: &[Case] = &[
            (
                |s| s.targets.clear(),
                "targets (this site ships to):\n  none\n",
            ),
            (
                |s| s.sources.clear(),
                "sources (this site applies from):\n  none\n",
            ),
            (
                |s| s.targets[0].failure = Some("disk full".into()),
                "failed: disk full\n",
            ),
            (
                |s| s.targets[0].repairing_partitions = (0..10).collect(),
                "10 (0, 1, 2, 3, 4, 5, 6, 7, …)",
            ),
        ];
        for (mutate, fragment) in cases {
            let mut status = sample();
            mutate(&mut status);
            let text = render_wan(&status);
            assert!(text.contains(fragment), "{text} lacks {fragment:?}");
        }
        let mut quiet = sample();
        quiet.refused_total.clear();
        assert!(!render_wan(&quiet).contains("refused"));
    }

    #[test]
    fn site_names_are_checked_before_they_enter_a_url() {
        for (site, ok) in [
            ("b", true),
            ("site-2", true),
            ("", false),
            ("b/repair", false),
            ("b?x=1", false),
            ("..", false),
        ] {
            assert_eq!(path_segment(site).is_ok(), ok, "{site:?}");
        }
    }
}
