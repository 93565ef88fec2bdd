//! `GET /`: the terminal-like logs page. Three static files compiled into the
//! binary (no build step, nothing fetched from elsewhere), served with a
//! Content-Security-Policy that allows only this origin's script and style:
//! even if a name ever reached the DOM as HTML, an injected `<script>` would
//! not run.

use actix_web::HttpResponse;
use actix_web::http::header::{CACHE_CONTROL, CONTENT_SECURITY_POLICY, REFERRER_POLICY, X_CONTENT_TYPE_OPTIONS};

const HTML: &str = include_str!("page.html");
const JS: &str = include_str!("page.js");
const CSS: &str = include_str!("page.css");

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
                   img-src 'self' data:; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

pub async fn html() -> HttpResponse {
    asset(HTML, "text/html; charset=utf-8")
}

pub async fn js() -> HttpResponse {
    asset(JS, "text/javascript; charset=utf-8")
}

pub async fn css() -> HttpResponse {
    asset(CSS, "text/css; charset=utf-8")
}

fn asset(body: &'static str, content_type: &str) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(content_type)
        .insert_header((CONTENT_SECURITY_POLICY, CSP))
        .insert_header((X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((REFERRER_POLICY, "no-referrer"))
        // The files change only with the binary; revalidating is cheap.
        .insert_header((CACHE_CONTROL, "no-cache"))
        .body(body)
}
