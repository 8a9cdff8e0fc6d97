//! An EST client made of curl (RFC 7030 over HTTPS): what a device without Lanyard's
//! agent, or an auditor, would use. Requests go out as curl command lines; answers come
//! back as status, content type and body.

use crate::ca::Server;
use crate::cmd::{Out, run};
use std::path::{Path, PathBuf};

/// One HTTP answer as curl saw it.
#[derive(Debug)]
pub struct Resp {
    /// HTTP status; 0 when no HTTP answer came (TLS refused, connection reset).
    pub status: u16,
    pub content_type: String,
    /// "1.1" or "2".
    pub http_version: String,
    pub body: Vec<u8>,
    /// The curl run itself, for messages.
    pub curl: Out,
}

impl Resp {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// Panics unless the status is `want`.
    #[track_caller]
    pub fn expect(self, want: u16) -> Self {
        assert_eq!(self.status, want, "expected HTTP {want}:\n{self}");
        self
    }
}

impl std::fmt::Display for Resp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "HTTP {} ({})", self.status, self.content_type)?;
        writeln!(f, "--- body\n{}", self.text().trim_end())?;
        write!(f, "--- curl\n{}", self.curl)
    }
}

/// A request, built field by field.
#[derive(Debug, Clone, Default)]
pub struct Request {
    pub url: String,
    pub cacert: Option<PathBuf>,
    pub basic: Option<(String, String)>,
    pub content_type: Option<String>,
    /// POST this file's bytes; GET when `None`.
    pub body_file: Option<PathBuf>,
    /// TLS client certificate and key (PEM).
    pub client: Option<(PathBuf, PathBuf)>,
    pub http2: bool,
}

impl Request {
    pub fn get(url: impl Into<String>) -> Self {
        Request { url: url.into(), ..Default::default() }
    }

    pub fn post(url: impl Into<String>, content_type: &str, body_file: &Path) -> Self {
        Request {
            url: url.into(),
            content_type: Some(content_type.into()),
            body_file: Some(body_file.into()),
            ..Default::default()
        }
    }

    pub fn cacert(mut self, p: &Path) -> Self {
        self.cacert = Some(p.into());
        self
    }

    pub fn basic(mut self, user: &str, password: &str) -> Self {
        self.basic = Some((user.into(), password.into()));
        self
    }

    pub fn client(mut self, cert: &Path, key: &Path) -> Self {
        self.client = Some((cert.into(), key.into()));
        self
    }

    pub fn http2(mut self) -> Self {
        self.http2 = true;
        self
    }

    /// Runs curl. Never panics on an HTTP or TLS failure: see [`Resp::status`].
    pub fn send(&self) -> Resp {
        let out_dir = tempfile::tempdir().expect("tempdir");
        let body_out = out_dir.path().join("body");
        let mut args: Vec<String> = vec![
            "-sS".into(),
            "--max-time".into(),
            "30".into(),
            "-o".into(),
            body_out.display().to_string(),
            "-w".into(),
            "%{http_code} %{http_version} %{content_type}".into(),
        ];
        if let Some(c) = &self.cacert {
            args.extend(["--cacert".into(), c.display().to_string()]);
        }
        if let Some((u, p)) = &self.basic {
            args.extend(["-u".into(), format!("{u}:{p}")]);
        }
        if let Some(ct) = &self.content_type {
            args.extend(["-H".into(), format!("Content-Type: {ct}")]);
        }
        if let Some(b) = &self.body_file {
            // No `Expect: 100-continue`: a refusal must come as the final answer.
            args.extend(["-H".into(), "Expect:".into()]);
            args.extend(["--data-binary".into(), format!("@{}", b.display())]);
        }
        if let Some((c, k)) = &self.client {
            args.extend(["--cert".into(), c.display().to_string()]);
            args.extend(["--key".into(), k.display().to_string()]);
        }
        if self.http2 {
            args.push("--http2".into());
        }
        args.push(self.url.clone());
        let curl = run("curl", &args);
        let mut w = curl.stdout.splitn(3, ' ');
        let status = w.next().and_then(|s| s.trim().parse().ok()).unwrap_or(0);
        let http_version = w.next().unwrap_or("").to_owned();
        let content_type = w.next().unwrap_or("").trim().to_owned();
        let body = std::fs::read(&body_out).unwrap_or_default();
        Resp { status, content_type, http_version, body, curl }
    }
}

/// `POST /.well-known/est/simpleenroll` with HTTP Basic `identity:token`.
pub fn enroll(server: &Server, identity: &str, token: &str, csr_b64: &Path) -> Resp {
    Request::post(server.url("/.well-known/est/simpleenroll"), "application/pkcs10", csr_b64)
        .cacert(&server.cacert)
        .basic(identity, token)
        .send()
}

/// `POST /.well-known/est/simplereenroll` authenticated by a TLS client certificate.
pub fn reenroll(server: &Server, cert: &Path, key: &Path, csr_b64: &Path) -> Resp {
    Request::post(server.url("/.well-known/est/simplereenroll"), "application/pkcs10", csr_b64)
        .cacert(&server.cacert)
        .client(cert, key)
        .send()
}

/// `GET https://.../PATH`, trusting the CA's root.
pub fn get(server: &Server, path: &str) -> Resp {
    Request::get(server.url(path)).cacert(&server.cacert).send()
}
