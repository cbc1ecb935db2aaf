//! GraphiQL, the in-browser IDE served to browsers on `GET /graphql`.
//!
//! The page is static HTML that loads three scripts and a stylesheet from an asset base URL
//! (`--graphiql-assets-url`, the public CDN by default, or a company's own mirror where
//! browsers cannot reach the internet). What it loads is pinned:
//!
//! - Exact versions, never a range, so the bytes behind a URL never change; each tag carries
//!   a Subresource Integrity hash (sha384 of the exact file), so a tampered CDN or mirror
//!   file is refused by the browser instead of run with the viewer's token in reach.
//!   `tests/graphiql.rs` recomputes the hashes from the npm packages of the same versions.
//! - Production React builds (the development builds are ~10× larger and slower).
//! - GraphiQL 4.1.2 with React 18.3.1: GraphiQL 4 is the last line that ships a standalone
//!   UMD build (`graphiql.min.js`, with graphql-ws bundled for subscriptions) usable from
//!   plain `<script>` tags; GraphiQL 5 is ESM-only and loads Monaco's web workers from
//!   esm.sh at run time, which neither an offline mirror nor a strict CSP can serve.
//!   React 18.3.1 is the last React with UMD builds (React 19 has none).
//!
//! A Content-Security-Policy allows exactly that: the four asset URLs, the inline bootstrap
//! script and style by a per-response nonce, data: fonts and images (GraphiQL's stylesheet
//! inlines them), and fetches to this origin (plus `ws:`/`wss:` to it, for subscriptions over
//! `/graphql/ws`). A nonce rather than a hash because GraphiQL's dialogs inject a `<style>`
//! element at run time; the bundle tags it with `window.__webpack_nonce__`, which the
//! bootstrap sets. Nothing else may load, frame the page, or be the target of a form.

use std::str::FromStr as _;

