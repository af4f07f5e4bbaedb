//! Committed request/response sequences (Microsoft's Entra ID SCIM tutorial, RFC 7644's
//! examples) driven through the HTTP API. `{{name}}` is replaced by a value captured from an
//! earlier response; `{{any}}` in an expectation matches any non-null value; an expected body
//! is a subset of the actual one unless the step says `"exact": true`.

use std::collections::HashMap;

use muster_testkit::TestApp;
use reqwest::Method;
use serde_json::Value;

fn substitute(text: &str, vars: &HashMap<String, String>) -> String {
    let mut out = text.to_string();
    for (k, v) in vars {
        out = out.replace(&format!("{{{{{k}}}}}"), v);
    }
    out
}

fn substitute_json(value: &Value, vars: &HashMap<String, String>) -> Value {
    match value {
        Value::String(s) => Value::String(substitute(s, vars)),
        Value::Array(items) => Value::Array(items.iter().map(|v| substitute_json(v, vars)).collect()),
        Value::Object(map) => {
            Value::Object(map.iter().map(|(k, v)| (substitute(k, vars), substitute_json(v, vars))).collect())
        }
        other => other.clone(),
    }
}

fn assert_subset(expected: &Value, actual: &Value, at: &str, step: &str) {
    match (expected, actual) {
        (Value::String(s), a) if s == "{{any}}" => assert!(!a.is_null(), "{step}: {at} is missing"),
        (Value::Object(e), Value::Object(a)) => {
            for (k, v) in e {
                let got = a.get(k).unwrap_or(&Value::Null);
                assert_subset(v, got, &format!("{at}/{k}"), step);
            }
        }
        (Value::Array(e), Value::Array(a)) => {
            assert_eq!(e.len(), a.len(), "{step}: {at} has {} values, expected {}: {actual}", a.len(), e.len());
            for (i, (ev, av)) in e.iter().zip(a).enumerate() {
                assert_subset(ev, av, &format!("{at}/{i}"), step);
            }
        }
        (e, a) => assert_eq!(e, a, "{step}: {at}"),
    }
}

async fn run_fixture(file: &str) {
    let path = format!("{}/tests/fixtures/{file}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let fixture: Value = serde_json::from_str(&text).unwrap();
    let app = TestApp::spawn().await;
    let scim = app.scim();
    let mut vars: HashMap<String, String> = HashMap::new();
    let steps = fixture["steps"].as_array().unwrap();
    assert!(steps.len() > 10, "{file} has its steps");
    for step in steps {
        let name = step["name"].as_str().unwrap();
        let method = Method::from_bytes(step["method"].as_str().unwrap().as_bytes()).unwrap();
        let path = substitute(step["path"].as_str().unwrap(), &vars);
        let body = step.get("body").map(|b| substitute_json(b, &vars));
        let headers: Vec<(String, String)> = step
            .get("headers")
            .and_then(Value::as_object)
            .map(|h| h.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string())).collect())
            .unwrap_or_default();
        let header_refs: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let resp = scim.send(method, &path, body.as_ref(), &header_refs).await;
        let expect = &step["expect"];
        assert_eq!(resp.status, expect["status"].as_u64().unwrap() as u16, "{name}: {}", resp.text);
        if resp.status != 204 && !resp.text.is_empty() {
            assert_eq!(resp.header("content-type"), Some("application/scim+json"), "{name}");
        }
        if let Some(expected_headers) = expect.get("headers").and_then(Value::as_object) {
            for (k, v) in expected_headers {
                assert_eq!(resp.header(k), v.as_str(), "{name}: header {k}");
            }
        }
        if let Some(expected) = expect.get("body") {
            let expected = substitute_json(expected, &vars);
            if expect.get("exact") == Some(&Value::Bool(true)) {
                assert_eq!(expected, resp.body, "{name}");
            } else {
                assert_subset(&expected, &resp.body, "", name);
            }
        }
        for absent in expect.get("absent").and_then(Value::as_array).into_iter().flatten() {
            assert!(
                resp.body.get(absent.as_str().unwrap()).is_none(),
                "{name}: {absent} should be absent: {}",
                resp.text
            );
        }
        if let Some(captures) = step.get("capture").and_then(Value::as_object) {
            for (var, pointer) in captures {
                let value = resp.body.pointer(pointer.as_str().unwrap()).and_then(Value::as_str).unwrap();
                vars.insert(var.clone(), value.to_string());
            }
        }
    }
}

#[tokio::test]
async fn microsoft_entra_tutorial_sequence_passes() {
    run_fixture("entra_tutorial.json").await;
}

#[tokio::test]
async fn rfc_7644_examples_pass() {
    run_fixture("rfc7644_examples.json").await;
}
