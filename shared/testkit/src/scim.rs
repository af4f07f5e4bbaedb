//! A small typed SCIM client for tests.

use reqwest::Method;
use reqwest::header::HeaderMap;
use serde_json::Value;

/// A response: status, headers and the body as JSON (`Null` when empty or not JSON).
#[derive(Debug, Clone)]
pub struct Resp {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Value,
    pub text: String,
}

impl Resp {
    /// A header's value as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// A SCIM client bound to a base URL and a bearer token.
#[derive(Clone)]
pub struct Scim {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Scim {
    /// A client for `base` (ending in `/scim/v2`) presenting `token`.
    pub fn new(http: reqwest::Client, base: String, token: &str) -> Scim {
        Scim { http, base, token: token.to_string() }
    }

    /// Sends a request with optional JSON body and extra headers.
    pub async fn send(&self, method: Method, path: &str, body: Option<&Value>, headers: &[(&str, &str)]) -> Resp {
        let bytes = body.map(|b| b.to_string().into_bytes());
        self.send_raw(method, path, bytes, headers).await
    }

    /// Sends raw bytes as the body (for malformed-input tests).
    pub async fn send_raw(&self, method: Method, path: &str, body: Option<Vec<u8>>, headers: &[(&str, &str)]) -> Resp {
        let mut req = self.http.request(method, format!("{}{path}", self.base)).bearer_auth(&self.token);
        if let Some(b) = body {
            if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("content-type")) {
                req = req.header("content-type", "application/scim+json");
            }
            req = req.body(b);
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let response = match req.send().await {
            Ok(r) => r,
            Err(e) => panic!("{path}: {e}"),
        };
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response.text().await.unwrap_or_default();
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Resp { status, headers, body, text }
    }

    pub async fn get(&self, path: &str) -> Resp {
        self.send(Method::GET, path, None, &[]).await
    }
    pub async fn post(&self, path: &str, body: &Value) -> Resp {
        self.send(Method::POST, path, Some(body), &[]).await
    }
    pub async fn put(&self, path: &str, body: &Value) -> Resp {
        self.send(Method::PUT, path, Some(body), &[]).await
    }
    pub async fn patch(&self, path: &str, body: &Value) -> Resp {
        self.send(Method::PATCH, path, Some(body), &[]).await
    }
    pub async fn delete(&self, path: &str) -> Resp {
        self.send(Method::DELETE, path, None, &[]).await
    }

    /// `GET /Users?filter=…` with the filter URL-encoded.
    pub async fn list(&self, resource: &str, filter: &str) -> Resp {
        let encoded: String = form_urlencoded::byte_serialize(filter.as_bytes()).collect();
        self.get(&format!("/{resource}?filter={encoded}")).await
    }

    /// Creates a minimal user and returns its id.
    pub async fn create_user(&self, user_name: &str) -> String {
        let resp = self.post("/Users", &crate::scim::user_body(user_name)).await;
        assert_eq!(resp.status, 201, "creating {user_name}: {}", resp.text);
        resp.body["id"].as_str().unwrap_or_default().to_string()
    }

    /// Creates `count` users named `<prefix><n>@contoso.com`, one after another, and returns
    /// their ids in that order.
    pub async fn create_users(&self, prefix: &str, count: usize) -> Vec<String> {
        let mut ids = Vec::with_capacity(count);
        for n in 0..count {
            ids.push(self.create_user(&format!("{prefix}{n}@contoso.com")).await);
        }
        ids
    }

    /// Creates an empty group and returns its id.
    pub async fn create_group(&self, name: &str) -> String {
        let resp = self
            .post(
                "/Groups",
                &serde_json::json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"], "displayName": name}),
            )
            .await;
        assert_eq!(resp.status, 201, "creating group {name}: {}", resp.text);
        resp.body["id"].as_str().unwrap_or_default().to_string()
    }
}

/// An Entra-shaped user body.
pub fn user_body(user_name: &str) -> Value {
    let local = user_name.split('@').next().unwrap_or(user_name);
    serde_json::json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User", "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"],
        "userName": user_name,
        "active": true,
        "displayName": local,
        "name": {"givenName": local, "familyName": "Tester"},
        "emails": [{"primary": true, "type": "work", "value": user_name}],
    })
}

/// A PatchOp body.
pub fn patch_body(operations: Value) -> Value {
    serde_json::json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "Operations": operations})
}
