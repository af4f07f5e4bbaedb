//! New team members become e-mails to their direct managers: SCIM → normalizer → hierarchy →
//! notifier → a real SMTP conversation with a sink on 127.0.0.1, on a clock the test moves.

use chrono::{DateTime, Duration, Utc};
use muster_testkit::eventually;
use muster_testkit::scim::{Scim, patch_body, user_body};
use reqwest::Method;
use serde_json::{Value, json};

use crate::system::{System, WAIT};

const ENTERPRISE: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

/// The company notifies managers, and every member records web conferences (so every team
/// with a member is recorded).
async fn notifying_company(sys: &System) {
    let (status, body) = sys.admin_send(Method::PUT, "/settings", json!({"notify_managers_on_import": true})).await;
    assert_eq!(status, 200, "{body}");
    let listing = sys.admin_get("/assignments").await;
    let default = listing["assignments"].as_array().unwrap().iter().find(|a| a["is_default"] == true).unwrap().clone();
    let body = json!({"name": "Default", "mode": "automatic", "capture": {"web_conferences": true}});
    let (status, body) =
        sys.admin_send(Method::PUT, &format!("/assignments/{}", default["id"].as_str().unwrap()), body).await;
    assert_eq!(status, 200, "{body}");
}

/// A manager in `timezone` with `locale`.
async fn manager(scim: &Scim, name: &str, timezone: &str, locale: &str) -> String {
    let mut body = user_body(&format!("{name}@contoso.com"));
    body["timezone"] = json!(timezone);
    body["locale"] = json!(locale);
    let r = scim.post("/Users", &body).await;
    assert_eq!(r.status, 201, "{}", r.text);
    r.body["id"].as_str().unwrap().to_string()
}

/// A new member, then their manager by id (as Entra sends it).
async fn report(scim: &Scim, name: &str, boss: &str) -> String {
    let id = scim.create_user(&format!("{name}@contoso.com")).await;
    set_manager(scim, &id, boss).await;
    id
}

async fn set_manager(scim: &Scim, member: &str, boss: &str) {
    let body = patch_body(json!([{"op": "Add", "path": format!("{ENTERPRISE}:manager"), "value": boss}]));
    assert_eq!(scim.patch(&format!("/Users/{member}"), &body).await.status, 200);
}

/// The notifications once `check` holds for them.
async fn notifications(sys: &System, what: &str, check: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    eventually(WAIT, what, || async {
        let list = sys.admin_try_get("/notifications").await?;
        let list = list["notifications"].as_array()?.clone();
        check(&list).then_some(list)
    })
    .await
}

