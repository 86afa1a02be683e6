//! The plain HTTP requests and responses the operator's endpoints answer
//! ([`HttpApp`]: `/metrics`, the status page), and the small blocking
//! listener that serves an app on a thread of its own (`tiny_http`).
//! An app is written once against these types; the tokio binary serves
//! the same app with axum (a thin adapter in `tryst-tokio`).

use std::io::Read;
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;

/// Most bytes of a request body read (a login form or an end button's
/// form is a few hundred bytes); the rest is never read.
pub const MAX_BODY: usize = 16 * 1024;
/// Most request headers kept.
pub const MAX_HEADERS: usize = 64;

/// A request, as an app sees it.
#[derive(Debug, Clone, Default)]
pub struct HttpRequest {
    /// `GET`, `POST`, ...
    pub method: String,
    /// The path, without the query.
    pub path: String,
    /// The query string (after `?`), raw.
    pub query: String,
    /// The headers, names in lower case.
    pub headers: Vec<(String, String)>,
    /// The body, at most [`MAX_BODY`] bytes.
    pub body: Vec<u8>,
}

impl HttpRequest {
    /// The first header `name` (lower case), if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Splits `path?query`.
    pub fn set_target(&mut self, target: &str) {
        match target.split_once('?') {
            Some((path, query)) => {
                self.path = path.to_owned();
                self.query = query.to_owned();
            }
            None => {
                self.path = target.to_owned();
                self.query.clear();
            }
        }
    }
}

/// A response, as an app writes it.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    /// The status code.
    pub status: u16,
    /// Extra headers (content type, cookies, location).
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// A response with `status`, a content type and a body.
    pub fn new(status: u16, content_type: &str, body: impl Into<Vec<u8>>) -> HttpResponse {
        HttpResponse {
            status,
            headers: vec![("Content-Type".into(), content_type.into())],
            body: body.into(),
        }
    }

    /// A plain-text response.
    pub fn text(status: u16, body: impl Into<String>) -> HttpResponse {
        HttpResponse::new(status, "text/plain; charset=utf-8", body.into())
    }

    /// `303 See Other` to `location`.
    pub fn redirect(location: &str) -> HttpResponse {
        let mut r = HttpResponse::text(303, "");
        r.headers.push(("Location".into(), location.into()));
        r
    }

    /// Adds a header.
    pub fn with_header(mut self, name: &str, value: impl Into<String>) -> HttpResponse {
        self.headers.push((name.into(), value.into()));
        self
    }
}

/// What answers the operator's HTTP requests. It may block (it asks the
/// roles' loops), so an async server calls it off its reactor.
pub trait HttpApp: Send + Sync + 'static {
    /// The response to `request`.
    fn handle(&self, request: HttpRequest) -> HttpResponse;
}

impl<F> HttpApp for F
where
    F: Fn(HttpRequest) -> HttpResponse + Send + Sync + 'static,
{
    fn handle(&self, request: HttpRequest) -> HttpResponse {
        self(request)
    }
}

/// A running HTTP listener; dropping it stops it.
pub struct HttpListener {
    /// Where it listens.
    pub addr: SocketAddr,
    stop: Option<Box<dyn FnOnce() + Send>>,
}

impl std::fmt::Debug for HttpListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpListener")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl HttpListener {
    /// A listener on `addr` that `stop` shuts down (called once, on drop).
    pub fn new(addr: SocketAddr, stop: impl FnOnce() + Send + 'static) -> HttpListener {
        HttpListener {
            addr,
            stop: Some(Box::new(stop)),
        }
    }
}

impl Drop for HttpListener {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            stop();
        }
    }
}

/// Serves `app` on `addr` from one thread of its own (requests are
/// answered one at a time: an operator's scrape or page, not a load).
pub fn serve_blocking(addr: SocketAddr, app: Arc<dyn HttpApp>) -> std::io::Result<HttpListener> {
    let server = tiny_http::Server::http(addr).map_err(std::io::Error::other)?;
    let bound = server
        .server_addr()
        .to_ip()
        .ok_or_else(|| std::io::Error::other("not an IP listener"))?;
    let server = Arc::new(server);
    let thread: JoinHandle<()> = {
        let server = Arc::clone(&server);
        std::thread::Builder::new()
            .name("tryst-http".into())
            .spawn(move || {
                for request in server.incoming_requests() {
                    answer(&*app, request);
                }
            })?
    };
    Ok(HttpListener::new(bound, move || {
        server.unblock();
        let _ = thread.join();
    }))
}

/// Reads one request (bounded), lets `app` answer it, writes the answer.
fn answer(app: &dyn HttpApp, mut request: tiny_http::Request) {
    let mut plain = HttpRequest {
        method: request.method().as_str().to_ascii_uppercase(),
        ..HttpRequest::default()
    };
    plain.set_target(request.url());
    plain.headers = request
        .headers()
        .iter()
        .take(MAX_HEADERS)
        .map(|h| {
            (
                h.field.as_str().as_str().to_ascii_lowercase(),
                h.value.as_str().to_owned(),
            )
        })
        .collect();
    let mut body = Vec::new();
    if request
        .as_reader()
        .take(MAX_BODY as u64)
        .read_to_end(&mut body)
        .is_err()
    {
        let _ = request.respond(tiny_http::Response::empty(400));
        return;
    }
    plain.body = body;
    let response = app.handle(plain);
    let mut out = tiny_http::Response::from_data(response.body).with_status_code(response.status);
    for (name, value) in &response.headers {
        if let Ok(h) = tiny_http::Header::from_bytes(name.as_bytes(), value.as_bytes()) {
            out.add_header(h);
        }
    }
    let _ = request.respond(out);
}

/// Decodes `application/x-www-form-urlencoded` text (a form body or a
/// query) into its pairs; bad escapes are kept as they are.
pub fn form_pairs(text: &str) -> Vec<(String, String)> {
    text.split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (url_decode(k), url_decode(v))
        })
        .collect()
}

/// The first value of `key` in a form.
pub fn form_value<'a>(pairs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

fn url_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `text` escaped for HTML text and attribute values.
pub fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_decode_and_html_escapes() {
        let pairs = form_pairs("token=ab%20c+d&x=%zz&y=%4");
        assert_eq!(form_value(&pairs, "token"), Some("ab c d"));
        assert_eq!(form_value(&pairs, "x"), Some("%zz"));
        assert_eq!(form_value(&pairs, "y"), Some("%4"));
        assert_eq!(
            escape_html("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
    }
}
