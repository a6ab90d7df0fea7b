//! A small client for a node's admin HTTP API: one HTTP/1.1 request per connection with
//! hyper's connection-level client (hyper is in the tree already through axum; a pooled client
//! would add nothing for a CLI making a handful of requests), every request under a deadline
//! and every response body under a size cap.
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::{Method, Request, StatusCode, header};
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use tern_node::admin::http::ErrorBody;
use tokio::net::TcpStream;

/// Largest response accepted: a `/v1/status` of 16384 partitions is a few MiB.
const RESPONSE_BYTES_MAX: usize = 64 * 1024 * 1024;

/// A response: status and body.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: StatusCode,
    pub body: Bytes,
}

#[derive(Debug, Clone)]
pub struct AdminClient {
    addr: String,
    timeout: Duration,
}

impl AdminClient {
    /// `addr` is `host:port` (resolved on each request).
    pub fn new(addr: impl Into<String>, timeout: Duration) -> Self {
        Self {
            addr: addr.into(),
            timeout,
        }
    }

    /// The `host:port` requests go to.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// One request without a body; any HTTP status is a reply, only transport failures are
    /// errors.
    pub async fn request(&self, method: Method, path: &str) -> anyhow::Result<Reply> {
        self.request_with_body(method, path, None).await
    }

    /// [`request`](Self::request) with an optional body, sent as `application/json`.
    pub async fn request_with_body(
        &self,
        method: Method,
        path: &str,
        json: Option<Bytes>,
    ) -> anyhow::Result<Reply> {
        let what = format!("{method} http://{}{path}", self.addr);
        tokio::time::timeout(self.timeout, self.exchange(method, path, json))
            .await
            .with_context(|| format!("{what}: no answer within {:?}", self.timeout))?
            .with_context(|| what)
    }

    async fn exchange(
        &self,
        method: Method,
        path: &str,
        json: Option<Bytes>,
    ) -> anyhow::Result<Reply> {
        let stream = TcpStream::connect(&self.addr).await.context("connecting")?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .context("starting HTTP")?;
        // Drives the connection; it ends when the response is read and `sender` is dropped.
        let driver = tokio::spawn(connection);
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, &self.addr);
        if json.is_some() {
            request = request.header(header::CONTENT_TYPE, "application/json");
        }
        let request = request
            .body(Full::new(json.unwrap_or_default()))
            .context("building the request")?;
        let response = sender
            .send_request(request)
            .await
            .context("sending the request")?;
        let status = response.status();
        let body = Limited::new(response.into_body(), RESPONSE_BYTES_MAX)
            .collect()
            .await
            .map_err(|err| anyhow::anyhow!("reading the response body: {err}"))?
            .to_bytes();
        drop(sender);
        driver.abort();
        Ok(Reply { status, body })
    }

    /// GET a JSON document; a non-2xx status is an error carrying the server's message.
    pub async fn get_json<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        let reply = self.request(Method::GET, path).await?;
        if !reply.status.is_success() {
            bail!(
                "GET http://{}{path}: {}",
                self.addr,
                describe_failure(&reply)
            );
        }
        serde_json::from_slice(&reply.body)
            .with_context(|| format!("decoding the JSON of GET http://{}{path}", self.addr))
    }
}

/// `404 Not Found: unknown node 7` from an [`ErrorBody`], else the status and the raw body.
pub fn describe_failure(reply: &Reply) -> String {
    let status = reply.status;
    match serde_json::from_slice::<ErrorBody>(&reply.body) {
        Ok(body) => format!("{status}: {}", body.error),
        Err(_) => {
            let text = String::from_utf8_lossy(&reply.body);
            let text = text.trim();
            if text.is_empty() {
                status.to_string()
            } else {
                format!("{status}: {text}")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_show_the_status_and_the_servers_message() {
        let cases: &[(u16, &str, &str)] = &[
            (
                404,
                r#"{"code":"unknown_node","error":"unknown node 7"}"#,
                "404 Not Found: unknown node 7",
            ),
            (503, "", "503 Service Unavailable"),
            (500, "boom\n", "500 Internal Server Error: boom"),
        ];
        for (code, body, want) in cases {
            let reply = Reply {
                status: StatusCode::from_u16(*code).expect("valid code"),
                body: Bytes::from(body.to_string()),
            };
            assert_eq!(describe_failure(&reply), *want);
        }
    }

    #[tokio::test]
    async fn a_refused_connection_is_an_error_naming_the_url() {
        // Bind then drop, so the port is (almost certainly) closed.
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("binding a probe port");
        let client = AdminClient::new(addr.to_string(), Duration::from_secs(5));
        let err = client
            .get_json::<serde_json::Value>("/v1/status")
            .await
            .expect_err("nothing listens");
        let text = format!("{err:#}");
        assert!(
            text.contains(&format!("GET http://{addr}/v1/status")),
            "{text}"
        );
    }
}