fn member_ids(notification: &Value) -> Vec<String> {
    let mut ids: Vec<String> = notification["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["scim_user_id"].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    ids
}

async fn mails(sys: &System, count: usize) -> Vec<muster_testkit::smtp::Received> {
    eventually(WAIT, &format!("{count} e-mail(s)"), || async {
        let got = sys.sink.messages();
        (got.len() >= count).then_some(got)
    })
    .await
}

/// Waits until the new members' assignments are applied (the team is recorded), so that the
/// e-mail is not postponed for them when the clock moves past its due time.
async fn recorded(sys: &System, members: &[&str]) {
    for member in members {
        eventually(WAIT, &format!("{member} recorded"), || async {
            let records: Option<bool> =
                sqlx::query_scalar("select records from assignments.member_state where scim_user_id::text = $1")
                    .bind(member)
                    .fetch_optional(&sys.app.db.pool)
                    .await
                    .unwrap();
            records.filter(|r| *r)
        })
        .await;
    }
}

/// Waits until the notifier has taken the member's placement of `version` into account.
async fn placement_seen(sys: &System, member: &str, version: i64) {
    eventually(WAIT, &format!("placement {version} of {member} seen"), || async {
        let seen: Option<i64> = sqlx::query_scalar(
            "select version from worker.processed_versions where worker = 'notifier' and entity_id = $1",
        )
        .bind(format!("placed:{member}"))
        .fetch_optional(&sys.app.db.pool)
        .await
        .unwrap();
        seen.filter(|v| *v >= version)
    })
    .await;
}

#[tokio::test]
async fn one_new_report_gets_one_email_and_updates_reactivations_and_moves_get_none() {
    let sys = System::start().await;
    let scim = sys.app.scim();
    notifying_company(&sys).await;
    let wednesday = at("2026-12-02T15:00:00Z"); // 10:00 in New York
    sys.set_clock(wednesday);
    let boss = manager(&scim, "bea", "America/New_York", "en-US").await;
    let ann = report(&scim, "ann", &boss).await;

    let list = notifications(&sys, "a scheduled digest", |l| l.len() == 1).await;
    assert_eq!(list[0]["state"], "scheduled");
    assert_eq!(member_ids(&list[0]), vec![ann.clone()]);
    assert_eq!(at(list[0]["scheduled_for"].as_str().unwrap()), wednesday + Duration::minutes(10), "the digest window");
    recorded(&sys, &[&ann]).await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(sys.sink.messages().is_empty(), "nothing before it is due");

    sys.set_clock(wednesday + Duration::minutes(11));
    let sent = mails(&sys, 1).await;
    let mail = &sent[0];
    assert_eq!(mail.to, vec!["bea@contoso.com"]);
    assert_eq!(mail.header("Subject").as_deref(), Some("ann joined your team"));
    let text = mail.text();
    assert!(text.contains("ann@contoso.com"), "{text}");
    assert!(text.contains(&format!("https://muster.example/members/{ann}")), "{text}");
    assert!(text.contains("text/html"), "a text and an HTML body: {text}");
    let list = notifications(&sys, "sent", |l| l[0]["state"] == "sent").await;
    assert_eq!(list[0]["recipient"]["email"], "bea@contoso.com");
    assert!(at(list[0]["sent_at"].as_str().unwrap()) >= wednesday + Duration::minutes(10));

    // An update, a deactivation and reactivation, a move to another manager: nothing more.
    let title = patch_body(json!([{"op": "Replace", "path": "title", "value": "Lead"}]));
    assert_eq!(scim.patch(&format!("/Users/{ann}"), &title).await.status, 200);
    for active in [false, true] {
        let body = patch_body(json!([{"op": "Replace", "path": "active", "value": active}]));
        assert_eq!(scim.patch(&format!("/Users/{ann}"), &body).await.status, 200);
    }
    let other = manager(&scim, "otto", "America/New_York", "en-US").await;
    set_manager(&scim, &ann, &other).await;
    placement_seen(&sys, &ann, 2).await;
    sys.set_clock(wednesday + Duration::days(1));
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_eq!(sys.sink.messages().len(), 1);
    assert_eq!(sys.admin_get("/notifications").await["total"], 1);
    sys.stop().await;
}

#[tokio::test]
async fn several_new_reports_arriving_together_become_one_digest() {
    let sys = System::start().await;
    let scim = sys.app.scim();
    notifying_company(&sys).await;
    let wednesday = at("2026-12-02T15:00:00Z");
    sys.set_clock(wednesday);
    let boss = manager(&scim, "bea", "America/New_York", "en-US").await;
    let mut reports = Vec::new();
    for name in ["ann", "bob", "cy", "dee", "eve"] {
        reports.push(report(&scim, name, &boss).await);
    }
    reports.sort();
    let list = notifications(&sys, "five members in one digest", |l| {
        l.len() == 1 && l[0]["members"].as_array().is_some_and(|m| m.len() == 5)
    })
    .await;
    assert_eq!(member_ids(&list[0]), reports);
    recorded(&sys, &reports.iter().map(String::as_str).collect::<Vec<_>>()).await;
    sys.set_clock(wednesday + Duration::minutes(11));
    let sent = mails(&sys, 1).await;
    assert_eq!(sent[0].header("Subject").as_deref(), Some("5 new members joined your team"));
    for name in ["ann", "bob", "cy", "dee", "eve"] {
        assert!(sent[0].text().contains(&format!("{name}@contoso.com")), "{name}");
    }
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(sys.sink.messages().len(), 1, "one e-mail, not five");
    sys.stop().await;
}

#[tokio::test]
async fn redelivered_events_and_two_replicas_send_each_email_once() {
    let mut sys = System::start().await;
    sys.start_notifier_replica();
    let scim = sys.app.scim();
    notifying_company(&sys).await;
    let wednesday = at("2026-12-02T15:00:00Z");
    sys.set_clock(wednesday);
    let (bea, otto) = (
        manager(&scim, "bea", "America/New_York", "en-US").await,
        manager(&scim, "otto", "Europe/Berlin", "de-DE").await,
    );
    let mut placed = Vec::new();
    for (name, boss) in [("ann", &bea), ("bob", &bea), ("cy", &otto)] {
        placed.push(report(&scim, name, boss).await);
    }
    for member in &placed {
        placement_seen(&sys, member, 1).await;
    }
    recorded(&sys, &placed.iter().map(String::as_str).collect::<Vec<_>>()).await;
    let published = sys
        .collect("member.placed", |seen| placed.iter().all(|m| seen.iter().any(|e| e["entity_id"] == m.as_str())))
        .await;
    // Every report's `member.placed` published twice more: redelivery as the broker may do it.
    for _ in 0..2 {
        for event in published.iter().filter(|e| placed.iter().any(|m| e["entity_id"] == m.as_str())) {
            sqlx::query(
                "insert into scim.outbox (event_id, tenant_id, routing_key, entity_id, version, envelope)
                 values (gen_random_uuid(), $1, 'member.placed', $2, $3, $4)",
            )
            .bind(sys.app.tenant.id)
            .bind(event["entity_id"].as_str())
            .bind(event["version"].as_i64())
            .bind(event)
            .execute(&sys.app.db.pool)
            .await
            .unwrap();
        }
    }
    eventually(WAIT, "the copies published", || async {
        let pending: i64 =
            sqlx::query_scalar("select count(*) from scim.outbox").fetch_one(&sys.app.db.pool).await.unwrap();
        (pending == 0).then_some(())
    })
    .await;
    sys.set_clock(wednesday + Duration::minutes(11));
    let sent = mails(&sys, 2).await;
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    let sent_later = sys.sink.messages();
    assert_eq!(sent_later.len(), 2, "one per manager: {:?}", sent_later.iter().map(|m| &m.to).collect::<Vec<_>>());
    let mut recipients: Vec<String> = sent.iter().flat_map(|m| m.to.clone()).collect();
    recipients.sort();
    assert_eq!(recipients, ["bea@contoso.com", "otto@contoso.com"]);
    let items: i64 =
        sqlx::query_scalar("select count(*) from notifications.items").fetch_one(&sys.app.db.pool).await.unwrap();
    assert_eq!(items, 3, "each new member announced once");
    sys.stop().await;
}

#[tokio::test]
async fn a_weekend_import_is_delivered_on_the_next_working_day_at_nine_local() {
    let sys = System::start().await;
    let scim = sys.app.scim();
    notifying_company(&sys).await;
    let rina = manager(&scim, "rina", "Asia/Jerusalem", "he-IL").await;
    let bea = manager(&scim, "bea", "America/New_York", "en-US").await;

    // Friday in Jerusalem is weekend (Fri–Sat): Sunday 09:00 local, 07:00 UTC in winter.
    sys.set_clock(at("2026-12-04T08:00:00Z"));
    let ann = report(&scim, "ann", &rina).await;
    let list = notifications(&sys, "Rina's digest", |l| l.len() == 1).await;
    assert_eq!(at(list[0]["scheduled_for"].as_str().unwrap()), at("2026-12-06T07:00:00Z"));
    // Saturday in New York: Monday 09:00 local, 14:00 UTC.
    sys.set_clock(at("2026-12-05T15:00:00Z"));
    let bob = report(&scim, "bob", &bea).await;
    let list = notifications(&sys, "Bea's digest", |l| l.len() == 2).await;
    let bea_digest = list.iter().find(|n| n["recipient"]["email"] == "bea@contoso.com").unwrap();
    assert_eq!(at(bea_digest["scheduled_for"].as_str().unwrap()), at("2026-12-07T14:00:00Z"));

    recorded(&sys, &[&ann, &bob]).await;
    sys.set_clock(at("2026-12-06T07:00:00Z"));
    let sent = mails(&sys, 1).await;
    assert_eq!(sent[0].to, vec!["rina@contoso.com"], "Sunday is a working day in Israel");
    sys.set_clock(at("2026-12-07T13:59:00Z"));
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    assert_eq!(sys.sink.messages().len(), 1, "not before 09:00 on Monday in New York");
    sys.set_clock(at("2026-12-07T14:00:00Z"));
    let sent = mails(&sys, 2).await;
    assert_eq!(sent[1].to, vec!["bea@contoso.com"]);
    sys.stop().await;
}

/// A notifying company on a Wednesday (10:00 in New York), Bea in New York with Ann, new and
/// recorded, reporting to her: one digest scheduled, not yet due.
async fn one_recorded_report_scheduled() -> (System, DateTime<Utc>) {
    let sys = System::start().await;
    let scim = sys.app.scim();
    notifying_company(&sys).await;
    let wednesday = at("2026-12-02T15:00:00Z");
    sys.set_clock(wednesday);
    let boss = manager(&scim, "bea", "America/New_York", "en-US").await;
    let ann = report(&scim, "ann", &boss).await;
    notifications(&sys, "scheduled", |l| l.len() == 1).await;
    recorded(&sys, &[&ann]).await;
    (sys, wednesday)
}

#[tokio::test]
async fn smtp_failures_are_retried_then_failed_with_the_reason_and_an_operator_retries() {
    let (sys, wednesday) = one_recorded_report_scheduled().await;
    sys.sink.refuse_next(10);

    sys.set_clock(wednesday + Duration::minutes(11));
    let list =
        notifications(&sys, "a retry scheduled", |l| l[0]["attempts"] == 1 && l[0]["state"] == "scheduled").await;
    assert!(list[0]["reason"].as_str().unwrap().contains("451"), "{}", list[0]);
    assert_eq!(at(list[0]["scheduled_for"].as_str().unwrap()), wednesday + Duration::minutes(12), "backoff");
    sys.set_clock(wednesday + Duration::minutes(13));
    let list = notifications(&sys, "failed after the limit", |l| l[0]["state"] == "failed").await;
    assert!(list[0]["reason"].as_str().unwrap().contains("after 2 attempt(s)"), "{}", list[0]);
    assert!(sys.sink.messages().is_empty());

    sys.sink.refuse_next(0);
    let id = list[0]["id"].as_str().unwrap();
    let (status, retried) = sys.admin_send(Method::POST, &format!("/notifications/{id}/retry"), json!({})).await;
    // The dispatcher may already have claimed it again by the time the answer is read.
    assert_eq!(status, 200, "{retried}");
    assert!(["scheduled", "sending", "sent"].contains(&retried["state"].as_str().unwrap()), "{retried}");
    mails(&sys, 1).await;
    notifications(&sys, "sent after the retry", |l| l[0]["state"] == "sent").await;
    let (status, problem) = sys.admin_send(Method::POST, &format!("/notifications/{id}/retry"), json!({})).await;
    assert_eq!((status, problem["type"].as_str()), (409, Some("https://muster.example/problems/not-retryable")));
    sys.stop().await;
}

#[tokio::test]
async fn a_send_interrupted_by_a_crash_is_failed_not_sent_again() {
    let (sys, wednesday) = one_recorded_report_scheduled().await;
    // A sender claimed it and died before recording what the relay answered.
    sqlx::query("update notifications.notifications set state = 'sending', attempts = 1, claimed_at = $1")
        .bind(wednesday)
        .execute(&sys.app.db.pool)
        .await
        .unwrap();
    sys.set_clock(wednesday + Duration::minutes(4));
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(sys.admin_get("/notifications").await["notifications"][0]["state"], "sending", "within the lease");
    sys.set_clock(wednesday + Duration::minutes(6));
    let list = notifications(&sys, "failed after the lease", |l| l[0]["state"] == "failed").await;
    assert!(list[0]["reason"].as_str().unwrap().contains("may have been delivered"), "{}", list[0]);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(sys.sink.messages().is_empty(), "at most once: not sent again by itself");
    sys.stop().await;
}

#[tokio::test]
async fn a_manager_whose_team_is_not_recorded_gets_no_email() {
    let sys = System::start().await;
    let scim = sys.app.scim();
    // The company notifies, but nobody records anything (the default assignment gives nothing).
    let (status, _) = sys.admin_send(Method::PUT, "/settings", json!({"notify_managers_on_import": true})).await;
    assert_eq!(status, 200);
    let wednesday = at("2026-12-02T15:00:00Z");
    sys.set_clock(wednesday);
    let boss = manager(&scim, "bea", "America/New_York", "en-US").await;
    let ann = report(&scim, "ann", &boss).await;
    notifications(&sys, "scheduled", |l| l.len() == 1).await;
    assignment_applied(&sys, &ann).await;
    sys.set_clock(wednesday + Duration::minutes(11));
    let list = notifications(&sys, "skipped", |l| l[0]["state"] == "skipped").await;
    assert!(list[0]["reason"].as_str().unwrap().contains("not recorded"), "{}", list[0]);
    assert!(sys.sink.messages().is_empty());
    sys.stop().await;
}

async fn assignment_applied(sys: &System, member: &str) {
    eventually(WAIT, &format!("{member}'s assignment applied"), || async {
        let view = sys.admin_try_get(&format!("/members/{member}")).await?;
        (!view["assignment"].is_null()).then_some(())
    })
    .await;
}