use argon2::password_hash::rand_core::{OsRng, RngCore as _};
use axum::http::uri::Authority;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{Html, IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

/// A file the page loads, as published in an npm package.
#[derive(Debug, Clone, Copy)]
pub struct Asset {
    pub package: &'static str,
    pub version: &'static str,
    /// Path inside the package.
    pub file: &'static str,
    /// Subresource Integrity value: `sha384-` and the base64 digest of the exact file.
    pub integrity: &'static str,
}

impl Asset {
    /// `<base>/<package>@<version>/<file>`.
    pub fn url(&self, base: &str) -> String {
        format!("{base}/{}@{}/{}", self.package, self.version, self.file)
    }
}

const REACT: Asset = Asset {
    package: "react",
    version: "18.3.1",
    file: "umd/react.production.min.js",
    integrity: "sha384-DGyLxAyjq0f9SPpVevD6IgztCFlnMF6oW/XQGmfe+IsZ8TqEiDrcHkMLKI6fiB/Z",
};
const REACT_DOM: Asset = Asset {
    package: "react-dom",
    version: "18.3.1",
    file: "umd/react-dom.production.min.js",
    integrity: "sha384-gTGxhz21lVGYNMcdJOyq01Edg0jhn/c22nsx0kyqP0TxaV5WVdsSH1fSDUf5YJj1",
};
const GRAPHIQL_JS: Asset = Asset {
    package: "graphiql",
    version: "4.1.2",
    file: "graphiql.min.js",
    integrity: "sha384-9XdHu7ajgGJziD4J1zNBKQ842Q/+zZfDv+ib1eMhZWBH6hPAs806x+Jbcf0yNO6B",
};
const GRAPHIQL_CSS: Asset = Asset {
    package: "graphiql",
    version: "4.1.2",
    file: "graphiql.min.css",
    integrity: "sha384-1el1QShFBnnXTx9x/Cprg82hZWKt0ry29OAYIXt05swbi0KcZDFoj0CWguMpopJr",
};

/// Every file the page loads: the stylesheet, then the scripts in load order.
pub const ASSETS: [Asset; 4] = [GRAPHIQL_CSS, REACT, REACT_DOM, GRAPHIQL_JS];

/// What the query editor shows on a first visit: how to get a token and use it.
const DEFAULT_QUERY: &str = r#"# Welcome to Stepwise.
#
# 1. Sign up (or log in): put the cursor in SignUp,
#    press Ctrl-Enter, and copy the `token` returned.
# 2. Paste it in the Headers pane below:
#      {"Authorization": "Bearer <token>"}
# 3. Run `Me` to see who you are. Subscriptions
#    (runUpdated, ...) use the same header.

mutation SignUp {
  signup(
    companyName: "Acme"
    name: "Ada"
    email: "ada@acme.example"
    password: "correct horse"
  ) {
    token
    user { id email role }
    company { name inviteToken }
  }
}

mutation LogIn {
  login(email: "ada@acme.example", password: "correct horse") {
    token
    expiresAt
  }
}

query Me {
  me { name email role company { name } }
}
"#;

/// The headers pane on a first visit: where the token goes.
const DEFAULT_HEADERS: &str = r#"{"Authorization": "Bearer <token>"}"#;

/// Placeholder the nonce replaces in the prepared page and policy.
const NONCE: &str = "{{nonce}}";

/// The prepared page and its policy; one per server, cheap to clone.
#[derive(Debug, Clone)]
pub struct GraphiQL {
    page: String,
    /// The policy without its `connect-src` (which names the host the page was asked from).
    policy: String,
}

impl GraphiQL {
    /// Prepares the page for assets under `assets_url` (`http(s)://host[:port][/path]`).
    pub fn new(assets_url: &str, endpoint: &str, ws_endpoint: &str) -> anyhow::Result<Self> {
        let base = assets_base(assets_url)?;
        let tags: String = ASSETS
            .iter()
            .map(|asset| {
                let url = asset.url(&base);
                if asset.file.ends_with(".css") {
                    format!(
                        r#"    <link rel="stylesheet" href="{url}" integrity="{}" crossorigin="anonymous">
"#,
                        asset.integrity
                    )
                } else {
                    format!(
                        r#"    <script src="{url}" integrity="{}" crossorigin="anonymous"></script>
"#,
                        asset.integrity
                    )
                }
            })
            .collect();
        let config = serde_json::json!({
            "endpoint": endpoint,
            "wsEndpoint": ws_endpoint,
            "defaultQuery": DEFAULT_QUERY,
            "defaultHeaders": DEFAULT_HEADERS,
        });
        // `<` escaped so no string in the configuration can close the script element.
        let config = config.to_string().replace('<', "\\u003c");
        let page = format!(
            r#"<!DOCTYPE html>
<html lang="en">
  <head>
    <meta charset="utf-8">
    <meta name="robots" content="noindex">
    <meta name="viewport" content="width=device-width, initial-scale=1">
    <meta name="referrer" content="no-referrer">
    <title>Stepwise GraphiQL</title>
    <link rel="icon" href="data:,">
    <style nonce="{NONCE}">
      body {{ height: 100%; margin: 0; width: 100%; overflow: hidden; }}
      #graphiql {{ height: 100vh; }}
    </style>
{tags}  </head>
  <body>
    <div id="graphiql">Loading GraphiQL…</div>
    <script nonce="{NONCE}">
      window.__webpack_nonce__ = document.currentScript.nonce;
      const config = {config};
      const url = (path, ws) => {{
        const u = new URL(path, window.location.href);
        if (ws) u.protocol = u.protocol === "https:" ? "wss:" : "ws:";
        return u.toString();
      }};
      ReactDOM.createRoot(document.getElementById("graphiql")).render(
        React.createElement(GraphiQL, {{
          fetcher: GraphiQL.createFetcher({{
            url: url(config.endpoint, false),
            subscriptionUrl: url(config.wsEndpoint, true),
          }}),
          defaultQuery: config.defaultQuery,
          defaultHeaders: config.defaultHeaders,
          defaultEditorToolsVisibility: "headers",
        }})
      );
    </script>
  </body>
</html>
"#
        );
        let scripts: Vec<String> = ASSETS
            .iter()
            .filter(|a| a.file.ends_with(".js"))
            .map(|a| a.url(&base))
            .collect();
        let styles: Vec<String> = ASSETS
            .iter()
            .filter(|a| a.file.ends_with(".css"))
            .map(|a| a.url(&base))
            .collect();
        let policy = format!(
            "default-src 'none'; script-src 'nonce-{NONCE}' {}; style-src 'nonce-{NONCE}' {}; \
             img-src data:; font-src data:; base-uri 'none'; form-action 'none'; \
             frame-ancestors 'none'",
            scripts.join(" "),
            styles.join(" ")
        );
        Ok(Self { page, policy })
    }

    /// The page for one request: a fresh nonce, and `connect-src` naming the host the
    /// browser asked for (so `ws:`/`wss:` work where `'self'` does not cover them).
    pub fn response(&self, request_headers: &HeaderMap) -> Response {
        let mut bytes = [0u8; 18];
        OsRng.fill_bytes(&mut bytes);
        let nonce = STANDARD.encode(bytes);
        let connect = match request_headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .and_then(|h| Authority::from_str(h).ok())
            .filter(|a| {
                a.as_str()
                    .chars()
                    .all(|c| c.is_ascii_graphic() && !";,@'\"".contains(c))
            }) {
            Some(host) => format!("connect-src 'self' ws://{host} wss://{host}"),
            None => "connect-src 'self'".to_owned(),
        };
        let policy = format!("{}; {connect}", self.policy.replace(NONCE, &nonce));
        let page = self.page.replace(NONCE, &nonce);
        let mut response = Html(page).into_response();
        let headers = response.headers_mut();
        if let Ok(value) = HeaderValue::from_str(&policy) {
            headers.insert(header::CONTENT_SECURITY_POLICY, value);
        }
        // Each response has its own nonce; a cached copy would be refused by its own policy.
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        headers.insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
        response
    }
}

/// The asset base URL without a trailing slash. Only absolute `http(s)` URLs: the policy
/// names every asset by its full URL, and one with a quote, space, `;` or `,` in it could
/// break out of the policy or the HTML attribute.
fn assets_base(raw: &str) -> anyhow::Result<String> {
    let base = raw.trim().trim_end_matches('/');
    let rest = base
        .strip_prefix("https://")
        .or_else(|| base.strip_prefix("http://"));
    let valid = rest.is_some_and(|rest| {
        let host = rest.split('/').next().unwrap_or_default();
        !host.is_empty()
            && Authority::from_str(host).is_ok()
            && !host.contains('@')
            && rest
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-._~/:%+@[]".contains(c))
    });
    if !valid {
        anyhow::bail!(
            "--graphiql-assets-url {raw:?} is not an http(s) URL like https://unpkg.com or \
             https://mirror.example.com/npm (no query, fragment, quotes, spaces, `;` or `,`)"
        );
    }
    Ok(base.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn asset_urls_follow_the_cdn_layout() {
        assert_eq!(
            GRAPHIQL_JS.url("https://unpkg.com"),
            "https://unpkg.com/graphiql@4.1.2/graphiql.min.js"
        );
        assert_eq!(
            assets_base("https://mirror.example.com/npm/")
                .ok()
                .as_deref(),
            Some("https://mirror.example.com/npm")
        );
        assert!(assets_base("http://127.0.0.1:8123").is_ok());
        assert!(assets_base("http://[::1]:8123/npm").is_ok());
    }

    #[test]
    fn asset_urls_that_could_break_the_page_or_policy_are_refused() {
        for bad in [
            "",
            "unpkg.com",
            "/assets",
            "javascript:alert(1)",
            "https://",
            "https://cdn.example.com/a b",
            "https://cdn.example.com/a;script-src *",
            "https://cdn.example.com/a,b",
            "https://cdn.example.com/\"><script>",
            "https://cdn.example.com/?v=1",
            "https://cdn.example.com/a&b",
            "https://cdn.example.com/a'b",
            "https://user:pw@cdn.example.com",
        ] {
            assert!(assets_base(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn each_response_has_its_own_nonce_in_page_and_policy() {
        let graphiql = GraphiQL::new(
            crate::config::DEFAULT_GRAPHIQL_ASSETS_URL,
            "/graphql",
            "/graphql/ws",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, HeaderValue::from_static("api.example.com"));
        let policy = |r: &Response| {
            r.headers()[header::CONTENT_SECURITY_POLICY]
                .to_str()
                .map(str::to_owned)
                .unwrap_or_default()
        };
        let (a, b) = (graphiql.response(&headers), graphiql.response(&headers));
        assert_ne!(policy(&a), policy(&b));
        assert!(!policy(&a).contains(NONCE));
        assert!(policy(&a).contains("wss://api.example.com"));
        assert!(policy(&a).contains("https://unpkg.com/react@18.3.1/umd/react.production.min.js"));
        headers.insert(
            header::HOST,
            HeaderValue::from_static("evil.example; script-src *"),
        );
        assert!(policy(&graphiql.response(&headers)).ends_with("connect-src 'self'"));
    }
}
